/**
 * The audit schema, as numbered migrations. PRAGMA user_version holds the number of
 * migrations applied; a database with a higher number was written by a newer mlxs and
 * is refused rather than guessed at.
 *
 * Each index costs every insert and every prune, so there are only those that time-range
 * queries, alone or per model or status, need.
 *
 * There is deliberately no column for prompts, messages, answers, embedding inputs, tool
 * arguments or headers: content cannot leak into a column that does not exist.
 */

export const MIGRATIONS: readonly string[] = [
  // 1: the audit log
  `CREATE TABLE audit_logs (
     id                INTEGER PRIMARY KEY,
     request_id        TEXT    NOT NULL UNIQUE,
     timestamp         INTEGER NOT NULL,             -- UTC, milliseconds since the epoch
     model             TEXT,
     backend_type      TEXT,
     endpoint          TEXT    NOT NULL,
     duration_ms       REAL    NOT NULL,
     ttft_ms           REAL,
     status            TEXT    NOT NULL CHECK (status IN ('success', 'error', 'timeout', 'cancelled')),
     status_code       INTEGER,
     prompt_tokens     INTEGER,
     completion_tokens INTEGER,
     total_tokens      INTEGER,
     error_type        TEXT,
     error_message     TEXT    CHECK (error_message IS NULL OR length(error_message) <= 500),
     stream            INTEGER NOT NULL DEFAULT 0,
     client            TEXT
   );
   CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp);
   CREATE INDEX audit_logs_model_timestamp ON audit_logs (model, timestamp);
   CREATE INDEX audit_logs_status_timestamp ON audit_logs (status, timestamp);`,
  // 2: what an agent's answer was, as counts and kinds: never a function name, argument or schema
  `ALTER TABLE audit_logs ADD COLUMN tool_calls INTEGER;
   ALTER TABLE audit_logs ADD COLUMN response_format TEXT CHECK (response_format IN ('text', 'json_object', 'json_schema'));`,
  // 3: how long the request waited for its model to load (ttft_ms no longer counts it)
  `ALTER TABLE audit_logs ADD COLUMN load_ms REAL;`,
  // 4: which daemon (or machine) served it, for a fleet sharing one log
  `ALTER TABLE audit_logs ADD COLUMN instance TEXT;`,
  // 5: one row per request, whatever its X-Request-ID. The row's identity is the id mlxs
  // mints (AUTOINCREMENT: never given again, even after a prune emptied the table, so a
  // follower's cursor never skips a new row); request_id is what the client sent (or what
  // mlxs made for it), echoed and searchable but not unique: four retries with one id are
  // four rows. SQLite drops a constraint only by rebuilding the table; ids are kept.
  `CREATE TABLE audit_logs_v5 (
     id                INTEGER PRIMARY KEY AUTOINCREMENT,
     request_id        TEXT    NOT NULL,
     timestamp         INTEGER NOT NULL,
     model             TEXT,
     backend_type      TEXT,
     endpoint          TEXT    NOT NULL,
     duration_ms       REAL    NOT NULL,
     ttft_ms           REAL,
     status            TEXT    NOT NULL CHECK (status IN ('success', 'error', 'timeout', 'cancelled')),
     status_code       INTEGER,
     prompt_tokens     INTEGER,
     completion_tokens INTEGER,
     total_tokens      INTEGER,
     error_type        TEXT,
     error_message     TEXT    CHECK (error_message IS NULL OR length(error_message) <= 500),
     stream            INTEGER NOT NULL DEFAULT 0,
     client            TEXT,
     tool_calls        INTEGER,
     response_format   TEXT    CHECK (response_format IN ('text', 'json_object', 'json_schema')),
     load_ms           REAL,
     instance          TEXT
   );
   INSERT INTO audit_logs_v5 SELECT id, request_id, timestamp, model, backend_type, endpoint, duration_ms, ttft_ms, status, status_code,
     prompt_tokens, completion_tokens, total_tokens, error_type, error_message, stream, client, tool_calls, response_format, load_ms, instance
     FROM audit_logs ORDER BY id;
   DROP TABLE audit_logs;
   ALTER TABLE audit_logs_v5 RENAME TO audit_logs;
   CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp);
   CREATE INDEX audit_logs_model_timestamp ON audit_logs (model, timestamp);
   CREATE INDEX audit_logs_status_timestamp ON audit_logs (status, timestamp);
   CREATE INDEX audit_logs_request_id ON audit_logs (request_id);`,
  // 6: the hash chain (chain.ts): each row's place in its instance's chain, the link before
  // it and its own; the head of each chain, kept where the insert that moves it takes the
  // write lock; the last link a prune removed from each chain, which the chain goes on from.
  // Rows already there are chained in place as the migration runs (store.ts), in id order.
  `ALTER TABLE audit_logs ADD COLUMN chain_seq INTEGER;
   ALTER TABLE audit_logs ADD COLUMN chain_prev TEXT;
   ALTER TABLE audit_logs ADD COLUMN chain_link TEXT;
   CREATE TABLE audit_chain_heads (
     instance TEXT PRIMARY KEY,
     seq      INTEGER NOT NULL,
     link     TEXT    NOT NULL,
     id       INTEGER
   );
   CREATE TABLE audit_chain_checkpoints (
     instance  TEXT PRIMARY KEY,
     seq       INTEGER NOT NULL,
     link      TEXT    NOT NULL,
     id        INTEGER NOT NULL,
     pruned_at INTEGER NOT NULL
   );`,
  // 7: seals (seal.ts): once per epoch, the head of a chain signed with that epoch's key,
  // which is then evolved away; one seal per chain, key and epoch. Found by place, for an
  // export to carry each seal on the row it covers.
  `CREATE TABLE audit_seals (
     instance  TEXT    NOT NULL,
     key_id    TEXT    NOT NULL,
     epoch     INTEGER NOT NULL,
     seq       INTEGER NOT NULL,
     link      TEXT    NOT NULL,
     id        INTEGER,
     sealed_at INTEGER NOT NULL,
     tag       TEXT    NOT NULL,
     PRIMARY KEY (instance, key_id, epoch)
   );
   CREATE INDEX audit_seals_place ON audit_seals (instance, seq);`,
];

