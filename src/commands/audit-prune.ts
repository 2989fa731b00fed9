/** `mlxs audit prune`: delete old records, for cron: one line out, or none with --quiet. */
import type { Command } from "commander";
import { loadConfig, UsageError } from "../config.js";
import { parseDuration } from "../audit/filter.js";
import { openExisting } from "./audit-options.js";
import { configFlagsFrom } from "./options.js";

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const say = (line: string) => { if (!opts.quiet) process.stdout.write(line + "\n"); };

  let ageMs: number;
  if (opts.olderThan !== undefined) {
    const parsed = parseDuration(String(opts.olderThan));
    if (parsed === undefined || parsed <= 0) throw new UsageError(`invalid --older-than: expected a duration such as 12h, 30d or 8w (got ${JSON.stringify(opts.olderThan)})`);
    ageMs = parsed;
  } else if (config.auditRetentionDays === 0) {
    say("retention is 0 days (keep everything): nothing pruned");
    return;
  } else {
    ageMs = config.auditRetentionDays * 86_400_000;
  }
  const before = Date.now() - ageMs;
  const cutoff = new Date(before).toISOString();

  const store = await openExisting(config, true);
  if (!store) {
    say(`pruned 0 records older than ${cutoff} (no audit database at ${config.auditDb})`);
    return;
  }
  try {
    if (opts.dryRun) {
      say(`would prune ${await store.countOlderThan(before)} records older than ${cutoff}`);
      return;
    }
    const pruned = await store.prune(before);
    if (opts.vacuum) await store.vacuum();
    say(`pruned ${pruned} records older than ${cutoff}`);
  } finally {
    await store.close();
  }
}
