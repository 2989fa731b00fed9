/** `mlxs audit prune`: delete old records, for cron: one line out, or none with --quiet. */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { UsageError } from "../errors.js";
import { parseTime } from "../audit/filter.js";
import { openExisting } from "./audit-options.js";
import { shownAuditLocation } from "../audit/open-store.js";
import { configFlagsFrom } from "./options.js";

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const say = (line: string) => { if (!opts.quiet) process.stdout.write(line + "\n"); };

  let before: number;
  if (opts.olderThan !== undefined) {
    before = cutoffOf(String(opts.olderThan));
  } else if (config.auditRetentionDays === 0) {
    say("retention is 0 days (keep everything): nothing pruned");
    return;
  } else {
    before = Date.now() - config.auditRetentionDays * 86_400_000;
  }
  const cutoff = new Date(before).toISOString();

  const store = await openExisting(config, true);
  if (!store) {
    say(`pruned 0 records older than ${cutoff} (no audit database at ${await shownAuditLocation(config.auditDb)})`);
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

/**
 * --older-than: a duration ago (30d), or an ISO-8601 time, so that an export with
 * `--until T` and a prune with `--older-than T` cover exactly the same records.
 */
function cutoffOf(raw: string): number {
  const now = Date.now();
  let time = NaN;
  try {
    time = parseTime("older-than", raw, now);
  } catch {
    // refused below, with what is accepted
  }
  // 0d, or a time to come, would delete everything, the newest records included
  if (!(time < now)) throw new UsageError(`invalid --older-than: expected a duration such as 12h, 30d or 8w, or a past ISO-8601 time (got ${JSON.stringify(raw)})`);
  return time;
}
