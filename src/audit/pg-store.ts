/**
 * The audit log on PostgreSQL: one database for a fleet of daemons. The same operations as
 * the SQLite store (store.ts), answering with the same rows and the same export bytes, so
 * that every command and route works unchanged on either.
 *
 * - The table is partitioned by UTC day (declarative range partitions, made as records for
 *   a new day arrive), so that prune drops whole days and deletes only inside the oldest
 *   partial one.
 * - A batch is one multi-row INSERT (columns as arrays, unnested), and tells followers
 *   through NOTIFY in the same statement: `tail -f` wakes on it rather than polling.
 * - Row ids come from one sequence, but writers commit in their own order: a follower
 *   looks back over recent ids and skips those it has already given (after()).
 * - The password never leaves this file: locations are shown without it, and errors are
 *   PostgreSQL's own (which never quote it).
 */
import pg from "pg";
import type { AuditLogFilter } from "./filter.js";
import { AuditStoreError, describePgError } from "./errors.js";
import { COLUMNS, EXPORT_COLUMNS, type AuditRecord, type AuditRow, type AuditStatus } from "./schema.js";
import { chainOf, chainRecords, linkExisting, genesisLink, linkOf, linkRowOf, type ChainCheckpoint, type ChainedRow, type ChainHead, type ChainView, type LinkRow } from "./chain.js";
import type { Seal } from "./seal.js";
import { GENERATING_MS, statsOf, whereOf, withTokensPerSecond, type AuditStats, type GroupStats, type StatsGroup } from "./queries.js";
import type { LineFormat } from "./store.js";

const DAY_MS = 86_400_000;
/** the pool, or one of its connections inside a transaction */
type Queryable = Pick<pg.Pool, "query">;
const CHANNEL = "mlxs_audit";
/** how far back (in ids) a follower looks for records that committed after later ones */
const LOOKBACK_IDS = 5_000;
/**
 * Export pages rendered ahead of the one being read: 3 exported 1.1x as fast as 2 on two
 * cores. With the export's page-boundary query, a follower's LISTEN and the writer, the
 * pool's six connections leave one free.
 */
const PAGES_AHEAD = 3;
const TYPES: Record<string, string> = {
  id: "bigint", chain_seq: "bigint", chain_prev: "text", chain_link: "text",
  request_id: "text", timestamp: "bigint", model: "text", backend_type: "text", endpoint: "text", duration_ms: "float8", ttft_ms: "float8",
  status: "text", status_code: "int", prompt_tokens: "int", completion_tokens: "int", total_tokens: "int", error_type: "text",
  error_message: "text", stream: "smallint", client: "text", tool_calls: "int", response_format: "text", load_ms: "float8", instance: "text",
};
/** a row as the chain reads it: its columns, then its chain's */
const CHAIN_SELECT = `SELECT ${COLUMNS.join(", ")}, chain_seq, chain_prev, chain_link FROM audit_logs`;
/** a chain's rows in its order: by chain, then place (id and time make the key unique, for keyset pages) */
const CHAIN_KEY = "coalesce(instance, ''), coalesce(chain_seq, 0), id, timestamp";

// verify's pages (linkPages): PostgreSQL sends each row as one text, fields joined by
// chr(1): chain_prev, chain_link, then every encoded column (chain.ts, encodeRow) in order
// as its text, a text column's behind a '"' and a null as nothing. One field per row reads
// in a quarter of the time node-postgres takes for 24. JavaScript reads each field as
// node-postgres's parser for its type would (the store's: Number for a bigint, parseFloat
// for a float8, parseInt for an int or a smallint) and writes the encoding as encodeRow()
// does (JSON.stringify of the values in order), so each row is the old reader's to the letter.
// A row whose field count is off (text holding chr(1)), whose chain_prev is not 64
// lowercase hex characters or whose link does not hold is read the old way; the whole walk
// is, where a column's type is not the one the schema gave it.
const LINK_COLUMNS = [...COLUMNS, "chain_seq"] as const;
const LINK_FIELDS = 2 + LINK_COLUMNS.length;
const LINK_ROW_SQL = `concat_ws(chr(1), coalesce(chain_prev, ''), coalesce(chain_link, ''), ${LINK_COLUMNS.map((c) =>
  (TYPES[c] === "text" ? `coalesce('"' || ${c}, '')` : `coalesce(${c}::text, '')`)).join(", ")})`;
/** how a field is read: 0 text, 1 bigint (Number), 2 float8 (parseFloat), 3 int or smallint (parseInt) */
const LINK_KINDS = LINK_COLUMNS.map((c) => (TYPES[c] === "text" ? 0 : TYPES[c] === "bigint" ? 1 : TYPES[c] === "float8" ? 2 : 3));
const LINK_AT = { id: 2 + LINK_COLUMNS.indexOf("id"), timestamp: 2 + LINK_COLUMNS.indexOf("timestamp"), instance: 2 + LINK_COLUMNS.indexOf("instance"), seq: 2 + LINK_COLUMNS.indexOf("chain_seq") };
/** The OIDs of the types the schema gives the chain's columns (pg_type). */
const TYPE_OIDS: Record<string, number> = { bigint: 20, smallint: 21, int: 23, text: 25, float8: 701 };

/** Whether a text is 64 lowercase hex characters (chain_prev, as linkRowOf() asks). */
function hex64(text: string): boolean {
  if (text.length !== 64) return false;
  for (let i = 0; i < 64; i++) {
    const c = text.charCodeAt(i);
    if (c > 102 || c < 48 || (c > 57 && c < 97)) return false;
  }
  return true;
}

