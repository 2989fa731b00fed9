/**
 * `mlxs audit verify`: walks every chain of the audit log (chain.ts) and prints each one's
 * count and head, or where it first broke; exit status 1 on any break.
 */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { CommandFailure } from "../errors.js";
import { verifyChains, type ChainReport } from "../audit/chain.js";
import { openExisting } from "./audit-options.js";
import { configFlagsFrom } from "./options.js";
import { colours, writeOut } from "./io.js";

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const store = await openExisting(config, true);
  if (!store) throw new CommandFailure(`no audit database at ${config.auditDb}: nothing to verify`);
  let reports: ChainReport[];
  let rows: number;
  try {
    ({ rows, chains: reports } = await verifyChains(store));
  } finally {
    await store.close();
  }
  const whole = reports.every((r) => r.broken === null);
  if (!whole) process.exitCode = 1;
  if (opts.json) {
    writeOut(`${JSON.stringify({ whole, sealed: false, rows, chains: reports })}\n`);
    return;
  }
  const c = colours();
  for (const r of reports) {
    const name = JSON.stringify(r.chain);
    const span = r.records === 0 ? "no records" : `${r.records} records (ids ${r.first_id} to ${r.last_id})`;
    const from = r.from === "checkpoint" ? ", from a prune's checkpoint" : "";
    const skipped = r.skipped > 0 ? `, ${r.skipped} older rows kept by a prune not checked` : "";
    if (r.broken) {
      writeOut(`${c.bold(`chain ${name}`)}: ${c.red("BROKEN")} at row ${r.broken.id ?? "-"}: ${r.broken.kind}: ${r.broken.detail} (${span} whole before it)\n`);
    } else {
      writeOut(`${c.bold(`chain ${name}`)}: whole, ${span}${from}${skipped}, head ${r.head}\n`);
    }
  }
  const broken = reports.filter((r) => r.broken).length;
  writeOut(whole
    ? `audit log whole: ${reports.length} chain(s), ${rows} rows\n`
    : `audit log BROKEN: ${broken} of ${reports.length} chain(s)\n`);
  writeOut("not sealed: the chain shows changes made without recomputing it; someone who can write the database can recompute every link\n");
}
