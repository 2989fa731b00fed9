/**
 * Sealing: the heads of the audit chains (chain.ts), sealed with keys that evolve one way,
 * as systemd-journald's Forward Secure Sealing seals its journal.
 *
 * `mlxs audit seal --init` draws a random key K0 and prints it once, as the verification
 * key, for the operator to keep off the machine. The machine keeps only the current key, in
 * a key file: time is cut into epochs of the key's interval (15 minutes by default), and
 * the key of epoch e+1 is SHA-256 of the key of epoch e. Writers seal the head of their
 * chain, HMAC-SHA256 with the epoch's key over (key id, epoch, chain, place, link, time);
 * as an epoch ends, its key seals once more and is evolved away. Someone who takes the
 * machine later finds only the key of the epoch then running: from it no earlier key can
 * be computed, so no seal of an ended epoch can be made again, and every row such a seal
 * covers is fixed: altering, removing, inserting or cutting off any of them (even with
 * every link recomputed) no longer matches the sealed link. The verification key derives
 * every epoch's key, so `mlxs audit verify --key` checks every seal.
 *
 * What a seal cannot prove: records that were never written (a request whose record was
 * lost before it reached the log leaves no trace to seal); rows written after the last
 * seal, and rows sealed in the epoch still running (its key is on the machine until the
 * epoch ends with a writer running to evolve it); anything done on a machine taken before
 * a seal was made (the taker holds that epoch's key); and that the
 * newest seals themselves were not removed along with the rows they covered, which leaves
 * a log that is sealed up to an earlier time: verify prints when the last seal was made.
 * The verification key can make seals too: whoever holds it must not be the machine.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, basename, join } from "node:path";
import type { ChainHead } from "./chain.js";

/** One seal: the head of a chain at one epoch, and its tag. */
export interface Seal {
  instance: string;
  /** which sealing key made it (a hash of its first key) */
  key_id: string;
  epoch: number;
  /** the sealed head: its place in the chain (0: the chain had no rows), link and row */
  seq: number;
  link: string;
  id: number | null;
  /** when it was made, UTC milliseconds */
  sealed_at: number;
  tag: string;
}

/** The key file: the current key, the epoch it is for, and how epochs are counted. */
interface KeyFile {
  version: 1;
  key_id: string;
  /** the first epoch's start, UTC milliseconds */
  start: number;
  /** an epoch's length, milliseconds */
  interval: number;
  epoch: number;
  key: string;
}

export const DEFAULT_SEAL_INTERVAL_MS = 15 * 60_000;
const VERIFICATION_PREFIX = "mlxs-seal-v1";

const keyIdOf = (first: Buffer) => createHash("sha256").update("mlxs audit seal key id\n").update(first).digest("hex").slice(0, 16);
const evolve = (key: Buffer) => createHash("sha256").update("mlxs audit seal evolve\n").update(key).digest();

/** The tag of a seal: what the epoch's key signs. */
function tagOf(key: Buffer, seal: Omit<Seal, "tag" | "id">): string {
  return createHmac("sha256", key)
    .update(JSON.stringify(["mlxs audit seal v1", seal.key_id, seal.epoch, seal.instance, seal.seq, seal.link, seal.sealed_at]))
    .digest("hex");
}

export class SealError extends Error {}

/** A verification key as the operator keeps it: everything needed to derive every epoch's key. */
export interface VerificationKey {
  key_id: string;
  start: number;
  interval: number;
  first: Buffer;
}

export function formatVerificationKey(key: VerificationKey): string {
  return `${VERIFICATION_PREFIX}-${key.start}-${key.interval}-${key.first.toString("hex")}`;
}

export function parseVerificationKey(text: string): VerificationKey {
  const match = /^mlxs-seal-v1-(\d{1,16})-(\d{1,16})-([0-9a-f]{64})$/.exec(text.trim());
  if (!match) throw new SealError(`not an mlxs verification key (it reads ${VERIFICATION_PREFIX}-START-INTERVAL- and 64 hex digits)`);
  const first = Buffer.from(match[3]!, "hex");
  return { key_id: keyIdOf(first), start: Number(match[1]), interval: Number(match[2]), first };
}

