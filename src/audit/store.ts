/**
 * The audit database: open (WAL, busy timeout, migrations), insert batches, query by
 * filter, follow, stats, prune in small batches, and export page by page. Several
 * processes use one file at once: a daemon writing, cron pruning, people tailing.
 */
import { open as openDatabase, type Database } from "sqlite";
import sqlite3 from "sqlite3";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { AuditLogFilter } from "./filter.js";
import { AuditStoreError, describeStoreError as describe } from "./errors.js";
import { GENERATING_MS, STATS_GROUPS, statsOf, whereOf, withTokensPerSecond, type AuditStats, type GroupRow, type GroupStats, type StatsGroup } from "./queries.js";
import { CHAIN_MIGRATION, COLUMNS, EXPORT_COLUMNS, MIGRATIONS, SCHEMA_VERSION, type AuditRecord, type AuditRow, type AuditStatus } from "./schema.js";
import { chainOf, chainRecords, linkExisting, linkOf, linkRowOf, exactNumber, type ChainCheckpoint, type ChainedRow, type ChainHead, type ChainView, type LinkRow } from "./chain.js";
import type { Seal } from "./seal.js";

export { AuditStoreError, STATS_GROUPS, whereOf, type AuditStats, type GroupStats, type StatsGroup };

const SELECT_COLUMNS = COLUMNS.join(", ");
/** the columns an insert writes: the record's (with the id the chain needs first) and the chain's */
const WRITE_COLUMNS = [...COLUMNS, "chain_seq", "chain_prev", "chain_link"];
/** columns that may hold a fraction: sent as [millionths] where they do (chain.ts, exactNumber) */
const NUMERIC = new Set(["timestamp", "duration_ms", "ttft_ms", "status_code", "prompt_tokens", "completion_tokens", "total_tokens", "tool_calls", "load_ms"]);
// one statement per batch: the batch travels as one JSON array of arrays and SQLite
// unpacks it, instead of one native round trip (or one bound parameter) per value;
// jsonb_each hands each row over as binary JSON, which ->> reads without parsing again
// (measured 1.5x faster than json_each)
const INSERT_SQL = `INSERT INTO audit_logs (${WRITE_COLUMNS.join(", ")})
  SELECT ${WRITE_COLUMNS.map((c, i) => (NUMERIC.has(c) ? `coalesce((value ->> '$[${i}][0]') / 1000000.0, value ->> ${i})` : `value ->> ${i}`)).join(", ")} FROM jsonb_each(?)`;
const CHAIN_SELECT = `SELECT ${SELECT_COLUMNS}, chain_seq, chain_prev, chain_link FROM audit_logs`;

// verify's pages (linkPages): SQLite renders each row's encoding (chain.ts, encodeRow) and
// hands a page over as one string, rows joined by char(2), fields by char(1):
//   chain_prev, chain_link, then the encoded columns in order: each run of text and integer
//   columns as one json_array(), each real column as its count of millionths
// (a JavaScript object of 24 properties per row, as chainPages() reads, costs three times
// the CPU of the whole check). It must say of every row exactly what linkRowOf() would, so
// a row goes the fast way only where its bytes cannot encode otherwise, and is otherwise
// read and checked the old way:
//   - text: SQLite's JSON string escapes are JSON.stringify()'s (every code point checked);
//     text that is not UTF-8 shows as U+FFFD once decoded, and such a row is read the old way
//   - a value SQLite writes into JSON as JavaScript would not: a real (SQLite's 15 digits,
//     always with a point), an integer past 2^53 (JavaScript reads it rounded) or a blob
//     (which json_array() may render as null or as JSON): the SQL sends blobs the old way, the
//     JavaScript accepts only null, strings and integers of 15 digits or fewer
//   - a real column: sent as K = round(x * 1e6) only where K / 1e6 is x exactly, in SQLite's
//     arithmetic (an IEEE division, as JavaScript's), and |x| < 1e9; JavaScript then makes
//     the same double by the same division (the writer stores fractions so: exactNumber).
//     Anything else in it (another real, text, a blob) is sent as 'x' and read the old way
//   - the links: text of 64 characters; chain_prev must be hex, and a row whose link does
//     not hold is read the old way, so that its report is the old one to the letter
const LINK_REALS = new Set<string>(["duration_ms", "ttft_ms", "load_ms"]);
const LINK_PIECES: (string[] | string)[] = [];
for (const c of [...COLUMNS, "chain_seq"]) {
  if (LINK_REALS.has(c)) LINK_PIECES.push(c);
  else if (typeof LINK_PIECES.at(-1) === "object") (LINK_PIECES.at(-1) as string[]).push(c);
  else LINK_PIECES.push([c]);
}
const millionths = (c: string) => `CAST(round(${c} * 1000000) AS INTEGER)`;
const LINK_ROW = `concat_ws(char(1), chain_prev, chain_link, ${LINK_PIECES.map((p) => (typeof p === "object" ? `json_array(${p.join(", ")})`
  : `CASE WHEN ${p} IS NULL THEN 'null' WHEN ${p} > -1e9 AND ${p} < 1e9 AND ${millionths(p)} / 1000000.0 = ${p} THEN ${millionths(p)} ELSE 'x' END`)).join(", ")})`;
