/**
 * The audit log's hash chain. Every row carries its place in its chain (`chain_seq`), the
 * link before it (`chain_prev`) and its own link (`chain_link`):
 *
 *   chain_link = SHA-256(chain_prev as 32 bytes || encode(row))
 *
 * where encode(row) is a JSON array of every column of the row in one fixed order (the
 * record's COLUMNS, then chain_seq), nulls written out: JSON quotes and escapes every
 * string, so no two rows have one encoding. There is one chain per `instance` (a daemon's
 * --instance name, else its host name; "" for rows that have none): a fleet writing one
 * PostgreSQL database keeps one chain per daemon, and no writer waits on another's head.
 * The first link of a chain follows its genesis link, a hash of the chain's name.
 *
 * Rows carry both links so that each row can be checked alone (an export carries them) and
 * a break can be told apart: a row whose contents no longer match its link was altered; a
 * row whose link holds but whose chain_prev is not the link before it has lost a row before
 * it (removed), follows a row that does not belong (inserted), or stands out of its order.
 *
 * What the chain proves, and what it cannot: it shows any change to a row, and any row
 * removed from or put into the middle of a chain, against the links stored beside them.
 * Anyone who can write the database can recompute every link after a change, and the
 * newest rows can be cut off with the head (audit_chain_heads) rewritten to match: only a
 * head sealed with a key kept off the machine closes that (sealing, a later layer).
 */
import * as crypto from "node:crypto";
import { COLUMNS, type AuditRecord } from "./schema.js";
import type { Seal } from "./seal.js";

/** A row as the chain encodes it: the record's columns, stored values (stream as 0/1), and its place. */
export type ChainValues = Record<(typeof COLUMNS)[number] | "chain_seq", unknown>;

/** A stored row with its chain columns. */
export type ChainedRow = ChainValues & { chain_prev: string | null; chain_link: string | null };

/** The name of a record's chain. */
export function chainOf(instance: unknown): string {
  return typeof instance === "string" ? instance : "";
}

/** The link before the first row of a chain. */
export function genesisLink(chain: string): string {
  return crypto.createHash("sha256").update(`mlxs audit chain v1 genesis\n${JSON.stringify(chain)}`).digest("hex");
}

/** The canonical encoding of a row: every column, in one order, nulls explicit. */
export function encodeRow(row: ChainValues): string {
  const values: unknown[] = new Array(ENCODED.length);
  for (let i = 0; i < ENCODED.length; i++) values[i] = row[ENCODED[i]!] ?? null;
  return JSON.stringify(values);
}

const ENCODED = [...COLUMNS, "chain_seq"] as const;

/**
 * SHA-256 of `prev` (as bytes) and the encoding, in hex. One reused buffer and a one-shot
 * hash where Node has one (crypto.hash, 20.12 and later): a third of createHash's cost,
 * paid on every row written and verified.
 */
export function linkOf(prev: string, encoding: string): string {
  const need = (prev.length >> 1) + encoding.length * 3;
  if (scratch.length < need) scratch = Buffer.allocUnsafe(need * 2);
  const at = scratch.write(prev, 0, "hex");
  const end = at + scratch.write(encoding, at, "utf8");
  return sha256Hex(scratch.subarray(0, end));
}

