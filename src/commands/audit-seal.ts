/**
 * `mlxs audit seal`: with --init, creates the sealing key and prints the verification key
 * once; without, seals the head of this machine's chain now (the daemon and the CLI doors
 * seal by themselves: this is for a log written while nothing that seals ran).
 */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { parseDuration } from "../durations.js";
import { CommandFailure, UsageError } from "../errors.js";
import { genesisHead } from "../audit/chain.js";
import { DEFAULT_SEAL_INTERVAL_MS, formatVerificationKey, initSealKey, Sealer, SealError } from "../audit/seal.js";
import { currentInstance, setInstance } from "../audit/track.js";
import { openAuditStore, shownAuditLocation } from "../audit/open-store.js";
import { configFlagsFrom } from "./options.js";
import { writeOut } from "./io.js";

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  if (opts.instance !== undefined) setInstance(String(opts.instance));
  if (opts.sealInterval !== undefined && !opts.init) throw new UsageError("--seal-interval is the key's, set once with --init");
  const interval = opts.sealInterval === undefined ? DEFAULT_SEAL_INTERVAL_MS : parseDuration(opts.sealInterval);
  if (interval === undefined || interval < 1000 || interval > 366 * 86_400_000) throw new UsageError(`--seal-interval must be a duration from 1s to 366d, such as 15m (got ${JSON.stringify(opts.sealInterval)})`);

  let verification: string | undefined;
  if (opts.init) {
    try {
      verification = formatVerificationKey(initSealKey(config.sealKey, interval));
    } catch (error) {
      if (error instanceof SealError) throw new CommandFailure(`${error.message}${/already exists/.test(error.message) ? " (seals made with it stay verifiable with its verification key; to begin a new key, move it away first)" : ""}`);
      throw error;
    }
  }
  // the first seal marks where sealing begins; later ones come once per interval
  const sealer = new Sealer(config.sealKey, currentInstance());
  const store = (await openAuditStore(config.auditDb))!;
  let sealed: boolean;
  let seal;
  try {
    if (!sealer.enabled()) throw new CommandFailure(`no sealing key at ${config.sealKey}: mlxs audit seal --init creates one`);
    const head = (await store.chainHeads()).get(sealer.chain) ?? genesisHead(sealer.chain);
    seal = sealer.seal(head);
    sealed = seal !== null && await store.insertSeal(seal);
  } catch (error) {
    if (error instanceof SealError) throw new CommandFailure(error.message);
    throw error;
  } finally {
    await store.close();
  }
  if (opts.json) {
    writeOut(`${JSON.stringify({ verification_key: verification ?? null, key_file: config.sealKey, chain: sealer.chain, sealed, seal: sealed ? seal : null })}\n`);
  } else if (verification) {
    writeOut(`${verification}\n`);
  }
  if (verification) {
    process.stderr.write(
      `mlxs: sealing key created at ${config.sealKey}; it seals every ${opts.sealInterval ?? "15m"} and evolves, forgetting the old key\n` +
      "mlxs: the line above is the verification key, shown this once: keep it OFF this machine (mlxs audit verify --key KEY proves the log with it)\n");
  }
  if (!opts.json) {
    const where = await shownAuditLocation(config.auditDb);
    process.stderr.write(sealed
      ? `mlxs: sealed chain ${JSON.stringify(sealer.chain)} of ${where} at row ${seal!.seq} (epoch ${seal!.epoch})\n`
      : `mlxs: not sealed: ${seal ? "a later seal of this epoch is there already" : "this machine's clock is behind the sealing key"}\n`);
  }
}