// (c < x'' holds for every value but a blob, and NULL: blobs sort last)
const LINK_PLAIN = LINK_PIECES.flatMap((p) => (typeof p === "object" ? p : [])).map((c) => `(${c} IS NULL OR ${c} < x'')`).join(" AND ");
const LINK_PAGE_SQL = `SELECT max(id) AS last, count(*) AS n, group_concat(r, char(2)) AS text FROM (
  SELECT id, CASE WHEN ${LINK_PLAIN} AND typeof(chain_prev) = 'text' AND typeof(chain_link) = 'text' AND length(chain_prev) = 64 AND length(chain_link) = 64
    THEN ${LINK_ROW} ELSE id END AS r FROM audit_logs WHERE id > ? ORDER BY id LIMIT ?)`;
// the pieces after the links, checked as they are read: a value of a run is null, an
// integer JavaScript holds exactly, or a JSON string (escapes kept as they are)
const JSON_VALUE = String.raw`(?:null|-?\d{1,15}|"[^"\\]*(?:\\.[^"\\]*)*")`;
const INTEGER_OR_NULL = String.raw`(null|-?\d{1,15})`;
const linkGroups = { id: 0, instance: 0, seq: 0, pieces: [] as { group: number; real: boolean }[] };
let linkGroupCount = 0;
const LINK_LINE = new RegExp(LINK_PIECES.map((p) => {
  const group = ++linkGroupCount;
  linkGroups.pieces.push({ group, real: typeof p === "string" });
  if (typeof p === "string") return INTEGER_OR_NULL;
  return String.raw`\[(${p.map((c) => {
    if (c === "id") return (linkGroups.id = ++linkGroupCount, String.raw`(-?\d{1,15})`);
    if (c === "instance") return (linkGroups.instance = ++linkGroupCount, `(${JSON_VALUE})`);
    if (c === "chain_seq") return (linkGroups.seq = ++linkGroupCount, INTEGER_OR_NULL);
    return JSON_VALUE;
  }).join(",")})\]`;
}).join("\\x01") + "$", "y");
if (!linkGroups.id || !linkGroups.instance || !linkGroups.seq) throw new Error("the chain's encoding lacks id, instance or chain_seq");
/** Whether the line's first 64 characters are lowercase hex (chain_prev, as linkRowOf() asks). */
function hexPrev(line: string): boolean {
  for (let i = 0; i < 64; i++) {
    const c = line.charCodeAt(i);
    if (c > 102 || c < 48 || (c > 57 && c < 97)) return false;
  }
  return true;
}

/**
 * A real column as JSON.stringify() writes it, from its count of millionths K (SQLite's
 * integer text, |K| < 1e15): K / 1e6 in decimals, trailing zeros dropped. That is the
 * shortest text that reads back as the double K / 1e6 (a decimal of 15 significant digits
 * or fewer is the only one that short within half a unit of it), and JavaScript writes
 * such a number without an exponent (1e-6 <= |x| < 1e21): String(Number(K) / 1e6), unrounded.
 */
function realOfMillionths(k: string): string {
  if (k === "null") return k;
  const sign = k.charCodeAt(0) === 45 ? "-" : "";
  const digits = sign ? k.slice(1) : k;
  const whole = digits.length > 6 ? digits.slice(0, -6) : "0";
  let fraction = digits.length > 6 ? digits.slice(-6) : "000000".slice(digits.length) + digits;
  let end = 6;
  while (end > 0 && fraction.charCodeAt(end - 1) === 48) end--;
  if (end === 0) return sign + whole;
  if (end < 6) fraction = fraction.slice(0, end);
  return `${sign}${whole}.${fraction}`;
}

/**
 * The rows of one page as linkRowOf() would give them, from the string LINK_PAGE_SQL made;
 * null in place of a row to be read the old way; null for the whole page where its lines do
 * not match its count or come out of order (then it is read the old way).
 */