/** The value node-postgres reads from a field (as the store configures it). */
function fieldValue(field: string, kind: number): unknown {
  if (field === "") return null;
  switch (kind) {
    case 0: return field.slice(1);
    case 1: return Number(field);
    case 2: return parseFloat(field);
    default: return parseInt(field, 10);
  }
}

/** The keyset key of chainPages()'s order (CHAIN_KEY) of a line, where its fields are whole. */
function linkKey(line: string): string[] | undefined {
  const f = line.split("\x01");
  if (f.length !== LINK_FIELDS) return undefined;
  const instance = f[LINK_AT.instance]!;
  return [instance.slice(1), f[LINK_AT.seq] || "0", f[LINK_AT.id]!, f[LINK_AT.timestamp]!];
}

/** The rows of one page as linkRowOf() would give them; null in place of a row to read the old way. */
function linkRowsOfLines(lines: readonly string[], chains: Map<string, string>): (LinkRow | null)[] {
  const rows = new Array<LinkRow | null>(lines.length);
  for (let i = 0; i < lines.length; i++) {
    rows[i] = null;
    const f = lines[i]!.split("\x01");
    if (f.length !== LINK_FIELDS) continue;
    const prev = f[0]!;
    const link = f[1]!;
    if (!hex64(prev)) continue;
    // the values in encodeRow()'s order, as encodeRow() writes them
    const values = new Array<unknown>(LINK_KINDS.length);
    for (let k = 0; k < LINK_KINDS.length; k++) values[k] = fieldValue(f[2 + k]!, LINK_KINDS[k]!);
    if (linkOf(prev, JSON.stringify(values)) !== link) continue;
    const instance = f[LINK_AT.instance]!;
    let chain = chains.get(instance);
    if (chain === undefined) {
      if (chains.size > 1000) chains.clear();
      chains.set(instance, (chain = instance.slice(1)));
    }
    const seq = f[LINK_AT.seq]!;
    rows[i] = { id: Number(f[LINK_AT.id]), chain, seq: seq === "" ? null : Number(seq), prev, link, holds: true };
  }
  return rows;
}

/** The schema as numbered migrations; mlxs_audit_schema holds the number applied. */
export const MIGRATIONS: readonly string[] = [
  `CREATE SEQUENCE audit_logs_id_seq;
   CREATE TABLE audit_logs (
     id                bigint  NOT NULL DEFAULT nextval('audit_logs_id_seq'),
     request_id        text    NOT NULL,
     timestamp         bigint  NOT NULL,
     model             text,
     backend_type      text,
     endpoint          text    NOT NULL,
     duration_ms       float8  NOT NULL,
     ttft_ms           float8,
     status            text    NOT NULL CHECK (status IN ('success', 'error', 'timeout', 'cancelled')),
     status_code       int,
     prompt_tokens     int,
     completion_tokens int,
     total_tokens      int,
     error_type        text,
     error_message     text    CHECK (error_message IS NULL OR length(error_message) <= 500),
     stream            smallint NOT NULL DEFAULT 0,
     client            text,
     tool_calls        int,
     response_format   text    CHECK (response_format IN ('text', 'json_object', 'json_schema')),
     load_ms           float8,
     instance          text,
     UNIQUE (request_id, timestamp)
   ) PARTITION BY RANGE (timestamp);
   CREATE INDEX audit_logs_id ON audit_logs (id);
   CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp);
   CREATE INDEX audit_logs_model_timestamp ON audit_logs (model, timestamp);
   CREATE INDEX audit_logs_status_timestamp ON audit_logs (status, timestamp);`,
  // 2: one row per request, whatever its X-Request-ID: the row's identity is its id, from
  // the sequence, minted before the insert (unique with the partition key, as PostgreSQL
  // requires of a partitioned table), so a batch tried again is not stored twice;
  // request_id is what the client sent (or what mlxs made for it), searchable but not
  // unique (a retry that reused an id, landing on the same millisecond, was skipped)
  `DO $$ DECLARE c text; BEGIN
     FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'audit_logs'::regclass AND contype = 'u' LOOP
       EXECUTE format('ALTER TABLE audit_logs DROP CONSTRAINT %I', c);
     END LOOP;
   END $$;
   CREATE INDEX audit_logs_request_id ON audit_logs (request_id);
   DROP INDEX audit_logs_id;
   CREATE UNIQUE INDEX audit_logs_id ON audit_logs (id, timestamp);`,
  // 3: the hash chain (chain.ts), as on SQLite: each row's place in its instance's chain,
  // the link before it and its own; each chain's head, which an insert locks (FOR UPDATE)
  // while it links its rows, so daemons writing one database each keep their chain whole;
  // the last link a prune removed from each chain. Rows already there are chained in place
  // as the migration runs (chainExisting), in id order. Ids are minted before the lock, so
  // a chain's order is not its id order across writers: verify walks the chain key's index.
  `ALTER TABLE audit_logs ADD COLUMN chain_seq bigint, ADD COLUMN chain_prev text, ADD COLUMN chain_link text;
   CREATE TABLE audit_chain_heads (
     instance text PRIMARY KEY,
     seq      bigint NOT NULL,
     link     text   NOT NULL,
     id       bigint
   );
   CREATE TABLE audit_chain_checkpoints (
     instance  text PRIMARY KEY,
     seq       bigint NOT NULL,
     link      text   NOT NULL,
     id        bigint NOT NULL,
     pruned_at bigint NOT NULL
   );
   CREATE INDEX audit_logs_chain ON audit_logs ((coalesce(instance, '')), (coalesce(chain_seq, 0)), id, timestamp);`,
  // 4: seals (seal.ts), as on SQLite: one per chain, key and epoch, found by place
  `CREATE TABLE audit_seals (
     instance  text   NOT NULL,
     key_id    text   NOT NULL,
     epoch     bigint NOT NULL,
     seq       bigint NOT NULL,
     link      text   NOT NULL,
     id        bigint,
     sealed_at bigint NOT NULL,
     tag       text   NOT NULL,
     PRIMARY KEY (instance, key_id, epoch)
   );
   CREATE INDEX audit_seals_place ON audit_seals (instance, seq);`,
];

