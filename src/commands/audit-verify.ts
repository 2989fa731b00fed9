/**
 * `mlxs audit verify`: walks every chain of the audit log, or of an export file (--file),
 * and checks its seals (with --key, their tags too); prints each chain's count, head and
 * how far it is sealed, or where it first broke. Exit status 1 on any break.
 */
import type { Command } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { loadConfig } from "../config.js";
import { CommandFailure, UsageError } from "../errors.js";
import type { ChainReport } from "../audit/chain.js";
import { parseVerificationKey, SealError, type VerificationKey } from "../audit/seal.js";
import { verifyExportFile, verifyStore, type VerifyResult } from "../audit/verify.js";
import { ExportFileError } from "../audit/export-file.js";
import { openExisting } from "./audit-options.js";
import { configFlagsFrom } from "./options.js";
import { colours, writeOut } from "./io.js";

/** A --key: the verification key itself, or a file that holds it (kept off the command line, where ps shows it). */
function keyFrom(given: string): VerificationKey {
  let text = given;
  if (!given.startsWith("mlxs-seal-") && existsSync(given)) {
    try {
      text = readFileSync(given, "utf8");
    } catch (error) {
      throw new UsageError(`cannot read the key file ${given}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  try {
    return parseVerificationKey(text);
  } catch (error) {
    throw new UsageError(`--key: ${(error as SealError).message}`);
  }
}

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const keys = ((opts.key as string[] | undefined) ?? []).map(keyFrom);
  let result: VerifyResult;
  if (opts.file !== undefined) {
    try {
      result = await verifyExportFile(String(opts.file), keys);
    } catch (error) {
      if (error instanceof ExportFileError) throw new CommandFailure(`${opts.file}: ${error.message}`);
      const code = (error as NodeJS.ErrnoException).code;
      if (code) throw new CommandFailure(`cannot read ${opts.file}: ${code === "ENOENT" ? "no such file" : code}`);
      throw error;
    }
  } else {
    const config = loadConfig(configFlagsFrom(opts));
    const store = await openExisting(config, true);
    if (!store) throw new CommandFailure(`no audit database at ${config.auditDb}: nothing to verify`);
    try {
      result = await verifyStore(store, keys);
    } finally {
      await store.close();
    }
  }
  if (!result.whole) process.exitCode = 1;
  const given = new Set(keys.map((k) => k.key_id));
  const unused = result.seals.keysWithoutSeals;
  if (opts.json) {
    writeOut(`${JSON.stringify({
      whole: result.whole,
      source: opts.file !== undefined ? "file" : "database",
      sealed: result.seals.count > 0,
      seals: { count: result.seals.count, key_ids: result.seals.keyIds, checked_with_key: result.seals.keyed, forged: result.seals.forged.length, unchecked: result.seals.unchecked, keys_without_seals: unused },
      rows: result.rows,
      chains: result.chains,
    })}\n`);
    return;
  }
  const c = colours();
  for (const r of result.chains) writeOut(chainLine(r, c));
  const broken = result.chains.filter((r) => r.broken).length;
  const what = opts.file !== undefined ? "export" : "audit log";
  writeOut(result.whole
    ? `${what} whole: ${result.chains.length} chain(s), ${result.rows} rows\n`
    : `${what} BROKEN: ${broken} of ${result.chains.length} chain(s)${unused.length > 0 ? ", and seals missing" : ""}\n`);
  const { seals } = result;
  if (seals.count === 0) {
    writeOut("not sealed: the chain shows changes made without recomputing it; someone who can write the database can recompute every link (mlxs audit seal --init begins sealing)\n");
  } else if (!seals.keyed) {
    writeOut(`${seals.count} seal(s) by key ${seals.keyIds.join(", ")} matched against the rows, their tags not checked: give --key with the verification key to prove them\n`);
  } else {
    if (seals.unchecked > 0) writeOut(`${seals.unchecked} seal(s) by a key not given were not checked (keys ${seals.keyIds.filter((id) => !given.has(id)).join(", ")})\n`);
    if (seals.forged.length > 0) writeOut(c.red(`${seals.forged.length} seal(s) do not hold: the log was changed after it was sealed, or the seals were\n`));
  }
  if (unused.length > 0) writeOut(c.red(`no seal in this ${what} was made with key ${unused.join(", ")}: its seals were removed, or the key is not this log's\n`));
}

function chainLine(r: ChainReport, c: ReturnType<typeof colours>): string {
  const name = JSON.stringify(r.chain);
  const span = r.records === 0 ? "no records" : `${r.records} records (ids ${r.first_id} to ${r.last_id})`;
  const from = r.from === "checkpoint" ? ", from a prune's checkpoint" : r.from === "file" ? ", from the file's first row of it" : "";
  const skipped = r.skipped > 0 ? `, ${r.skipped} older rows kept by a prune not checked` : "";
  if (r.broken) {
    return `${c.bold(`chain ${name}`)}: ${c.red("BROKEN")} at row ${r.broken.id ?? "-"}: ${r.broken.kind}: ${r.broken.detail} (${span} whole before it)\n`;
  }
  let sealed = "";
  if (r.sealed && r.sealed.seals > 0) {
    sealed = r.sealed.through_seq === null
      ? `; no seal covers its rows yet`
      : `; sealed${r.sealed.keyed ? " (key checked)" : ""} through row ${r.sealed.through_seq} of it${r.sealed.through_id !== null ? ` (id ${r.sealed.through_id})` : ""} on ${new Date(r.sealed.sealed_at!).toISOString()}, ${r.sealed.unsealed} newer row(s) not sealed yet`;
  }
  return `${c.bold(`chain ${name}`)}: whole, ${span}${from}${skipped}, head ${r.head}${sealed}\n`;
}