function linkRowsOfPage(text: string, count: number, chains: Map<string, string>): (LinkRow | null)[] | null {
  const lines = text.split("\x02");
  if (lines.length !== count) return null;
  const odd = text.includes("\uFFFD");
  const rows = new Array<LinkRow | null>(count);
  const pieces = linkGroups.pieces;
  let lastId = -Infinity;
  for (let i = 0; i < count; i++) {
    const line = lines[i]!;
    rows[i] = null;
    // a row SQLite did not render: its id alone
    if (line.charCodeAt(64) !== 1 || line.charCodeAt(129) !== 1) {
      const id = Number(line);
      if (!Number.isSafeInteger(id) || id <= lastId) return null;
      lastId = id;
      continue;
    }
    if (odd && line.includes("\uFFFD")) continue;
    if (!hexPrev(line)) continue;
    const prev = line.slice(0, 64);
    LINK_LINE.lastIndex = 130;
    const m = LINK_LINE.exec(line);
    if (m === null) continue;
    const id = Number(m[linkGroups.id]);
    if (id <= lastId) return null;
    lastId = id;
    let encoding = "[";
    for (let p = 0; p < pieces.length; p++) {
      const piece = m[pieces[p]!.group]!;
      encoding += (p === 0 ? "" : ",") + (pieces[p]!.real ? realOfMillionths(piece) : piece);
    }
    encoding += "]";
    const link = line.slice(65, 129);
    // a link that does not hold is read again the old way, for the old report to the letter
    if (linkOf(prev, encoding) !== link) continue;
    const instance = m[linkGroups.instance]!;
    let chain = chains.get(instance);
    if (chain === undefined) {
      if (chains.size > 1000) chains.clear();
      chains.set(instance, (chain = chainOf(JSON.parse(instance))));
    }
    const seq = m[linkGroups.seq]!;
    rows[i] = { id, chain, seq: seq === "null" ? null : Number(seq), prev, link, holds: true };
  }
  return rows;
}

/** One follower of the log: the rows after its cursor, each once, and a wait for more. */
export interface AuditFollower {
  after(afterId: number, filter: AuditLogFilter, limit?: number): Promise<AuditRow[]>;
  /** resolves when records may have been stored, after `ms` at the latest, or at once on `signal` */
  waitForChange(ms: number, signal?: AbortSignal): Promise<void>;
}

const GROUP_SQL: Record<StatsGroup, string> = {
  client: "client",
  model: "model",
  endpoint: "endpoint",
  day: "strftime('%Y-%m-%d', timestamp / 1000, 'unixepoch')",
};

export const BUSY_TIMEOUT_MS = 5000;

// Exports are rendered by SQLite itself, a page at a time into one string: building a
// JavaScript object per row and serializing it again costs several times more.
const ISO_TIME = "strftime('%Y-%m-%dT%H:%M:%fZ', timestamp / 1000.0, 'unixepoch')";
const TEXT_COLUMNS = new Set(["request_id", "model", "backend_type", "endpoint", "status", "error_type", "error_message", "client", "response_format", "instance"]);
// an empty text is quoted (""), so that it reads apart from a null (nothing)
const csvText = (c: string) =>
  `CASE WHEN ${c} IS NULL THEN '' WHEN ${c} = '' THEN '""' WHEN instr(${c}, '"') OR instr(${c}, ',') OR instr(${c}, char(10)) OR instr(${c}, char(13)) ` +
  `THEN '"' || replace(${c}, '"', '""') || '"' ELSE ${c} END`;
// the newest seal of the row's place in its chain (seal.ts, parseSealField)
const SEAL_SQL = `(SELECT key_id || '.' || epoch || '.' || sealed_at || '.' || tag FROM audit_seals s
   WHERE s.instance = coalesce(audit_logs.instance, '') AND s.seq = audit_logs.chain_seq ORDER BY s.epoch DESC LIMIT 1)`;
const exported = (c: (typeof EXPORT_COLUMNS)[number]) => (c === "chain_seal" ? SEAL_SQL : c);
const LINE_SQL = {
  json: `json_object(${EXPORT_COLUMNS.map((c) => `'${c}', ${c === "timestamp" ? ISO_TIME : c === "stream" ? "json(CASE WHEN stream THEN 'true' ELSE 'false' END)" : exported(c)}`).join(", ")})`,
  csv: EXPORT_COLUMNS.map((c) => (c === "timestamp" ? ISO_TIME : TEXT_COLUMNS.has(c) ? csvText(c) : `coalesce(${exported(c)}, '')`)).join(" || ',' || "),
};
export type LineFormat = keyof typeof LINE_SQL;

export class AuditStore {
  /** the files this store has open, to tell when the path names other ones (or none) */
  private files: Record<"main" | "-wal" | "-shm", FileId> = { main: undefined, "-wal": undefined, "-shm": undefined };

  /**
   * The last id and the chains' heads as this connection's last insert left them, good
   * while no other connection has committed since (PRAGMA data_version says): a writer
   * alone on its file reads neither again for each batch.
   */
  private known?: { version: number; last: number; heads: Map<string, ChainHead> };