/** The migration that began the hash chain: rows older than it are chained when it runs. */
const PG_CHAIN_MIGRATION = 3;

// Export lines rendered by PostgreSQL, byte for byte as SQLite renders them: a REAL with
// no fraction keeps its ".0", times are ISO-8601 with milliseconds, CSV quotes as RFC 4180.
const REAL_COLUMNS = new Set(["duration_ms", "ttft_ms", "load_ms"]);
const TEXT_COLUMNS = new Set(["request_id", "model", "backend_type", "endpoint", "status", "error_type", "error_message", "client", "response_format", "instance"]);
const realText = (c: string) => `CASE WHEN ${c} = trunc(${c}) AND abs(${c}) < 1e15 THEN trunc(${c})::bigint::text || '.0' ELSE ${c}::text END`;
const ISO_TIME = `to_char(timestamp 'epoch' + timestamp * interval '1 millisecond', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
// an empty text is quoted (""), so that it reads apart from a null (nothing)
const csvText = (c: string) =>
  `CASE WHEN ${c} IS NULL THEN '' WHEN ${c} = '' THEN '""' WHEN strpos(${c}, '"') > 0 OR strpos(${c}, ',') > 0 OR strpos(${c}, chr(10)) > 0 OR strpos(${c}, chr(13)) > 0 ` +
  `THEN '"' || replace(${c}, '"', '""') || '"' ELSE ${c} END`;
// the newest seal of the row's place in its chain (seal.ts, parseSealField); links and seals are hex, never escaped
const SEAL_SQL = `(SELECT key_id || '.' || epoch || '.' || sealed_at || '.' || tag FROM audit_seals s
   WHERE s.instance = coalesce(audit_logs.instance, '') AND s.seq = audit_logs.chain_seq ORDER BY s.epoch DESC LIMIT 1)`;
const HEX_COLUMNS: Record<string, string> = { chain_prev: "chain_prev", chain_link: "chain_link", chain_seal: SEAL_SQL };
const jsonValue = (c: string, text: (c: string) => string) =>
  c in HEX_COLUMNS ? `coalesce('"' || ${HEX_COLUMNS[c]} || '"', 'null')`
  : c === "timestamp" ? `'"' || ${ISO_TIME} || '"'`
  : c === "stream" ? `CASE WHEN stream <> 0 THEN 'true' ELSE 'false' END`
  : `coalesce(${REAL_COLUMNS.has(c) ? realText(c) : TEXT_COLUMNS.has(c) ? text(c) : `${c}::text`}, 'null')`;
const jsonLine = (text: (c: string) => string) => `'{' || ${EXPORT_COLUMNS.map((c) => `'"${c}":' || ${jsonValue(c, text)}`).join(" || ',' || ")} || '}'`;
const LINE_SQL: Record<LineFormat, string> = {
  // most lines hold no text that needs escaping: one test of all of it decides, and they
  // quote it directly (to_json on every text takes twice as long, a test per text a fifth more)
  json: `CASE WHEN concat(${[...TEXT_COLUMNS].join(", ")}) ~ '["\\\\\\x01-\\x1f]' THEN ${jsonLine((c) => `to_json(${c})::text`)} ELSE ${jsonLine((c) => `'"' || ${c} || '"'`)} END`,
  csv: EXPORT_COLUMNS.map((c) => (c === "timestamp" ? ISO_TIME : TEXT_COLUMNS.has(c) ? csvText(c) : `coalesce(${c in HEX_COLUMNS ? HEX_COLUMNS[c] : REAL_COLUMNS.has(c) ? realText(c) : `${c}::text`}, '')`)).join(" || ',' || "),
};
const GROUP_SQL: Record<StatsGroup, string> = {
  client: "client", model: "model", endpoint: "endpoint",
  day: `to_char(timestamp 'epoch' + timestamp * interval '1 millisecond', 'YYYY-MM-DD')`,
};

/** A location as it may be shown: without its password. */
export function shownLocation(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "";
    return parsed.toString().replace(/:@/, "@");
  } catch {
    return "postgres://(unparseable URL)";
  }
}

/**
 * A client that closes its socket when it fails to connect. pg leaves it open when the
 * failure is on this side (SCRAM asks for a password that was given nowhere): the server
 * waits a minute for an answer, and a command that has said why it failed cannot exit.
 */
class ClosingClient extends pg.Client {
  override connect(): Promise<void>;
  override connect(callback: (error: Error) => void): void;
  override connect(callback?: (error: Error) => void): Promise<void> | void {
    const close = () => (this as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    if (!callback) return super.connect().catch((error: unknown) => { close(); throw error; });
    super.connect((error) => {
      if (error) close();
      callback(error);
    });
  }
}

export class PgAuditStore {
  /** day partitions known to exist (their first millisecond) */
  private readonly partitions = new Set<number>();
  /** one LISTEN connection wakes every follower of this store that waits */
  private listener?: Promise<pg.PoolClient>;
  private readonly wakers = new Set<() => void>();
  /** the follower of after() called on the store itself */
  private own?: PgFollower;

  private constructor(private readonly pool: pg.Pool, readonly path: string) {}

  /** Connects, and (with `create`) brings the schema up to date; undefined when there is no log yet and `create` is false. */
  static async open(url: string, { create = true } = {}): Promise<PgAuditStore | undefined> {
    const pool = new pg.Pool({
      connectionString: url, max: 6, application_name: "mlxs", connectionTimeoutMillis: 10_000, Client: ClosingClient,
      // ids and times are bigints well inside a double's exact range
      types: { getTypeParser: ((oid: number, format?: string) => (oid === 20 || oid === 1700 ? Number : pg.types.getTypeParser(oid, format as "text"))) as typeof pg.types.getTypeParser },
    });
    // a connection the server dropped while idle (a restart): the next query makes a new one
    pool.on("error", () => undefined);
    const store = new PgAuditStore(pool, shownLocation(url));
    try {
      if (!(await store.migrate(create))) {
        await pool.end();
        return undefined;
      }
    } catch (error) {
      await pool.end().catch(() => undefined);
      if (error instanceof AuditStoreError) throw error;
      throw new AuditStoreError(`cannot use audit database ${store.path}: ${describePgError(error)}`, { cause: error });
    }
    return store;
  }

  /**
   * A client of the pool for work of several statements. While it is out, a connection the
   * server drops (a restart) is an error of the statement under way, never an unhandled
   * 'error' event that would end the process.
   */
  private async checkout(): Promise<pg.PoolClient & { done(): void }> {
    const client = await this.pool.connect();
    const ignore = () => undefined;
    client.on("error", ignore);
    return Object.assign(client, { done: () => { client.off("error", ignore); client.release(); } });
  }

  /** A database is never moved away under a daemon as a file can be. */
  isDetached(): boolean {
    return false;
  }

  async closeDetached(): Promise<void> {
    await this.close();
  }

  /** False when there is no log and `create` is false. */
  private async migrate(create: boolean): Promise<boolean> {
    const client = await this.checkout();
    try {
      const exists = (await client.query("SELECT to_regclass('mlxs_audit_schema') IS NOT NULL AS e")).rows[0].e as boolean;
      if (!exists && !create) return false;
      await client.query("BEGIN");
      // two daemons starting at once migrate one after the other
      await client.query("SELECT pg_advisory_xact_lock(hashtext('mlxs_audit_migrate'))");
      await client.query("CREATE TABLE IF NOT EXISTS mlxs_audit_schema (version int NOT NULL)");
      const version = (await client.query("SELECT max(version) AS v FROM mlxs_audit_schema")).rows[0].v as number | null ?? 0;
      if (version > MIGRATIONS.length) {
        throw new AuditStoreError(`${this.path} was written by a newer mlxs (audit schema ${version}; this mlxs knows up to ${MIGRATIONS.length}): upgrade mlxs, or use another --db`);
      }
      for (let v = version; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v]!);
      if (version < PG_CHAIN_MIGRATION) await chainExisting(client);
      if (version < MIGRATIONS.length) await client.query("INSERT INTO mlxs_audit_schema (version) VALUES ($1)", [MIGRATIONS.length]);
      await client.query("COMMIT");
      return true;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.done();
    }
  }

  /**
   * Inserts the records in one transaction, one row each (request ids may repeat). Each
   * record's row id is minted before its first try and kept with it: when a connection
   * breaks after the commit but before its answer (a restart), the writer tries the batch
   * again and the rows already stored are known by their ids, not stored twice. Returns how
   * many of the records the database holds now.
   *
   * The rows are linked into their chains (chain.ts) inside the transaction that holds their
   * chains' heads: a record stored by an earlier try is found there and left out, so no
   * record is chained twice and no link is skipped.
   */
  async insert(records: readonly AuditRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    await this.ensurePartitions(records);
    const retried = records.some((r) => minted.has(r));
    const fresh = records.filter((r) => !minted.has(r));
    if (fresh.length > 0) {
      const ids = (await this.pool.query("SELECT nextval('audit_logs_id_seq') AS id FROM generate_series(1, $1)", [fresh.length])).rows.map((r) => r.id as number);
      ids.sort((a, b) => a - b).forEach((id, i) => minted.set(fresh[i]!, id));
    }
    const chains = [...new Set(records.map((r) => chainOf(r.instance)))].sort();
    const client = await this.checkout();
    try {
      await client.query("BEGIN");
      // the heads of the batch's chains, locked (in one order: two writers never deadlock)
      // until the commit: another writer of these chains waits here, and links after it
      await client.query(
        "INSERT INTO audit_chain_heads (instance, seq, link, id) SELECT c, 0, g, NULL FROM unnest($1::text[], $2::text[]) AS u(c, g) ORDER BY c ON CONFLICT (instance) DO NOTHING",
        [chains, chains.map(genesisLink)],
      );
      const heads = new Map<string, ChainHead>();
      for (const h of (await client.query("SELECT instance, seq, link, id FROM audit_chain_heads WHERE instance = ANY($1) ORDER BY instance FOR UPDATE", [chains])).rows) {
        heads.set(h.instance as string, { seq: h.seq as number, link: h.link as string, id: h.id as number | null });
      }
      // records tried before (a commit whose answer was lost) that are stored: never chained twice
      let todo = records;
      if (retried) {
        const stored = new Set((await client.query("SELECT id FROM audit_logs WHERE id = ANY($1::bigint[])", [records.map((r) => minted.get(r)!)])).rows.map((r) => r.id as number));
        todo = records.filter((r) => !stored.has(minted.get(r)!));
      }
      if (todo.length > 0) {
        const chained = chainRecords(todo, todo.map((r) => minted.get(r)!), heads);
        const columns = [...COLUMNS, "chain_seq"].map((_, k) => chained.map((c) => c.values[k]));
        const moved = [...heads];
        await client.query(
          `WITH stored AS (
             INSERT INTO audit_logs (${COLUMNS.join(", ")}, chain_seq, chain_prev, chain_link)
             SELECT * FROM unnest(${[...COLUMNS, "chain_seq", "chain_prev", "chain_link"].map((c, i) => `$${i + 1}::${TYPES[c]}[]`).join(", ")})
             RETURNING 1),
           moved AS (
             UPDATE audit_chain_heads h SET seq = u.seq, link = u.link, id = u.id
               FROM unnest($${COLUMNS.length + 4}::text[], $${COLUMNS.length + 5}::bigint[], $${COLUMNS.length + 6}::text[], $${COLUMNS.length + 7}::bigint[]) AS u(instance, seq, link, id)
              WHERE h.instance = u.instance)
           SELECT pg_notify('${CHANNEL}', count(*)::text) FROM stored`,
          [
            ...columns, chained.map((c) => c.prev), chained.map((c) => c.link),
            moved.map(([c]) => c), moved.map(([, h]) => h.seq), moved.map(([, h]) => h.link), moved.map(([, h]) => h.id),
          ],
        );
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.done();
    }
    return records.length;
  }

  /** Stores a seal, in place of an earlier one of its chain's epoch (it covers more); false when a later one is there. */
  async insertSeal(seal: Seal): Promise<boolean> {
    const result = await this.pool.query(
      `INSERT INTO audit_seals (instance, key_id, epoch, seq, link, id, sealed_at, tag) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (instance, key_id, epoch) DO UPDATE SET seq = excluded.seq, link = excluded.link, id = excluded.id, sealed_at = excluded.sealed_at, tag = excluded.tag
          WHERE excluded.seq >= audit_seals.seq`,
      [seal.instance, seal.key_id, seal.epoch, seal.seq, seal.link, seal.id, seal.sealed_at, seal.tag]);
    return (result.rowCount ?? 0) > 0;
  }

  /** Every seal, oldest first (a few a day per chain: they fit in memory). */
  async seals(q: Queryable = this.pool): Promise<Seal[]> {
    return (await q.query("SELECT instance, key_id, epoch, seq, link, id, sealed_at, tag FROM audit_seals ORDER BY sealed_at, instance, epoch")).rows as Seal[];
  }

  /**
   * The chains as one moment left them, for verify: one connection in a REPEATABLE READ
   * transaction, so rows written during the walk are not half seen.
   */
  async chainView(): Promise<ChainView> {
    const client = await this.checkout();
    try {
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    } catch (error) {
      client.done();
      throw error;
    }
    return {
      chainOrder: this.chainOrder,
      chainHeads: () => this.chainHeads(client),
      chainCheckpoints: () => this.chainCheckpoints(client),
      chainPages: () => this.chainPages(5_000, client),
      linkPages: () => this.linkPages(5_000, client),
      seals: () => this.seals(client),
      end: async () => {
        await client.query("COMMIT").catch(() => undefined);
        client.done();
      },
    };
  }

  /** The head of every chain, as the last insert left it. */
  async chainHeads(q: Queryable = this.pool): Promise<Map<string, ChainHead>> {
    const rows = (await q.query("SELECT instance, seq, link, id FROM audit_chain_heads")).rows;
    return new Map(rows.map((h) => [h.instance as string, { seq: h.seq as number, link: h.link as string, id: h.id as number | null }]));
  }

  /** The last link each prune removed from each chain. */
  async chainCheckpoints(q: Queryable = this.pool): Promise<Map<string, ChainCheckpoint>> {
    const rows = (await q.query("SELECT instance, seq, link, id FROM audit_chain_checkpoints")).rows;
    return new Map(rows.map((c) => [c.instance as string, { seq: c.seq as number, link: c.link as string, id: c.id as number }]));
  }

  /** verify walks each chain in its own order (ids are minted before the chain's lock) */
  readonly chainOrder = "chain" as const;

  /** Every row with its chain columns, a page at a time, by chain then place (keyset on the chain index: flat memory). */
  async *chainPages(pageSize = 5_000, q: Queryable = this.pool): AsyncGenerator<ChainedRow[]> {
    let key: unknown[] | undefined;
    for (;;) {
      const rows = (await q.query(
        `${CHAIN_SELECT} ${key ? `WHERE (${CHAIN_KEY}) > ($1, $2, $3, $4)` : ""} ORDER BY ${CHAIN_KEY} LIMIT ${Math.floor(pageSize)}`,
        key ?? [],
      )).rows as ChainedRow[];
      if (rows.length > 0) yield rows;
      if (rows.length < pageSize) return;
      const last = rows[rows.length - 1]!;
      key = [chainOf(last.instance), last.chain_seq ?? 0, last.id, last.timestamp];
    }
  }

  /**
   * Every row as the verifier walks it, its link checked, a page at a time in chainPages()'s
   * order: what chainPages() gives through linkRowOf(), from one text per row that
   * PostgreSQL renders (LINK_ROW_SQL). The next page is asked for before this one is
   * checked: the server renders it meanwhile.
   */
  async *linkPages(pageSize = 5_000, q: Queryable = this.pool): AsyncGenerator<LinkRow[]> {
    const types = (await q.query("SELECT attname, atttypid::int AS oid FROM pg_attribute WHERE attrelid = 'audit_logs'::regclass AND attnum > 0 AND NOT attisdropped")).rows as { attname: string; oid: number }[];
    const typeOf = new Map(types.map((t) => [t.attname, t.oid]));
    if (Object.entries(TYPES).some(([c, t]) => typeOf.get(c) !== TYPE_OIDS[t])) {
      // a column retyped: the old way throughout
      for await (const page of this.chainPages(pageSize, q)) yield page.map(linkRowOf);
      return;
    }
    const size = Math.floor(pageSize);
    const after = (key: unknown[] | undefined) => (key ? `WHERE (${CHAIN_KEY}) > ($1, $2::bigint, $3::bigint, $4::bigint)` : "");
    const read = (key: unknown[] | undefined) => q.query({ text: `SELECT ${LINK_ROW_SQL} FROM audit_logs ${after(key)} ORDER BY ${CHAIN_KEY} LIMIT ${size}`, values: key ?? [], rowMode: "array" })
      .then((result) => ({ lines: result.rows.map((r: unknown[]) => r[0] as string) }), (error: unknown) => ({ lines: undefined, error }));
    const oldPage = async (key: unknown[] | undefined) => (await q.query(`${CHAIN_SELECT} ${after(key)} ORDER BY ${CHAIN_KEY} LIMIT ${size}`, key ?? [])).rows as ChainedRow[];
    const chains = new Map<string, string>();
    let key: unknown[] | undefined;
    let next: ReturnType<typeof read> | undefined = read(undefined);
    try {
      while (next) {
        const got = await next;
        next = undefined;
        if (got.lines === undefined) throw got.error;
        const lines = got.lines;
        if (lines.length === 0) return;
        const from = key;
        const full = lines.length === size;
        // the next page is asked for at once, where this one's last row says where it starts
        key = full ? linkKey(lines[lines.length - 1]!) : undefined;
        if (key) next = read(key);
        const fast = linkRowsOfLines(lines, chains);
        let rows: LinkRow[];
        if (!fast.includes(null)) rows = fast as LinkRow[];
        else {
          // the same rows (one REPEATABLE READ transaction), the old way where the fast one cannot say
          const old = await oldPage(from);
          if (old.length !== lines.length) throw new AuditStoreError(`audit log page: ${old.length} rows read, ${lines.length} rendered`);
          rows = old.map((row, i) => {
            const known = fast[i];
            if (!known) return linkRowOf(row);
            if (known.id !== row.id) throw new AuditStoreError(`audit log page: row ${i} is id ${String(row.id)}, rendered as ${known.id}`);
            return known;
          });
          if (full && !key) {
            const last = old[old.length - 1]!;
            key = [chainOf(last.instance), last.chain_seq ?? 0, last.id, last.timestamp];
            next = read(key);
          }
        }
        yield rows;
      }
    } finally {
      // a page asked for ahead is waited for: the transaction ends after it
      await next;
    }
  }

  /** Makes the day partitions the records fall in, once each. */
  private async ensurePartitions(records: readonly AuditRecord[]): Promise<void> {
    const days = [...new Set(records.map((r) => Math.floor(r.timestamp / DAY_MS) * DAY_MS))].filter((d) => !this.partitions.has(d));
    if (days.length === 0) return;
    const client = await this.checkout();
    try {
      await client.query("BEGIN");
      // daemons making the same day's partition at once take turns
      await client.query("SELECT pg_advisory_xact_lock(hashtext('mlxs_audit_partitions'))");
      for (const day of days) {
        await client.query(`CREATE TABLE IF NOT EXISTS ${partitionName(day)} PARTITION OF audit_logs FOR VALUES FROM (${day}) TO (${day + DAY_MS})`);
      }
      await client.query("COMMIT");
      days.forEach((d) => this.partitions.add(d));
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.done();
    }
  }

  async query(filter: AuditLogFilter): Promise<AuditRow[]> {
    const { where, params } = numbered(whereOf(filter));
    const direction = filter.order === "asc" ? "ASC" : "DESC";
    const n = params.length;
    const rows = (await this.pool.query(
      `SELECT ${COLUMNS.join(", ")} FROM audit_logs ${where} ORDER BY timestamp ${direction}, id ${direction} LIMIT $${n + 1} OFFSET $${n + 2}`,
      [...params, filter.limit ?? null, filter.offset],
    )).rows;
    return rows.map(toRow);
  }

  /**
   * A follower of its own: what one `tail -f` or one `/v1/audit/stream` has been given.
   * Each keeps its own, so that two streams with overlapping filters each get every row once.
   */
  follower(): PgFollower {
    return new PgFollower(this.pool, () => {
      this.listener ??= this.listen();
      return this.listener;
    }, this.wakers);
  }

  /** after() of this store's own follower (see PgFollower.after). */
  after(afterId: number, filter: AuditLogFilter, limit = 1000): Promise<AuditRow[]> {
    this.own ??= this.follower();
    return this.own.after(afterId, filter, limit);
  }

  async lastId(): Promise<number> {
    return (await this.pool.query("SELECT coalesce(max(id), 0) AS id FROM audit_logs")).rows[0].id as number;
  }

  private async listen(): Promise<pg.PoolClient> {
    const client = await this.checkout();
    client.on("notification", () => { for (const wake of [...this.wakers]) wake(); });
    // a dropped connection (a restart): listen again on the next wait
    client.on("error", () => { this.listener = undefined; });
    client.on("end", () => { this.listener = undefined; });
    await client.query(`LISTEN ${CHANNEL}`);
    return client;
  }

  /**
   * Every record the filter selects as text lines, a page at a time, in id order (keyset
   * pagination: flat memory, no row twice), rendered by PostgreSQL in SQLite's format.
   * Each page's last id is found first (from the index, nothing rendered), so that the
   * pages after it render on other connections while the reader takes this one: the
   * server's rendering and this process's reading overlap.
   */
  async *exportPages(filter: AuditLogFilter, format: LineFormat, separator: string, pageSize = 10_000): AsyncGenerator<{ text: string; count: number }> {
    const ascending = filter.order === "asc";
    const direction = ascending ? "ASC" : "DESC";
    const [beyond, upTo] = ascending ? ["id > ?", "id <= ?"] : ["id < ?", "id >= ?"];
    const render = async (conditions: [string, unknown][], size: number, offset: number) => {
      const { where, params } = numbered(whereOf(filter, conditions), 1);
      const n = params.length + 1;
      return (await this.pool.query(
        `SELECT count(*) AS n, string_agg(line, $1 ORDER BY id ${direction}) AS text
           FROM (SELECT id, ${LINE_SQL[format]} AS line FROM audit_logs ${where} ORDER BY id ${direction} LIMIT $${n + 1} OFFSET $${n + 2}) page`,
        [separator, ...params, size, offset],
      )).rows[0] as { n: number; text: string | null };
    };
    let cursor = ascending ? 0 : Number.MAX_SAFE_INTEGER;
    let remaining = filter.limit ?? Infinity;
    let offset = filter.offset;
    let planned = false;
    const ahead: Promise<{ n: number; text: string | null }>[] = [];
    while (!planned || ahead.length > 0) {
      while (!planned && ahead.length < PAGES_AHEAD) {
        const size = Math.min(pageSize, remaining);
        const { where, params } = numbered(whereOf(filter, [[beyond, cursor]]));
        const last = (await this.pool.query(`SELECT id FROM audit_logs ${where} ORDER BY id ${direction} LIMIT 1 OFFSET $${params.length + 1}`, [...params, offset + size - 1])).rows[0]?.id as number | undefined;
        const page = render(last === undefined ? [[beyond, cursor]] : [[beyond, cursor], [upTo, last]], size, offset);
        // read in its turn, where a failure is the reader's; never an unhandled rejection
        page.catch(() => undefined);
        ahead.push(page);
        remaining -= size;
        if (last === undefined || remaining <= 0) planned = true;
        cursor = last ?? cursor;
        offset = 0;
      }
      const page = await ahead.shift()!;
      if (page.n > 0) yield { text: page.text ?? "", count: page.n };
    }
  }

  async stats(filter: AuditLogFilter): Promise<AuditStats> {
    const { where, params } = numbered(whereOf(filter));
    const groups = async (column: string) => Object.fromEntries(
      (await this.pool.query(`SELECT ${column} AS key, count(*) AS n FROM audit_logs ${where} GROUP BY ${column} ORDER BY n DESC, ${column} COLLATE "C" NULLS FIRST`, params)).rows
        .map((r: { key: string | null; n: number }) => [r.key ?? "(none)", r.n]),
    );
    const totals = (await this.pool.query(
      `SELECT count(*) AS total, sum(prompt_tokens)::bigint AS prompt, sum(completion_tokens)::bigint AS completion, sum(total_tokens)::bigint AS tokens,
              count(*) FILTER (WHERE status = 'error') AS errors, min(timestamp) AS first, max(timestamp) AS last,
              sum(completion_tokens) FILTER (WHERE completion_tokens > 0)::bigint AS generated,
              sum(${GENERATING_MS}) FILTER (WHERE completion_tokens > 0) AS generating_ms
         FROM audit_logs ${where}`, params)).rows[0] as Record<string, number | null>;
    return statsOf(totals, groups, async (offset) => (await this.pool.query(
      `SELECT duration_ms AS d FROM audit_logs ${where} ORDER BY duration_ms LIMIT 1 OFFSET $${params.length + 1}`, [...params, offset])).rows[0].d as number);
  }

  async statsBy(filter: AuditLogFilter, by: StatsGroup): Promise<GroupStats[]> {
    const { where, params } = numbered(whereOf(filter));
    const key = GROUP_SQL[by];
    return (await this.pool.query(
      `WITH g AS (
         SELECT ${key} AS k, duration_ms AS d, status, prompt_tokens, completion_tokens, ${GENERATING_MS} AS gen,
                row_number() OVER (PARTITION BY ${key} ORDER BY duration_ms) AS rn, count(*) OVER (PARTITION BY ${key}) AS n
           FROM audit_logs ${where})
       SELECT coalesce(k, '(none)') AS key, count(*) AS requests, count(*) FILTER (WHERE status = 'error') AS errors,
              coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens, coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
              min(d) FILTER (WHERE rn * 100 >= 50 * n) AS p50_ms, min(d) FILTER (WHERE rn * 100 >= 95 * n) AS p95_ms,
              sum(completion_tokens) FILTER (WHERE completion_tokens > 0)::bigint AS generated,
              sum(gen) FILTER (WHERE completion_tokens > 0) AS generating_ms
         FROM g GROUP BY k ORDER BY requests DESC, coalesce(k, '(none)') COLLATE "C"`,
      params,
    )).rows.map(withTokensPerSecond);
  }

  async countOlderThan(before: number): Promise<number> {
    return (await this.pool.query("SELECT count(*) AS n FROM audit_logs WHERE timestamp < $1", [before])).rows[0].n as number;
  }

  /** Drops the day partitions wholly older than `before`, then deletes inside the one it falls in. */
  async prune(before: number): Promise<number> {
    // first, each chain's newest link that goes (by place: a chain's order is not its id
    // order): the rows left verify from it
    await this.pool.query(
      `INSERT INTO audit_chain_checkpoints (instance, seq, link, id, pruned_at)
         SELECT DISTINCT ON (coalesce(instance, '')) coalesce(instance, ''), chain_seq, chain_link, id, $2 FROM audit_logs
          WHERE timestamp < $1 AND chain_seq IS NOT NULL AND chain_link IS NOT NULL
          ORDER BY coalesce(instance, ''), chain_seq DESC
       ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, link = excluded.link, id = excluded.id, pruned_at = excluded.pruned_at
          WHERE excluded.seq > audit_chain_checkpoints.seq`,
      [before, Date.now()],
    );
    const partitions = (await this.pool.query(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_logs'::regclass`,
    )).rows as { name: string }[];
    let deleted = 0;
    for (const { name } of partitions) {
      const day = dayOfPartition(name);
      if (day === undefined || day + DAY_MS > before) continue;
      const client = await this.checkout();
      try {
        await client.query("BEGIN");
        deleted += (await client.query(`SELECT count(*) AS n FROM ${name}`)).rows[0].n as number;
        await client.query(`DROP TABLE ${name}`);
        await client.query("COMMIT");
        this.partitions.delete(day);
      } catch (error) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw error;
      } finally {
        client.done();
      }
    }
    deleted += (await this.pool.query("DELETE FROM audit_logs WHERE timestamp < $1", [before])).rowCount ?? 0;
    return deleted;
  }

  /** Gives the space of deleted rows back for reuse, and refreshes the planner's figures. */
  async vacuum(): Promise<void> {
    await this.pool.query("VACUUM (ANALYZE) audit_logs");
  }

  async close(): Promise<void> {
    const listener = await this.listener?.catch(() => undefined);
    listener?.release(true);
    for (const wake of [...this.wakers]) wake();
    await this.pool.end();
  }
}