let scratch = Buffer.allocUnsafe(4096);
// (a namespace import: a named import of what an older Node lacks would not load at all)
const sha256Hex: (bytes: Buffer) => string = typeof crypto.hash === "function"
  ? (bytes) => crypto.hash("sha256", bytes, "hex")
  : (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");

/**
 * A number as a store keeps it exactly. SQLite reads a number out of JSON text with its own
 * parser, which misses the nearest double now and then (62 in 200 000 random durations), so
 * the row it stored would not be the row that was hashed. A fraction is kept to the
 * millionth (a nanosecond, for the millisecond columns): it travels as the integer count
 * of millionths, and the store divides it by 1e6, as JavaScript does: one correctly
 * rounded division of the same two numbers, one double.
 */
export function exactNumber(value: number): { stored: number; sent: number; scaled: boolean } {
  if (Number.isInteger(value) || !Number.isFinite(value)) return { stored: value, sent: value, scaled: false };
  const millionths = Math.round(value * 1e6);
  if (!Number.isSafeInteger(millionths)) return { stored: value, sent: value, scaled: false };
  return { stored: millionths / 1e6, sent: millionths, scaled: true };
}

/** The head of one chain: its last row's place and link (a genesis head has seq 0). */
export interface ChainHead {
  seq: number;
  link: string;
  id: number | null;
}

/** The head of a chain before its first row. */
export function genesisHead(chain: string): ChainHead {
  return { seq: 0, link: genesisLink(chain), id: null };
}

/**
 * Links a row stored before the chain began after the head of its chain (which it
 * advances): what a migration does to the rows already there, in id order.
 */
export function linkExisting(heads: Map<string, ChainHead>, row: ChainedRow): { seq: number; prev: string; link: string } {
  const chain = chainOf(row.instance);
  const head = heads.get(chain) ?? genesisHead(chain);
  const seq = head.seq + 1;
  const link = linkOf(head.link, encodeRow({ ...row, chain_seq: seq }));
  heads.set(chain, { seq, link, id: row.id as number });
  return { seq, prev: head.link, link };
}

/**
 * Links a batch of records in order, from the heads of their chains (which it advances).
 * `ids` are the row ids the records will have. Returns, per record, its stored values
 * (numbers made exact, as exactNumber() says) and its chain columns.
 */
export function chainRecords(
  records: readonly AuditRecord[], ids: readonly number[], heads: Map<string, ChainHead>,
): { values: unknown[]; prev: string; link: string }[] {
  const out = new Array<{ values: unknown[]; prev: string; link: string }>(records.length);
  for (let i = 0; i < records.length; i++) {
    const record = records[i] as unknown as Record<string, unknown>;
    const chain = chainOf(record.instance);
    let head = heads.get(chain);
    if (!head) heads.set(chain, (head = genesisHead(chain)));
    // the row in ENCODED order: what is hashed, and what the store is sent
    const values: unknown[] = new Array(ENCODED.length);
    values[0] = ids[i]!;
    for (let k = 1; k < COLUMNS.length; k++) {
      const c = COLUMNS[k]!;
      const v = c === "stream" ? (record.stream ? 1 : 0) : record[c] ?? null;
      values[k] = typeof v === "number" && !Number.isInteger(v) ? exactNumber(v).stored : v;
    }
    values[COLUMNS.length] = head.seq + 1;
    const prev = head.link;
    const link = linkOf(prev, JSON.stringify(values));
    head.seq++;
    head.link = link;
    head.id = ids[i]!;
    out[i] = { values, prev, link };
  }
  return out;
}

/** How a chain broke at a row. */
export type BreakKind = "altered" | "removed" | "inserted" | "reordered" | "truncated" | "unchained" | "forged";

export interface ChainBreak {
  /** the row where the chain stops holding (for "truncated", the last row there is) */
  id: number | null;
  kind: BreakKind;
  detail: string;
}

/** What the seals of a chain show (seal.ts). */
export interface SealReport {
  /** seals compared with the rows (with a key: only those whose tags hold) */
  seals: number;
  /** whether their tags were checked with a verification key */
  keyed: boolean;
  /** the place, row and time of the last seal that matches the chain; null: none does */
  through_seq: number | null;
  through_id: number | null;
  sealed_at: number | null;
  /** rows after the last matching seal: not sealed yet */
  unsealed: number;
}

export interface ChainReport {
  chain: string;
  /** rows checked */
  records: number;
  first_id: number | null;
  last_id: number | null;
  /** the last link checked */
  head: string;
  /** where the walk began: the chain's genesis, a prune's checkpoint (the last pruned link), or an export file's first row */
  from: "genesis" | "checkpoint" | "file";
  /** rows older than the checkpoint that a prune by time left: not checked */
  skipped: number;
  broken: ChainBreak | null;
  sealed: SealReport | null;
}

/** The last link a prune removed from a chain: the chain goes on from it. */
export interface ChainCheckpoint {
  seq: number;
  link: string;
  id: number;
  /** an export file's first row, not a prune, is where the walk begins */
  file?: boolean;
}

/** A row as the verifier walks it: its place and links, and whether its own link holds. */
export interface LinkRow {
  id: number;
  chain: string;
  seq: number | null;
  prev: string | null;
  link: string | null;
  /** its contents match its link */
  holds: boolean;
}

/** A stored row's place and links, its link checked against its contents. */
export function linkRowOf(row: ChainedRow): LinkRow {
  const prev = typeof row.chain_prev === "string" ? row.chain_prev : null;
  const link = typeof row.chain_link === "string" ? row.chain_link : null;
  return {
    id: row.id as number,
    chain: chainOf(row.instance),
    seq: row.chain_seq == null ? null : Number(row.chain_seq),
    prev,
    link,
    holds: prev !== null && link !== null && /^[0-9a-f]{64}$/.test(prev) && linkOf(prev, encodeRow(row)) === link,
  };
}

/** A seal, as the verifier compares it with its chain's rows. */
export interface SealPoint {
  seq: number;
  link: string;
  sealed_at: number;
}

interface Walk {
  report: ChainReport;
  expect: ChainHead;
  /** the link before the last one, to tell a row put in from one removed */
  before: string | null;
  checkpointId: number;
  checkpointSeq: number;
  /** this chain's seals not yet reached, by place */
  seals: SealPoint[];
  nextSeal: number;
}

const when = (ms: number) => new Date(ms).toISOString();

/**
 * Checks rows fed in order (by id on SQLite; by chain, then place, on PostgreSQL and in an
 * export file), one chain state each: memory grows with the number of chains (and seals),
 * never with the rows.
 */
export class ChainVerifier {
  private readonly walks = new Map<string, Walk>();

  /**
   * `order`: how the rows come. By id (SQLite, whose ids are minted under the write lock,
   * so each chain's order is its id order), or by chain and place (PostgreSQL, whose ids are
   * minted before the lock: two writers' ids interleave with their chains' order). It says
   * which rows a prune's checkpoint leaves behind it: older by id, or by place.
   * `seals`: each chain's seals by place, to be matched by the rows; `keyed` says whether
   * their tags were checked.
   */
  constructor(
    private readonly checkpoints: Map<string, ChainCheckpoint>,
    private readonly heads: Map<string, ChainHead>,
    private readonly order: ChainOrder = "id",
    private readonly seals?: { byChain: Map<string, SealPoint[]>; keyed: boolean },
  ) {}

  private walk(chain: string): Walk {
    let walk = this.walks.get(chain);
    if (!walk) {
      const checkpoint = this.checkpoints.get(chain);
      const seals = this.seals?.byChain.get(chain) ?? [];
      const start = checkpoint?.seq ?? 0;
      walk = {
        report: {
          chain, records: 0, first_id: null, last_id: null, head: checkpoint?.link ?? genesisLink(chain),
          from: checkpoint ? (checkpoint.file ? "file" : "checkpoint") : "genesis", skipped: 0, broken: null,
          sealed: this.seals ? { seals: seals.length, keyed: this.seals.keyed, through_seq: null, through_id: null, sealed_at: null, unsealed: 0 } : null,
        },
        expect: checkpoint ? { seq: checkpoint.seq, link: checkpoint.link, id: checkpoint.id || null } : genesisHead(chain),
        before: null,
        checkpointId: checkpoint?.id ?? 0,
        checkpointSeq: start,
        seals,
        nextSeal: 0,
      };
      // seals of what a prune removed, or of where the walk begins, are behind it: the
      // checkpoint stands for them (a seal of the start is matched against it)
      this.passSeals(walk, start, walk.expect.link, null);
      this.walks.set(chain, walk);
    }
    return walk;
  }

  /** Matches the chain's seals up to place `seq`, whose link is `link`; false once one fails. */
  private passSeals(walk: Walk, seq: number, link: string, id: number | null): boolean {
    const { seals, report } = walk;
    while (walk.nextSeal < seals.length && seals[walk.nextSeal]!.seq <= seq) {
      const seal = seals[walk.nextSeal++]!;
      if (seal.seq < seq) continue;
      if (seal.link !== link) {
        report.broken = {
          id,
          kind: "altered",
          detail: `the chain up to this row does not match its seal of ${when(seal.sealed_at)}: a row at or before it was changed, removed or put in, and the links after it recomputed`,
        };
        return false;
      }
      report.sealed!.through_seq = seq;
      report.sealed!.through_id = id;
      report.sealed!.sealed_at = seal.sealed_at;
    }
    return true;
  }

  /** One row; `next` is the row after it in the same chain when known (to tell a swap). */
  check(row: LinkRow, next?: LinkRow): void {
    const walk = this.walk(row.chain);
    const { report, expect } = walk;
    if (report.broken) return;
    const id = row.id;
    const behind = this.order === "id" ? id <= walk.checkpointId : row.seq != null && row.seq <= walk.checkpointSeq;
    if (behind) {
      report.skipped++;
      return;
    }
    const fail = (kind: BreakKind, detail: string, at = id) => { report.broken = { id: at, kind, detail }; };
    if (row.link === null || row.prev === null) return fail("unchained", "the row has no link: it was put in without the chain");
    const seq = row.seq ?? NaN;
    if (row.prev !== expect.link) {
      if (next && next.link === row.prev) return fail("reordered", `it stands before the row it follows in the chain (id ${next.id})`);
      if (!row.holds) return fail("altered", "its contents do not match its link, and its previous link is not the link before it (a forged or rewritten row)");
      if (walk.before !== null && row.prev === walk.before && expect.id !== null) {
        return fail("inserted", `it does not belong to the chain: the row after it (id ${id}) follows the row before it`, expect.id);
      }
      const missing = Number.isSafeInteger(seq) && seq > expect.seq + 1 ? `${seq - expect.seq - 1} row(s)` : "a row";
      return fail("removed", `${missing} before it (after id ${expect.id ?? "the chain's start"}) were removed`);
    }
    if (!row.holds || seq !== expect.seq + 1) return fail("altered", "its contents do not match its link");
    walk.before = expect.link;
    walk.expect = { seq, link: row.link, id };
    report.records++;
    report.first_id ??= id;
    report.last_id = id;
    report.head = row.link;
    if (walk.nextSeal < walk.seals.length) this.passSeals(walk, seq, row.link, id);
  }

  /**
   * Every chain's report, after the last row: a chain whose kept head, or a seal, is past
   * its last row lost its newest rows.
   */
  finish(): ChainReport[] {
    for (const chain of this.heads.keys()) this.walk(chain);
    for (const chain of this.seals?.byChain.keys() ?? []) this.walk(chain);
    const reports: ChainReport[] = [];
    for (const walk of this.walks.values()) {
      const { report, expect } = walk;
      const head = this.heads.get(report.chain);
      const sealedPast = walk.seals.slice(walk.nextSeal).find((s) => s.seq > expect.seq);
      if (!report.broken && sealedPast) {
        report.broken = {
          id: expect.id,
          kind: "truncated",
          detail: `it was sealed at row ${sealedPast.seq} of the chain on ${when(sealedPast.sealed_at)}, but it ends at row ${expect.seq}: the newest ${sealedPast.seq - expect.seq} row(s) were removed`,
        };
      } else if (!report.broken && head && (head.link !== expect.link || head.seq !== expect.seq)) {
        report.broken = {
          id: expect.id,
          kind: head.seq > expect.seq ? "truncated" : "altered",
          detail: head.seq > expect.seq
            ? `the chain's kept head is row ${head.seq} of it (id ${head.id}), but it ends at row ${expect.seq}: the newest ${head.seq - expect.seq} row(s) were removed`
            : "the chain's kept head does not match its last row",
        };
      }
      if (report.sealed) report.sealed.unsealed = expect.seq - (report.sealed.through_seq ?? walk.checkpointSeq);
      reports.push(report);
    }
    return reports.sort((a, b) => (a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : 0));
  }
}

/** The order a store gives its rows to the verifier in (ChainVerifier). */
export type ChainOrder = "id" | "chain";

/** What verifyChains() reads: the stores' chain views. */
export interface ChainSource {
  /** by id when absent */
  readonly chainOrder?: ChainOrder;
  chainCheckpoints(): Promise<Map<string, ChainCheckpoint>>;
  chainHeads(): Promise<Map<string, ChainHead>>;
  chainPages(): AsyncGenerator<ChainedRow[]>;
  /**
   * The rows as the verifier walks them, each link already checked, in chainOrder: where a
   * store has it, verifyChains() reads this instead of chainPages(). It must say of every
   * row just what linkRowOf() says of it (store.ts: SQLite builds each page as one string,
   * and a row it cannot render exactly as encodeRow() would is read the old way).
   */
  linkPages?(): AsyncGenerator<LinkRow[]>;
}

/** A store's chains as one moment left them (a read transaction), with their seals; end() lets the moment go. */
export interface ChainView extends ChainSource {
  seals(): Promise<Seal[]>;
  end(): Promise<void>;
}

/** Feeds rows to a verifier, each with the next row of its chain where the page holds it (to tell a swap from a removal). */
export function checkPage(verifier: ChainVerifier, page: readonly LinkRow[]): void {
  const nextOf = new Map<string, LinkRow>();
  const next: (LinkRow | undefined)[] = new Array(page.length);
  for (let i = page.length - 1; i >= 0; i--) {
    next[i] = nextOf.get(page[i]!.chain);
    nextOf.set(page[i]!.chain, page[i]!);
  }
  for (let i = 0; i < page.length; i++) verifier.check(page[i]!, next[i]);
}

/**
 * Walks every chain of a store, page by page (memory bounded): a report per chain, and the
 * rows read. `seals`: each chain's seals to match (seal.ts), when there are any.
 */
export async function verifyChains(
  source: ChainSource, seals?: { byChain: Map<string, SealPoint[]>; keyed: boolean },
): Promise<{ rows: number; chains: ChainReport[] }> {
  // heads and checkpoints first: rows written while the walk runs lie past the heads read here
  const verifier = new ChainVerifier(await source.chainCheckpoints(), await source.chainHeads(), source.chainOrder, seals);
  let rows = 0;
  if (source.linkPages) {
    for await (const page of source.linkPages()) {
      rows += page.length;
      checkPage(verifier, page);
    }
  } else {
    for await (const page of source.chainPages()) {
      rows += page.length;
      checkPage(verifier, page.map(linkRowOf));
    }
  }
  return { rows, chains: verifier.finish() };
}