  private constructor(private readonly db: Database, readonly path: string) {}

  /**
   * Opens (and with `create`, creates) the database and brings its schema up to date.
   * Returns undefined when the file does not exist and `create` is false.
   */
  static async open(path: string, { create = true } = {}): Promise<AuditStore | undefined> {
    if (!create && !existsSync(path)) return undefined;
    let db: Database;
    try {
      if (create) {
        mkdirSync(dirname(path), { recursive: true });
        setAsideOrphans(path);
      }
      db = await openDatabase({
        filename: path,
        driver: sqlite3.Database,
        mode: sqlite3.OPEN_READWRITE | (create ? sqlite3.OPEN_CREATE : 0),
      });
    } catch (error) {
      throw new AuditStoreError(`cannot open audit database ${path}: ${describe(error)}`, { cause: error });
    }
    const store = new AuditStore(db, path);
    try {
      await db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      await store.migrate();
      await db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
      // a first read opens the -wal and -shm files, so that they can be known as this store's
      await db.get("SELECT 1 FROM audit_logs LIMIT 1");
      store.files = { main: fileId(path), "-wal": fileId(`${path}-wal`), "-shm": fileId(`${path}-shm`) };
    } catch (error) {
      await db.close().catch(() => undefined);
      if (error instanceof AuditStoreError) throw error;
      throw new AuditStoreError(`cannot use audit database ${path}: ${describe(error)}`, { cause: error });
    }
    return store;
  }

  /** True when `path` no longer names the open file: it was deleted, or moved away (a log rotation by hand). */
  isDetached(): boolean {
    return !sameFile(fileId(this.path), this.files.main);
  }

  /**
   * Closes a store whose file was moved or deleted. SQLite never checkpoints a moved
   * database on close, so the records in its -wal file would stay there, under the old
   * name, and a new database at that name would take that file for its own (and be
   * corrupted). So the WAL is saved into the moved file first, then the -wal and -shm files
   * it left under the old name are removed, or set aside if they still hold anything.
   */
  async closeDetached(): Promise<void> {
    const [checkpoint] = await this.db.all<{ busy: number; log: number }[]>("PRAGMA wal_checkpoint(TRUNCATE)").catch(() => []);
    const saved = checkpoint !== undefined && checkpoint.busy === 0 && checkpoint.log <= 0;
    await this.db.close();
    for (const suffix of ["-wal", "-shm"] as const) {
      const leftover = `${this.path}${suffix}`;
      if (!sameFile(fileId(leftover), this.files[suffix])) continue;
      if (saved || suffix === "-shm") rmSync(leftover, { force: true });
      else setAside(leftover);
    }
  }

  private async migrate(): Promise<void> {
    const version = await this.userVersion();
    if (version > SCHEMA_VERSION) throw this.newerError(version);
    if (version === SCHEMA_VERSION) return;
    // IMMEDIATE: two processes opening a new database at once migrate it one after the other
    await this.db.exec("BEGIN IMMEDIATE");
    try {
      const current = await this.userVersion();
      if (current > SCHEMA_VERSION) throw this.newerError(current);
      if (current === 0) {
        const tables = await this.db.all<{ name: string }[]>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
        if (tables.length > 0) throw new AuditStoreError(`${this.path} is an SQLite database, but not an mlxs audit log; refusing to change it`);
      }
      for (let v = current; v < SCHEMA_VERSION; v++) await this.db.exec(MIGRATIONS[v]!);
      if (current < CHAIN_MIGRATION) await this.chainExisting();
      await this.db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      await this.db.exec("COMMIT");
    } catch (error) {
      await this.db.exec("ROLLBACK").catch(() => undefined);
      throw error;
    }
  }

  private async userVersion(): Promise<number> {
    return (await this.db.get<{ user_version: number }>("PRAGMA user_version"))!.user_version;
  }

  private newerError(version: number) {
    return new AuditStoreError(
      `${this.path} was written by a newer mlxs (audit schema ${version}; this mlxs knows up to ${SCHEMA_VERSION}): upgrade mlxs, or use another --db`,
    );
  }

  /**
   * Rows written before the chain began, chained in place in id order (inside the
   * migration's transaction: the chain begins whole, or not at all).
   */
  private async chainExisting(): Promise<void> {
    const heads = new Map<string, ChainHead>();
    for (let after = 0; ;) {
      const rows = await this.db.all<ChainedRow[]>(`${CHAIN_SELECT} WHERE id > ? ORDER BY id LIMIT 5000`, after);
      if (rows.length === 0) break;
      const updates = rows.map((row) => {
        const { seq, prev, link } = linkExisting(heads, row);
        return [row.id, seq, prev, link];
      });
      await this.db.run(
        `UPDATE audit_logs SET chain_seq = u.seq, chain_prev = u.prev, chain_link = u.link
           FROM (SELECT value ->> 0 AS id, value ->> 1 AS seq, value ->> 2 AS prev, value ->> 3 AS link FROM jsonb_each(?)) AS u
          WHERE audit_logs.id = u.id`, JSON.stringify(updates));
      after = rows[rows.length - 1]!.id as number;
    }
    await this.saveHeads(heads);
  }