/**
 * One follower of the log (a `tail -f`, a `/v1/audit/stream`): rows after a cursor, each
 * given once. Writers commit in their own order, so a record with an older id may appear
 * after newer ones: after() looks back over recent ids and leaves out those already there
 * at its first call or given since. That memory is this follower's alone.
 */
export class PgFollower {
  /** ids given lately: a record committed late, with an older id, comes once */
  private readonly given = new Set<number>();
  /** the ids before the first cursor are known (none of them is news) */
  private primed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly listening: () => Promise<pg.PoolClient>,
    private readonly wakers: Set<() => void>,
  ) {}

  /** Records stored after row `afterId`, by id, none given before: what a follower prints next. */
  async after(afterId: number, filter: AuditLogFilter, limit = 1000): Promise<AuditRow[]> {
    const from = Math.max(0, afterId - LOOKBACK_IDS);
    if (!this.primed) {
      this.primed = true;
      for (const { id } of (await this.pool.query("SELECT id FROM audit_logs WHERE id > $1 AND id <= $2", [from, afterId])).rows) this.given.add(id as number);
    }
    for (const id of this.given) if (id <= from) this.given.delete(id);
    const { where, params } = numbered(whereOf(filter, [["id > ?", from], ["NOT (id = ANY(?::bigint[]))", [...this.given]]]));
    const rows = (await this.pool.query(`SELECT ${COLUMNS.join(", ")} FROM audit_logs ${where} ORDER BY id ASC LIMIT $${params.length + 1}`, [...params, limit])).rows.map(toRow);
    for (const row of rows) this.given.add(row.id);
    return rows;
  }

  /**
   * Resolves when a writer has stored records (LISTEN), or after `ms` at the latest: a
   * follower sleeps here instead of polling.
   */
  async waitForChange(ms: number, signal?: AbortSignal): Promise<void> {
    await this.listening().catch(() => undefined);
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(ms, 5_000));
      signal?.addEventListener("abort", done, { once: true });
      this.wakers.add(done);
    });
  }
}