/** Creates a key file (never over another) and returns the verification key, to be shown once. */
export function initSealKey(path: string, intervalMs: number, now = Date.now()): VerificationKey {
  const first = randomBytes(32);
  // epoch 0 ended as it began: the machine starts with the key of epoch 1, and the
  // verification key's own secret is never in the file
  const start = Math.floor(now / 1000) * 1000 - intervalMs;
  const key: VerificationKey = { key_id: keyIdOf(first), start, interval: intervalMs, first };
  writeKeyFile(path, { version: 1, key_id: key.key_id, start, interval: intervalMs, epoch: 1, key: evolve(first).toString("hex") }, true);
  return key;
}

/**
 * Writes the key file whole or not at all (a temporary file, flushed, renamed over it),
 * readable by its owner only: a crash leaves the old key or the new one, never half.
 */
function writeKeyFile(path: string, file: KeyFile, exclusive = false): void {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(temp, "w", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(file)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (exclusive) {
    // a hard link is made whole or refused when the name is taken: never over another key
    try {
      linkSync(temp, path);
    } catch (error) {
      throw new SealError((error as NodeJS.ErrnoException).code === "EEXIST"
        ? `a sealing key already exists at ${path}` : `cannot write the sealing key ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    } finally {
      rmSync(temp, { force: true });
    }
  } else {
    renameSync(temp, path);
  }
  try {
    const dir = openSync(dirname(path), "r");
    try { fsyncSync(dir); } finally { closeSync(dir); }
  } catch {
    // a directory that cannot be opened to flush (some file systems): the rename stands
  }
}

function readKeyFile(path: string): KeyFile | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new SealError(`cannot read the sealing key ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let file: Partial<KeyFile>;
  try {
    file = JSON.parse(text);
  } catch {
    throw new SealError(`the sealing key ${path} is damaged`);
  }
  if (file.version !== 1 || typeof file.key !== "string" || !/^[0-9a-f]{64}$/.test(file.key) || typeof file.key_id !== "string"
    || !Number.isSafeInteger(file.start) || !Number.isSafeInteger(file.interval) || file.interval! <= 0 || !Number.isSafeInteger(file.epoch) || file.epoch! < 0) {
    throw new SealError(`the sealing key ${path} is damaged`);
  }
  return file as KeyFile;
}

const epochAt = (file: { start: number; interval: number }, time: number) => Math.floor((time - file.start) / file.interval);

/**
 * The sealing of one chain (a writer's instance) with the key in one file. The key of an
 * epoch stays in the file while its epoch lasts, as journald's does: every writer on the
 * machine (a daemon, `mlxs chat`, daemons of other instances) seals its chain with it, as
 * often as it likes; a later seal of the same epoch replaces an earlier one. The first seal
 * made after the epoch ends is made with its key too, covering everything the epoch wrote,
 * and then the key is evolved to the epoch of the time and the old one forgotten: a daemon
 * does that as each epoch ends. Each epoch's key is the same whoever derives it, so writers
 * that race make the same key file.
 */
export class Sealer {
  constructor(readonly keyPath: string, readonly chain: string, private readonly now: () => number = Date.now) {}

  /** Whether there is a key (sealing is on); throws SealError when the file is unreadable. */
  enabled(): boolean {
    return readKeyFile(this.keyPath) !== undefined;
  }

  /** Milliseconds until the next epoch begins, when a daemon seals again; undefined without a key. */
  nextEpochIn(): number | undefined {
    const file = readKeyFile(this.keyPath);
    if (!file) return undefined;
    const now = this.now();
    return file.start + (epochAt(file, now) + 1) * file.interval - now;
  }

  /**
   * A seal of `head` with the key in the file; when that key's epoch has ended, the file
   * then moves to the epoch of the time (before the seal is returned: whatever happens
   * next, the old key cannot be used again). Null without a key, or when the clock is
   * behind the key.
   */
  seal(head: ChainHead): Seal | null {
    const file = readKeyFile(this.keyPath);
    if (!file) return null;
    const now = this.now();
    const current = epochAt(file, now);
    if (current < file.epoch) return null;
    const key = Buffer.from(file.key, "hex");
    const unsigned = { instance: this.chain, key_id: file.key_id, epoch: file.epoch, seq: head.seq, link: head.link, sealed_at: now };
    const seal: Seal = { ...unsigned, id: head.id, tag: tagOf(key, unsigned) };
    if (current > file.epoch) {
      let next = key;
      for (let e = file.epoch; e < current; e++) next = evolve(next);
      const latest = readKeyFile(this.keyPath);
      if (!latest || latest.key_id !== file.key_id || latest.epoch < current) writeKeyFile(this.keyPath, { ...file, epoch: current, key: next.toString("hex") });
    }
    key.fill(0);
    return seal;
  }
}

/** A seal's problem found by checkSeals. */
export interface SealProblem {
  seal: Seal;
  detail: string;
}

/**
 * The seals' tags checked against the verification keys given: the seals that hold (each
 * chain's, by place), the ones that do not, and the ones made by keys not given (unchecked).
 * Each key's epochs are derived once, in order.
 */
export function checkSeals(seals: readonly Seal[], keys: readonly VerificationKey[]): { valid: Seal[]; forged: SealProblem[]; unchecked: Seal[] } {
  const byId = new Map(keys.map((k) => [k.key_id, k]));
  const valid: Seal[] = [];
  const forged: SealProblem[] = [];
  const unchecked: Seal[] = [];
  const ordered = [...seals].sort((a, b) => (a.key_id < b.key_id ? -1 : a.key_id > b.key_id ? 1 : a.epoch - b.epoch));
  let current: { id: string; epoch: number; key: Buffer } | undefined;
  for (const seal of ordered) {
    const verification = byId.get(seal.key_id);
    if (!verification) {
      unchecked.push(seal);
      continue;
    }
    if (!current || current.id !== seal.key_id || current.epoch > seal.epoch) current = { id: seal.key_id, epoch: 0, key: verification.first };
    if (!Number.isSafeInteger(seal.epoch) || seal.epoch < 0 || seal.epoch > 100_000_000) {
      forged.push({ seal, detail: `its epoch ${seal.epoch} is not one a key can have` });
      continue;
    }
    while (current.epoch < seal.epoch) {
      current.key = evolve(current.key);
      current.epoch++;
    }
    const expected = Buffer.from(tagOf(current.key, seal), "hex");
    const given = Buffer.from(/^[0-9a-f]{64}$/.test(seal.tag) ? seal.tag : "", "hex");
    const windowStart = verification.start + seal.epoch * verification.interval;
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      forged.push({ seal, detail: "its tag is not the key's: the seal was altered or forged" });
    } else if (seal.sealed_at < windowStart) {
      // (a seal may come after its epoch: the first seal after an epoch ends uses its key)
      forged.push({ seal, detail: "it is dated before its epoch began" });
    } else {
      valid.push(seal);
    }
  }
  return { valid, forged, unchecked };
}

/**
 * A seal as an export carries it on the row it covers, in one field: `KEYID.EPOCH.SEALED_AT.TAG`
 * (rendered by the stores' export SQL); undefined when the text is not one.
 */
export function parseSealField(text: string): Pick<Seal, "key_id" | "epoch" | "sealed_at" | "tag"> | undefined {
  const match = /^([0-9a-f]{16})\.(\d{1,12})\.(\d{1,16})\.([0-9a-f]{64})$/.exec(text);
  if (!match) return undefined;
  return { key_id: match[1]!, epoch: Number(match[2]), sealed_at: Number(match[3]), tag: match[4]! };
}