/** The migration that began the hash chain: rows older than it are chained when it runs. */
export const CHAIN_MIGRATION = 6;

export const SCHEMA_VERSION = MIGRATIONS.length;

/** The columns of one record, in table order: exports and inserts use this one list. */
export const COLUMNS = [
  "id", "request_id", "timestamp", "model", "backend_type", "endpoint", "duration_ms", "ttft_ms",
  "status", "status_code", "prompt_tokens", "completion_tokens", "total_tokens", "error_type",
  "error_message", "stream", "client", "tool_calls", "response_format", "load_ms", "instance",
] as const;

/**
 * The columns of an export: the record's, then what verifying it needs without the
 * database (`mlxs audit verify --file`): its place and links in its chain, and the seal
 * that covers it, if one does (seal.ts, parseSealField).
 */
export const EXPORT_COLUMNS = [...COLUMNS, "chain_seq", "chain_prev", "chain_link", "chain_seal"] as const;

export type AuditStatus = "success" | "error" | "timeout" | "cancelled";
export const STATUSES: readonly AuditStatus[] = ["success", "error", "timeout", "cancelled"];

/** One request, as the audit log keeps it: metadata only. */
export interface AuditRecord {
  request_id: string;
  /** UTC milliseconds */
  timestamp: number;
  model: string | null;
  backend_type: string | null;
  endpoint: string;
  duration_ms: number;
  ttft_ms: number | null;
  status: AuditStatus;
  status_code: number | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  total_tokens: number | null;
  error_type: string | null;
  /** at most 500 characters, never text of the request */
  error_message: string | null;
  stream: boolean;
  /** the label of the API key used, never the key */
  client: string | null;
  /** calls in a generated answer (null where nothing was generated) */
  tool_calls: number | null;
  /** the shape asked of a generated answer; never the schema */
  response_format: ResponseFormatType | null;
  /** how long the request waited for its model to load; null where no model was asked for */
  load_ms: number | null;
  /** the daemon's --instance name, else the host name: where it was served */
  instance?: string | null;
}

export type ResponseFormatType = "text" | "json_object" | "json_schema";

/** A stored record: the record plus its row id. */
export interface AuditRow extends AuditRecord {
  id: number;
}