/**
 * Rows written before the chain began, chained in place in id order (inside the
 * migration's transaction: the chain begins whole, or not at all).
 */
async function chainExisting(client: pg.PoolClient): Promise<void> {
  const heads = new Map<string, ChainHead>();
  for (let after = 0; ;) {
    const rows = (await client.query(`${CHAIN_SELECT} WHERE id > $1 ORDER BY id LIMIT 5000`, [after])).rows as ChainedRow[];
    if (rows.length === 0) break;
    const update: [number[], number[], number[], string[], string[]] = [[], [], [], [], []];
    for (const row of rows) {
      const { seq, prev, link } = linkExisting(heads, row);
      update[0].push(row.id as number); update[1].push(row.timestamp as number); update[2].push(seq); update[3].push(prev); update[4].push(link);
    }
    await client.query(
      `UPDATE audit_logs SET chain_seq = u.seq, chain_prev = u.prev, chain_link = u.link
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS u(id, ts, seq, prev, link)
        WHERE audit_logs.id = u.id AND audit_logs.timestamp = u.ts`,
      update,
    );
    after = rows[rows.length - 1]!.id as number;
  }
  const chains = [...heads];
  await client.query(
    `INSERT INTO audit_chain_heads (instance, seq, link, id) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
     ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, link = excluded.link, id = excluded.id`,
    [chains.map(([c]) => c), chains.map(([, h]) => h.seq), chains.map(([, h]) => h.link), chains.map(([, h]) => h.id)],
  );
}

/**
 * The row id minted for each record on its first try, for every store of this process: the
 * writer opens a new store after a broken connection, and tries the same records again.
 */
const minted = new WeakMap<AuditRecord, number>();

/** `audit_logs_p20261128`: the partition of one UTC day. */
function partitionName(day: number): string {
  return `audit_logs_p${new Date(day).toISOString().slice(0, 10).replaceAll("-", "")}`;
}

function dayOfPartition(name: string): number | undefined {
  const m = /^audit_logs_p(\d{4})(\d{2})(\d{2})$/.exec(name);
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : undefined;
}

/** SQLite's `?` placeholders as PostgreSQL's `$n`, numbered after `skip` parameters of the caller's own. */
function numbered({ where, params }: { where: string; params: unknown[] }, skip = 0): { where: string; params: unknown[] } {
  let n = skip;
  return { where: where.replace(/\?/g, () => `$${++n}`), params };
}

function toRow(raw: Record<string, unknown>): AuditRow {
  return { ...(raw as unknown as AuditRow), status: raw.status as AuditStatus, stream: raw.stream === 1 };
}