  private async saveHeads(heads: Map<string, ChainHead>): Promise<void> {
    if (heads.size === 0) return;
    await this.db.run(
      `INSERT INTO audit_chain_heads (instance, seq, link, id) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(?) WHERE true
         ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, link = excluded.link, id = excluded.id`,
      JSON.stringify([...heads].map(([chain, h]) => [chain, h.seq, h.link, h.id])));
  }

  /** The head of every chain, as the last insert left it. */
  async chainHeads(): Promise<Map<string, ChainHead>> {
    const rows = await this.db.all<{ instance: string; seq: number; link: string; id: number | null }[]>("SELECT instance, seq, link, id FROM audit_chain_heads");
    return new Map(rows.map((r) => [r.instance, { seq: r.seq, link: r.link, id: r.id }]));
  }

  /** The last link each prune removed from each chain. */
  async chainCheckpoints(): Promise<Map<string, ChainCheckpoint>> {
    const rows = await this.db.all<{ instance: string; seq: number; link: string; id: number }[]>("SELECT instance, seq, link, id FROM audit_chain_checkpoints");
    return new Map(rows.map((r) => [r.instance, { seq: r.seq, link: r.link, id: r.id }]));
  }

  /** Every row with its chain columns, a page at a time in id order (keyset: flat memory). */
  async *chainPages(pageSize = 5_000): AsyncGenerator<ChainedRow[]> {
    for (let after = 0; ;) {
      const rows = await this.db.all<ChainedRow[]>(`${CHAIN_SELECT} WHERE id > ? ORDER BY id LIMIT ?`, after, pageSize);
      if (rows.length > 0) yield rows;
      if (rows.length < pageSize) return;
      after = rows[rows.length - 1]!.id as number;
    }
  }

  /**
   * Every row as the verifier walks it, its link checked, a page at a time in id order:
   * what chainPages() gives through linkRowOf(), at a third of the CPU (LINK_PAGE_SQL). The
   * next page is read while this one is checked (the reading is SQLite's, on its own thread).
   */
  async *linkPages(pageSize = 5_000): AsyncGenerator<LinkRow[]> {
    type Read = { page?: { last: number | null; n: number; text: string | null }; error?: unknown };
    const read = (after: number): Promise<Read> =>
      this.db.get<Read["page"]>(LINK_PAGE_SQL, after, pageSize).then((page) => ({ page }), (error: unknown) => ({ error }));
    const oldPage = (after: number) => this.db.all<ChainedRow[]>(`${CHAIN_SELECT} WHERE id > ? ORDER BY id LIMIT ?`, after, pageSize);
    const chains = new Map<string, string>();
    let next: Promise<Read> | undefined = read(0);
    try {
      for (let after = 0; next;) {
        const { page, error } = await next;
        next = undefined;
        let rows: LinkRow[];
        if (page && !error) {
          const count = page.n;
          if (count === 0) return;
          if (count === pageSize) next = read(page.last!);
          const fast = linkRowsOfPage(page.text ?? "", count, chains);
          if (fast && !fast.includes(null)) rows = fast as LinkRow[];
          else {
            // the same rows (one read transaction), the old way where the fast one cannot say
            const old = await oldPage(after);
            if (old.length !== count) throw new AuditStoreError(`audit log page after id ${after}: ${old.length} rows read, ${count} counted`);
            rows = old.map((row, i) => {
              const known = fast?.[i];
              if (!known) return linkRowOf(row);
              if (known.id !== row.id) throw new AuditStoreError(`audit log page after id ${after}: row ${i} is id ${row.id}, read as ${known.id}`);
              return known;
            });
          }
        } else {
          // a page SQLite could not render (an error in it): all of it the old way
          const old = await oldPage(after);
          if (old.length === 0) return;
          if (old.length === pageSize) next = read(old[old.length - 1]!.id as number);
          rows = old.map(linkRowOf);
        }
        yield rows;
        after = rows[rows.length - 1]!.id;
      }
    } finally {
      // a page read ahead is waited for: the read transaction ends after it
      await next;
    }
  }

