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
import { createHash } from "node:crypto";
import { COLUMNS, type AuditRecord } from "./schema.js";

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
  return createHash("sha256").update(`mlxs audit chain v1 genesis\n${JSON.stringify(chain)}`).digest("hex");
}

/** The canonical encoding of a row: every column, in one order, nulls explicit. */
export function encodeRow(row: ChainValues): string {
  const values: unknown[] = new Array(ENCODED.length);
  for (let i = 0; i < ENCODED.length; i++) values[i] = row[ENCODED[i]!] ?? null;
  return JSON.stringify(values);
}

const ENCODED = [...COLUMNS, "chain_seq"] as const;

export function linkOf(prev: string, encoding: string): string {
  return createHash("sha256").update(Buffer.from(prev, "hex")).update(encoding).digest("hex");
}

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
function genesisHead(chain: string): ChainHead {
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
export type BreakKind = "altered" | "removed" | "inserted" | "reordered" | "truncated" | "unchained";

export interface ChainBreak {
  /** the row where the chain stops holding (for "truncated", the last row there is) */
  id: number | null;
  kind: BreakKind;
  detail: string;
}

export interface ChainReport {
  chain: string;
  /** rows checked */
  records: number;
  first_id: number | null;
  last_id: number | null;
  /** the last link checked */
  head: string;
  /** the chain begins after a prune's checkpoint (the last pruned link), or at genesis */
  from: "genesis" | "checkpoint";
  /** rows older than the checkpoint that a prune by time left: not checked */
  skipped: number;
  broken: ChainBreak | null;
}

/** The last link a prune removed from a chain: the chain goes on from it. */
export interface ChainCheckpoint {
  seq: number;
  link: string;
  id: number;
}

interface Walk {
  report: ChainReport;
  expect: ChainHead;
  /** the link before the last one, to tell a row put in from one removed */
  before: string | null;
  checkpointId: number;
  checkpointSeq: number;
}

/**
 * Checks rows fed in order (by id on SQLite; by chain, then place, on PostgreSQL), one
 * chain state each: memory grows with the number of chains, never with the rows.
 */
export class ChainVerifier {
  private readonly walks = new Map<string, Walk>();

  /**
   * `order`: how the rows come. By id (SQLite, whose ids are minted under the write lock,
   * so each chain's order is its id order), or by chain and place (PostgreSQL, whose ids are
   * minted before the lock: two writers' ids interleave with their chains' order). It says
   * which rows a prune's checkpoint leaves behind it: older by id, or by place.
   */
  constructor(
    private readonly checkpoints: Map<string, ChainCheckpoint>,
    private readonly heads: Map<string, ChainHead>,
    private readonly order: ChainOrder = "id",
  ) {}

  private walk(chain: string): Walk {
    let walk = this.walks.get(chain);
    if (!walk) {
      const checkpoint = this.checkpoints.get(chain);
      walk = {
        report: { chain, records: 0, first_id: null, last_id: null, head: checkpoint?.link ?? genesisLink(chain), from: checkpoint ? "checkpoint" : "genesis", skipped: 0, broken: null },
        expect: checkpoint ? { seq: checkpoint.seq, link: checkpoint.link, id: checkpoint.id } : genesisHead(chain),
        before: null,
        checkpointId: checkpoint?.id ?? 0,
        checkpointSeq: checkpoint?.seq ?? 0,
      };
      this.walks.set(chain, walk);
    }
    return walk;
  }

  /** One row; `next` is the row after it in the same chain when known (to tell a swap). */
  check(row: ChainedRow, next?: ChainedRow): void {
    const walk = this.walk(chainOf(row.instance));
    const { report, expect } = walk;
    if (report.broken) return;
    const id = row.id as number;
    const behind = this.order === "id" ? id <= walk.checkpointId : row.chain_seq != null && Number(row.chain_seq) <= walk.checkpointSeq;
    if (behind) {
      report.skipped++;
      return;
    }
    const fail = (kind: BreakKind, detail: string, at = id) => { report.broken = { id: at, kind, detail }; };
    if (typeof row.chain_link !== "string" || typeof row.chain_prev !== "string") return fail("unchained", "the row has no link: it was put in without the chain");
    const holds = linkOf(row.chain_prev, encodeRow(row)) === row.chain_link;
    const seq = Number(row.chain_seq);
    if (row.chain_prev !== expect.link) {
      if (next && next.chain_link === row.chain_prev) return fail("reordered", `it stands before the row it follows in the chain (id ${next.id as number})`);
      if (!holds) return fail("altered", "its contents do not match its link, and its previous link is not the link before it (a forged or rewritten row)");
      if (walk.before !== null && row.chain_prev === walk.before && expect.id !== null) {
        return fail("inserted", `it does not belong to the chain: the row after it (id ${id}) follows the row before it`, expect.id);
      }
      const missing = Number.isSafeInteger(seq) && seq > expect.seq + 1 ? `${seq - expect.seq - 1} row(s)` : "a row";
      return fail("removed", `${missing} before it (after id ${expect.id ?? "the chain's start"}) were removed`);
    }
    if (!holds || seq !== expect.seq + 1) return fail("altered", "its contents do not match its link");
    walk.before = expect.link;
    walk.expect = { seq, link: row.chain_link, id };
    report.records++;
    report.first_id ??= id;
    report.last_id = id;
    report.head = row.chain_link;
  }

  /** Every chain's report, after the last row: a chain whose kept head is past its last row lost its newest rows. */
  finish(): ChainReport[] {
    for (const chain of this.heads.keys()) this.walk(chain);
    const reports: ChainReport[] = [];
    for (const { report, expect } of this.walks.values()) {
      const head = this.heads.get(report.chain);
      if (!report.broken && head && (head.link !== expect.link || head.seq !== expect.seq)) {
        report.broken = {
          id: expect.id,
          kind: head.seq > expect.seq ? "truncated" : "altered",
          detail: head.seq > expect.seq
            ? `the chain's kept head is row ${head.seq} of it (id ${head.id}), but it ends at row ${expect.seq}: the newest ${head.seq - expect.seq} row(s) were removed`
            : "the chain's kept head does not match its last row",
        };
      }
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
}

/** Walks every chain of a store, page by page (memory bounded): a report per chain, and the rows read. */
export async function verifyChains(source: ChainSource): Promise<{ rows: number; chains: ChainReport[] }> {
  // heads and checkpoints first: rows written while the walk runs lie past the heads read here
  const verifier = new ChainVerifier(await source.chainCheckpoints(), await source.chainHeads(), source.chainOrder);
  let rows = 0;
  for await (const page of source.chainPages()) {
    rows += page.length;
    // the next row of the same chain, where the page holds it, tells a swap from a removal
    const nextOf = new Map<string, ChainedRow>();
    const next: (ChainedRow | undefined)[] = new Array(page.length);
    for (let i = page.length - 1; i >= 0; i--) {
      const chain = chainOf(page[i]!.instance);
      next[i] = nextOf.get(chain);
      nextOf.set(chain, page[i]!);
    }
    for (let i = 0; i < page.length; i++) verifier.check(page[i]!, next[i]);
  }
  return { rows, chains: verifier.finish() };
}