  /** Stores a seal, in place of an earlier one of its chain's epoch (it covers more); false when a later one is there. */
  async insertSeal(seal: Seal): Promise<boolean> {
    const result = await this.db.run(
      `INSERT INTO audit_seals (instance, key_id, epoch, seq, link, id, sealed_at, tag) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (instance, key_id, epoch) DO UPDATE SET seq = excluded.seq, link = excluded.link, id = excluded.id, sealed_at = excluded.sealed_at, tag = excluded.tag
          WHERE excluded.seq >= audit_seals.seq`,
      seal.instance, seal.key_id, seal.epoch, seal.seq, seal.link, seal.id, seal.sealed_at, seal.tag);
    return (result.changes ?? 0) > 0;
  }

  /** Every seal, oldest first (a few a day per chain: they fit in memory). */
  async seals(): Promise<Seal[]> {
    return this.db.all<Seal[]>("SELECT instance, key_id, epoch, seq, link, id, sealed_at, tag FROM audit_seals ORDER BY sealed_at, instance, epoch");
  }

  /**
   * The chains as one moment left them, for verify: a read transaction (WAL keeps it whole
   * while writers go on), so rows written during the walk are not half seen.
   */
  async chainView(): Promise<ChainView> {
    await this.db.exec("BEGIN");
    try {
      await this.db.get("SELECT 1 FROM audit_chain_heads LIMIT 1");
    } catch (error) {
      await this.db.exec("ROLLBACK").catch(() => undefined);
      throw error;
    }
    return {
      chainOrder: "id",
      chainHeads: () => this.chainHeads(),
      chainCheckpoints: () => this.chainCheckpoints(),
      chainPages: () => this.chainPages(),
      linkPages: () => this.linkPages(),
      seals: () => this.seals(),
      end: () => this.db.exec("COMMIT").catch(() => undefined),
    };
  }

  /**
   * Inserts the records in one transaction, one row each (request ids may repeat), linked
   * into their chains. The transaction takes the write lock before it reads the chains'
   * heads (IMMEDIATE), so processes writing one file at once (a daemon and `mlxs chat`)
   * take turns and every chain stays whole; the row ids are minted here, under that lock,
   * as AUTOINCREMENT would (never given again), because each link covers its row's id.
   * Returns how many were stored.
   */
  async insert(records: readonly AuditRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    await this.db.exec("BEGIN IMMEDIATE");
    // taken, and put back only once this insert commits
    let known = this.known;
    this.known = undefined;
    try {
      const version = (await this.db.get<{ data_version: number }>("PRAGMA data_version"))!.data_version;
      if (known?.version !== version) {
        const last = (await this.db.get<{ n: number | null }>(
          "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'audit_logs'), 0), coalesce((SELECT max(id) FROM audit_logs), 0)) AS n"))!.n ?? 0;
        known = { version, last, heads: await this.chainHeads() };
      }
      const { last, heads } = known;
      const chained = chainRecords(records, records.map((_, i) => last + 1 + i), heads);
      const rows = chained.map(({ values, prev, link }) => {
        for (let i = 0; i < values.length; i++) {
          const v = values[i];
          // a fraction travels as its millionths, for SQLite to divide exactly as JavaScript did
          if (typeof v === "number" && !Number.isInteger(v)) {
            const exact = exactNumber(v);
            if (exact.scaled) values[i] = [exact.sent];
          }
        }
        values.push(prev, link);
        return values;
      });
      const result = await this.db.run(INSERT_SQL, JSON.stringify(rows));
      await this.saveHeads(heads);
      await this.db.exec("COMMIT");
      this.known = { version, last: last + records.length, heads };
      return result.changes ?? 0;
    } catch (error) {
      await this.db.exec("ROLLBACK").catch(() => undefined);
      throw error;
    }
  }

  async query(filter: AuditLogFilter): Promise<AuditRow[]> {
    const { where, params } = whereOf(filter);
    const direction = filter.order === "asc" ? "ASC" : "DESC";
    const rows = await this.db.all<RawRow[]>(
      `SELECT ${SELECT_COLUMNS} FROM audit_logs ${where} ORDER BY timestamp ${direction}, id ${direction} LIMIT ? OFFSET ?`,
      ...params, filter.limit ?? -1, filter.offset,
    );
    return rows.map(toRow);
  }

  /** Records stored after row `afterId`, oldest first: what `tail --follow` prints next. */
  async after(afterId: number, filter: AuditLogFilter, limit = 1000): Promise<AuditRow[]> {
    const { where, params } = whereOf(filter, [["id > ?", afterId]]);
    return (await this.db.all<RawRow[]>(`SELECT ${SELECT_COLUMNS} FROM audit_logs ${where} ORDER BY id ASC LIMIT ?`, ...params, limit)).map(toRow);
  }

  async lastId(): Promise<number> {
    return (await this.db.get<{ id: number | null }>("SELECT max(id) AS id FROM audit_logs"))?.id ?? 0;
  }

  /**
   * A follower (a `tail -f`, a `/v1/audit/stream`): an SQLite file's ids commit in order, so
   * a cursor is all it keeps, and a file has no one to say that it changed: it is polled.
   */
  follower(): AuditFollower {
    return {
      after: (afterId, filter, limit) => this.after(afterId, filter, limit),
      waitForChange: (ms, signal) => new Promise<void>((resolve) => {
        const done = () => { clearTimeout(timer); signal?.removeEventListener("abort", done); resolve(); };
        const timer = setTimeout(done, ms);
        signal?.addEventListener("abort", done, { once: true });
      }),
    };
  }

  /**
   * Every record the filter selects as text lines (JSON objects or CSV rows), a page at a
   * time joined by `separator`, in row order. Keyset pagination keeps memory flat however
   * many rows there are, and no row comes twice while others are written or pruned.
   */
  async *exportPages(filter: AuditLogFilter, format: LineFormat, separator: string, pageSize = 2_000): AsyncGenerator<{ text: string; count: number }> {
    const direction = filter.order === "asc" ? "ASC" : "DESC";
    yield* keysetPages(filter, pageSize, (after, size, offset) => {
      const { where, params } = whereOf(filter, [after]);
      return this.db.get<ExportPage>(
        `SELECT ${direction === "ASC" ? "max" : "min"}(id) AS last, count(*) AS n, group_concat(line, ?) AS text
           FROM (SELECT id, ${LINE_SQL[format]} AS line FROM audit_logs ${where} ORDER BY id ${direction} LIMIT ? OFFSET ?)`,
        separator, ...params, size, offset,
      );
    });
  }

  async stats(filter: AuditLogFilter): Promise<AuditStats> {
    const { where, params } = whereOf(filter);
    const groups = async (column: string) => Object.fromEntries(
      (await this.db.all<{ key: string | null; n: number }[]>(`SELECT ${column} AS key, count(*) AS n FROM audit_logs ${where} GROUP BY ${column} ORDER BY n DESC, key`, ...params))
        .map((r) => [r.key ?? "(none)", r.n]),
    );
    const totals = (await this.db.get<Record<string, number | null>>(
      `SELECT count(*) AS total, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion, sum(total_tokens) AS tokens,
              sum(status = 'error') AS errors, min(timestamp) AS first, max(timestamp) AS last,
              sum(CASE WHEN completion_tokens > 0 THEN completion_tokens END) AS generated,
              sum(CASE WHEN completion_tokens > 0 THEN ${GENERATING_MS} END) AS generating_ms
         FROM audit_logs ${where}`, ...params))!;
    return statsOf(totals, groups, async (offset) => (await this.db.get<{ d: number }>(
      `SELECT duration_ms AS d FROM audit_logs ${where} ORDER BY duration_ms LIMIT 1 OFFSET ?`, ...params, offset))!.d);
  }

  /**
   * Usage per group (an API key, a model, an endpoint, a UTC day): requests, errors, tokens,
   * and the p50 and p95 durations (the nearest-rank percentile, as stats() takes them), most
   * requests first.
   */
  async statsBy(filter: AuditLogFilter, by: StatsGroup): Promise<GroupStats[]> {
    const { where, params } = whereOf(filter);
    const key = GROUP_SQL[by];
    return (await this.db.all<GroupRow[]>(
      `WITH g AS (
         SELECT ${key} AS k, duration_ms AS d, status, prompt_tokens, completion_tokens, ${GENERATING_MS} AS gen,
                row_number() OVER (PARTITION BY ${key} ORDER BY duration_ms) AS rn, count(*) OVER (PARTITION BY ${key}) AS n
           FROM audit_logs ${where})
       SELECT coalesce(k, '(none)') AS key, count(*) AS requests, sum(status = 'error') AS errors,
              coalesce(sum(prompt_tokens), 0) AS prompt_tokens, coalesce(sum(completion_tokens), 0) AS completion_tokens,
              min(CASE WHEN rn * 100 >= 50 * n THEN d END) AS p50_ms, min(CASE WHEN rn * 100 >= 95 * n THEN d END) AS p95_ms,
              sum(CASE WHEN completion_tokens > 0 THEN completion_tokens END) AS generated,
              sum(CASE WHEN completion_tokens > 0 THEN gen END) AS generating_ms
         FROM g GROUP BY k ORDER BY requests DESC, key`,
      ...params,
    )).map(withTokensPerSecond);
  }

  async countOlderThan(before: number): Promise<number> {
    return (await this.db.get<{ n: number }>("SELECT count(*) AS n FROM audit_logs WHERE timestamp < ?", before))!.n;
  }

  /**
   * Deletes records older than `before` in batches of `batchSize`, each its own short
   * transaction, yielding between them so a daemon's writer gets the lock in between.
   */
  async prune(before: number, { batchSize = 10_000 } = {}): Promise<number> {
    // a prune rewrites many pages: a bigger page cache, and one checkpoint at the end rather
    // than one every thousand pages, keep it from fsyncing its way through the deletion
    await this.db.exec("PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 0");
    let deleted = 0;
    try {
      await this.checkpoint(before);
      for (;;) {
        const { changes } = await this.db.run(
          "DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs WHERE timestamp < ? ORDER BY timestamp LIMIT ?)", before, batchSize,
        );
        deleted += changes ?? 0;
        if ((changes ?? 0) < batchSize) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      await this.db.exec("PRAGMA wal_autocheckpoint = 1000; PRAGMA cache_size = -2000");
      if (deleted > 0) await this.db.exec("PRAGMA wal_checkpoint(PASSIVE)");
    }
    return deleted;
  }

  /**
   * Before a prune: for each chain, the newest row it will delete becomes the chain's
   * checkpoint (in one transaction, before any row goes), so the rows left verify from it.
   * A row older than the checkpoint that the prune keeps (its request began after the
   * cutoff but was written before a pruned one) is skipped by verify until a later prune.
   */
  private async checkpoint(before: number): Promise<void> {
    await this.db.run(
      `INSERT INTO audit_chain_checkpoints (instance, seq, link, id, pruned_at)
         SELECT coalesce(instance, ''), chain_seq, chain_link, id, ? FROM audit_logs
          WHERE id IN (SELECT max(id) FROM audit_logs WHERE timestamp < ? GROUP BY coalesce(instance, '')) AND chain_link IS NOT NULL
         ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, link = excluded.link, id = excluded.id, pruned_at = excluded.pruned_at
          WHERE excluded.id > audit_chain_checkpoints.id`,
      Date.now(), before);
  }

  /** Gives the space of deleted records back to the file system (takes the write lock while it runs). */
  async vacuum(): Promise<void> {
    await this.db.exec("VACUUM");
    await this.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

interface RawRow extends Omit<AuditRow, "stream" | "status"> {
  stream: number;
  status: string;
}

function toRow(raw: RawRow): AuditRow {
  return { ...raw, status: raw.status as AuditStatus, stream: raw.stream === 1 };
}

/** One page of an export: the last id in it, its row count, its lines joined. */
interface ExportPage {
  last: number | null;
  n: number;
  text: string | null;
}

/**
 * Keyset pagination by id: each page starts past the last id of the one before, so memory
 * stays flat however many rows there are, and no row comes twice while others are written
 * or pruned. `page` runs one page's query, given the condition on id, the page size and
 * (for the first page only) the filter's offset. (PostgreSQL's store pages by the same
 * keys, with pages rendered ahead: pg-store.ts.)
 */
async function* keysetPages(
  filter: AuditLogFilter, pageSize: number,
  page: (after: [string, number], size: number, offset: number) => Promise<ExportPage | undefined>,
): AsyncGenerator<{ text: string; count: number }> {
  const ascending = filter.order === "asc";
  let cursor = ascending ? 0 : Number.MAX_SAFE_INTEGER;
  let remaining = filter.limit ?? Infinity;
  let offset = filter.offset;
  while (remaining > 0) {
    const size = Math.min(pageSize, remaining);
    const got = await page([ascending ? "id > ?" : "id < ?", cursor], size, offset);
    if (!got || got.n === 0 || got.last === null) return;
    offset = 0;
    cursor = got.last;
    remaining -= got.n;
    yield { text: got.text ?? "", count: got.n };
    if (got.n < size) return;
  }
}

type FileId = { dev: number; ino: number } | undefined;

function fileId(path: string): FileId {
  try {
    const { dev, ino } = statSync(path);
    return { dev, ino };
  } catch {
    return undefined;
  }
}

function sameFile(a: FileId, b: FileId): boolean {
  return a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino;
}

/**
 * A -wal or -shm file without its database belongs to one that was moved or deleted while
 * open. A new database created beside them would adopt them and be corrupted, so they go
 * first: the -shm file (only an index) is removed, a -wal file that holds anything is kept
 * under another name.
 */
function setAsideOrphans(path: string): void {
  if (existsSync(path)) return;
  rmSync(`${path}-shm`, { force: true });
  const wal = `${path}-wal`;
  try {
    if (statSync(wal).size === 0) rmSync(wal, { force: true });
    else setAside(wal);
  } catch {
    // no -wal file: nothing to set aside
  }
}

function setAside(path: string): void {
  try {
    renameSync(path, `${path}.orphaned-${new Date().toISOString().replace(/[:.]/g, "-")}`);
  } catch {
    // gone already (another process set it aside first)
  }
}
