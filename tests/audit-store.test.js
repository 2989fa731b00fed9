import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import { AuditStore, AuditStoreError } from "../dist/audit/store.js";
import { COLUMNS, MIGRATIONS, SCHEMA_VERSION } from "../dist/audit/schema.js";
import { FilterError, parseFilter } from "../dist/audit/filter.js";
import { parseDuration } from "../dist/durations.js";
import { AuditWriter } from "../dist/audit/writer.js";
import { track } from "../dist/audit/track.js";
import { syntheticRecord, syntheticRecords } from "./fixtures/audit-records.js";
import { tempDir, waitFor } from "./helpers.js";

const rawDb = (path) => open({ filename: path, driver: sqlite3.Database });

async function expectStoreError(path, pattern) {
  try {
    await AuditStore.open(path);
    assert.unreachable(`${path} opened`);
  } catch (error) {
    assert.instance(error, AuditStoreError);
    assert.match(error.message, pattern);
  }
}

const database = suite("database");

database("a new database: WAL, NORMAL sync, busy timeout, the schema and its indexes, no content column", async () => {
  const path = join(tempDir(), "nested", "audit.db");
  const store = await AuditStore.open(path);
  await store.insert([syntheticRecord(1)]);
  assert.ok(existsSync(`${path}-wal`), "WAL file while open");
  const db = await rawDb(path);
  assert.is((await db.get("PRAGMA journal_mode")).journal_mode, "wal");
  assert.is((await db.get("PRAGMA user_version")).user_version, SCHEMA_VERSION);
  const columns = (await db.all("PRAGMA table_info(audit_logs)")).map((c) => c.name);
  // the record's columns, then the hash chain's (chain.ts)
  assert.equal(columns, [...COLUMNS, "chain_seq", "chain_prev", "chain_link"]);
  for (const forbidden of ["prompt", "messages", "content", "answer", "input", "text", "headers", "arguments"]) {
    assert.not.ok(columns.includes(forbidden), forbidden);
  }
  const indexes = (await db.all("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_logs'")).map((r) => r.name);
  for (const index of ["audit_logs_timestamp", "audit_logs_model_timestamp", "audit_logs_status_timestamp"]) assert.ok(indexes.includes(index), index);
  const plan = await db.all("EXPLAIN QUERY PLAN SELECT * FROM audit_logs WHERE model = 'a' AND timestamp >= 0 ORDER BY timestamp DESC LIMIT 100");
  assert.match(plan.map((p) => p.detail).join(" "), /audit_logs_model_timestamp/);
  await db.close();
  await store.close();
});

database("an older (version 0) database is upgraded; a newer one is refused and left alone", async () => {
  const dir = tempDir();
  const old = join(dir, "old.db");
  const db = await rawDb(old);
  await db.exec("PRAGMA user_version = 0");
  await db.close();
  const store = await AuditStore.open(old);
  assert.is(await store.insert([syntheticRecord(1)]), 1);
  await store.close();

  const newer = join(dir, "newer.db");
  const n = await rawDb(newer);
  await n.exec("CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, future TEXT); PRAGMA user_version = 99;");
  await n.close();
  await expectStoreError(newer, /newer mlxs.*schema 99/);
  const after = await rawDb(newer);
  assert.is((await after.get("PRAGMA user_version")).user_version, 99);
  await after.close();
});

database("not SQLite, damaged, or another program's database: a clear error, never an overwrite", async () => {
  const dir = tempDir();
  const text = join(dir, "text.db");
  writeFileSync(text, "these are not the bytes of an SQLite database, just a text file".repeat(20));
  const before = readFileSync(text);
  await expectStoreError(text, /not an SQLite database/);
  assert.equal(readFileSync(text), before);

  const damaged = join(dir, "damaged.db");
  const store = await AuditStore.open(damaged);
  await store.insert(syntheticRecords(200));
  await store.vacuum();
  await store.close();
  const bytes = readFileSync(damaged);
  bytes.fill(0x5a, 100, bytes.length);
  writeFileSync(damaged, bytes);
  await expectStoreError(damaged, /damaged|not an SQLite|malformed/);
  assert.equal(readFileSync(damaged), bytes);

  const foreign = join(dir, "foreign.db");
  const db = await rawDb(foreign);
  await db.exec("CREATE TABLE customers (name TEXT)");
  await db.close();
  await expectStoreError(foreign, /not an mlxs audit log/);

  mkdirSync(join(dir, "adir.db"));
  await expectStoreError(join(dir, "adir.db"), /cannot open/);
});

database.run();

const filters = suite("filter");

filters("every field parses; relative and ISO times; defaults", () => {
  const now = Date.parse("2026-11-28T12:00:00Z");
  const f = parseFilter({
    model: "alpha", backend_type: "llama.cpp/cpu", endpoint: "cli:chat", status: "error", since: "24h",
    until: "2026-11-28T11:00:00Z", request_id: "r-1", min_duration_ms: "250", limit: "5", offset: "2", order: "asc",
  }, { now });
  assert.equal(f, {
    model: "alpha", backend_type: "llama.cpp/cpu", endpoint: "cli:chat", status: "error", since: now - 86_400_000,
    until: Date.parse("2026-11-28T11:00:00Z"), request_id: "r-1", min_duration_ms: 250, limit: 5, offset: 2, order: "asc",
  });
  assert.equal(parseFilter({}), { offset: 0, order: "desc", limit: 100 });
  assert.is(parseFilter({ since: "15m" }, { now }).since, now - 900_000);
  assert.is(parseFilter({ since: "7d" }, { now }).since, now - 7 * 86_400_000);
  assert.is(parseFilter({ since: "2026-11-01" }, { now }).since, Date.parse("2026-11-01T00:00:00Z"));
  assert.is(parseFilter({ since: "2026-11-01T10:00" }, { now }).since, Date.parse("2026-11-01T10:00:00Z"));
  assert.is(parseFilter({ since: "2026-11-01T10:00:00+02:00" }, { now }).since, Date.parse("2026-11-01T08:00:00Z"));
  assert.is(parseDuration("30d"), 30 * 86_400_000);
  assert.is(parseDuration("soon"), undefined);
});

filters("a bad value names its field and what is accepted", () => {
  const cases = [
    [{ status: "fine" }, "status", /success, error, timeout, cancelled/],
    [{ since: "yesterday" }, "since", /ISO-8601.*15m/],
    [{ until: "2026-13-45" }, "until", /ISO-8601/],
    [{ limit: "0" }, "limit", /integer from 1/],
    [{ limit: "ten" }, "limit", /integer/],
    [{ offset: "-1" }, "offset", /integer/],
    [{ order: "up" }, "order", /asc or desc/],
    [{ min_duration_ms: "1.5" }, "min_duration_ms", /integer/],
    [{ model: "" }, "model", /non-empty/],
    [{ colour: "red" }, "(unknown field)", /fields/],
    [{ since: "1h", until: "2h" }, "since", /before until/],
  ];
  for (const [input, field, accepted] of cases) {
    try {
      parseFilter(input);
      assert.unreachable(JSON.stringify(input));
    } catch (error) {
      assert.instance(error, FilterError);
      assert.is(error.field, field);
      assert.ok(error.message.includes(field));
      assert.match(error.message, accepted);
    }
  }
});

filters.run();

const queries = suite("queries");
const NOW = Date.parse("2026-11-28T12:00:00Z");

queries.before(async (ctx) => {
  ctx.store = await AuditStore.open(join(tempDir(), "q.db"));
  // 300 records, one a minute back from NOW
  await ctx.store.insert(syntheticRecords(300, { now: NOW, spacingMs: 60_000 }));
});
queries.after(async (ctx) => ctx.store.close());

const q = (store, input) => store.query(parseFilter(input, { now: NOW, defaultLimit: 1000 }));

queries("each filter field selects exactly its records", async ({ store }) => {
  const all = syntheticRecords(300, { now: NOW, spacingMs: 60_000 });
  const expect = async (input, predicate) => {
    const ids = (await q(store, input)).map((r) => r.request_id).sort();
    assert.equal(ids, all.filter(predicate).map((r) => r.request_id).sort(), JSON.stringify(input));
    assert.ok(ids.length > 0, JSON.stringify(input));
  };
  await expect({ model: "beta" }, (r) => r.model === "beta");
  await expect({ backend_type: "llama.cpp/cuda" }, (r) => r.backend_type === "llama.cpp/cuda");
  await expect({ endpoint: "/v1/messages" }, (r) => r.endpoint === "/v1/messages");
  await expect({ status: "timeout" }, (r) => r.status === "timeout");
  await expect({ since: "1h" }, (r) => r.timestamp >= NOW - 3_600_000);
  await expect({ until: "4h" }, (r) => r.timestamp < NOW - 4 * 3_600_000);
  await expect({ since: "2h", until: "1h" }, (r) => r.timestamp >= NOW - 7_200_000 && r.timestamp < NOW - 3_600_000);
  await expect({ request_id: "r-42" }, (r) => r.request_id === "r-42");
  await expect({ min_duration_ms: "350" }, (r) => r.duration_ms >= 350);
  await expect({ model: "alpha", status: "success", since: "3h" }, (r) => r.model === "alpha" && r.status === "success" && r.timestamp >= NOW - 3 * 3_600_000);
});

queries("newest first by default; asc; limit and offset page without overlap", async ({ store }) => {
  const desc = await q(store, { limit: "10" });
  assert.equal(desc.map((r) => r.request_id), Array.from({ length: 10 }, (_, i) => `r-${i}`));
  const asc = await q(store, { limit: "3", order: "asc" });
  assert.equal(asc.map((r) => r.request_id), ["r-299", "r-298", "r-297"]);
  const page2 = await q(store, { limit: "10", offset: "10" });
  assert.equal(page2.map((r) => r.request_id), Array.from({ length: 10 }, (_, i) => `r-${i + 10}`));
  assert.is(typeof desc[0].stream, "boolean");
});

queries("exportPages() walks everything once, in order, with limit and offset; times in ISO-8601", async ({ store }) => {
  const lines = async (input, pageSize) => {
    const out = [];
    for await (const page of store.exportPages(parseFilter(input, { defaultLimit: null }), "json", "\n", pageSize)) {
      const parsed = page.text.split("\n").map((l) => JSON.parse(l));
      assert.is(parsed.length, page.count);
      out.push(...parsed);
    }
    return out;
  };
  const all = await lines({ order: "asc" }, 7);
  assert.is(all.length, 300);
  assert.equal(all.map((r) => r.id), [...all.map((r) => r.id)].sort((a, b) => a - b));
  const record = syntheticRecord(0, { now: NOW, spacingMs: 60_000 });
  assert.is(all[0].timestamp, new Date(record.timestamp).toISOString());
  assert.is(all[0].stream, record.stream);
  assert.is(all[0].request_id, "r-0");
  const limited = await lines({ order: "desc", limit: "15", offset: "5", model: "alpha" }, 4);
  assert.is(limited.length, 15);
  assert.ok(limited.every((r) => r.model === "alpha"));
  assert.equal(limited.map((r) => r.id), [...limited.map((r) => r.id)].sort((a, b) => b - a));
  const csv = [];
  for await (const page of store.exportPages(parseFilter({ request_id: "r-7" }), "csv", "\r\n")) csv.push(page.text);
  assert.match(csv[0], /^\d+,r-7,\d{4}-\d{2}-\d{2}T[\d:.]+Z,/);
});

queries("stats: counts, percentiles, tokens, error rate", async ({ store }) => {
  const s = await store.stats(parseFilter({}, { now: NOW }));
  assert.is(s.total, 300);
  const all = syntheticRecords(300, { now: NOW, spacingMs: 60_000 });
  assert.is(s.byStatus.success, all.filter((r) => r.status === "success").length);
  assert.is(s.byModel.alpha, 100);
  assert.is(s.tokens.prompt, all.reduce((n, r) => n + r.prompt_tokens, 0));
  assert.is(s.errorRate, all.filter((r) => r.status === "error").length / 300);
  const durations = all.map((r) => r.duration_ms).sort((a, b) => a - b);
  assert.is(s.durationMs.p50, durations[149]);
  assert.is(s.durationMs.p99, durations[296]);
  assert.ok(s.tokensPerSecond > 0);
  const none = await store.stats(parseFilter({ model: "nobody" }));
  assert.is(none.total, 0);
  assert.is(none.durationMs.p50, null);
});

queries("prune deletes only what is older, in batches; a request id sent again is another row", async ({ store }) => {
  assert.is(await store.countOlderThan(NOW - 100 * 60_000), 199);
  assert.is(await store.prune(NOW - 100 * 60_000, { batchSize: 16 }), 199);
  assert.is((await q(store, {})).length, 101);
  assert.is(await store.insert([syntheticRecord(0, { now: NOW })]), 1);
  assert.is((await q(store, { request_id: "r-0" })).length, 2);
});

queries.run();

const writer = suite("writer");

writer("record() returns at once; batches land in one flush; close() writes the rest", async () => {
  const path = join(tempDir(), "w.db");
  const w = new AuditWriter(async () => AuditStore.open(path), { flushIntervalMs: 50, batchSize: 100 });
  const started = performance.now();
  for (let i = 0; i < 1000; i++) w.record(syntheticRecord(i));
  assert.ok(performance.now() - started < 200, "recording 1000 records does not wait for the disk");
  assert.ok(w.stats.pending > 0);
  await w.close();
  assert.equal({ ...w.stats }, { recorded: 1000, written: 1000, dropped: 0, pending: 0 });
  const store = await AuditStore.open(path);
  assert.is((await store.query(parseFilter({ limit: "2000" }))).length, 1000);
  await store.close();
});

writer("a full buffer drops and counts; a database that cannot be opened for now keeps what fits, and writes it once it can", async () => {
  const warnings = [];
  const dir = tempDir();
  const path = join(dir, "x.db");
  mkdirSync(path); // a directory where the file should be: every open fails
  const w = new AuditWriter(async () => AuditStore.open(path), { flushIntervalMs: 10_000, batchSize: 1000, maxBuffer: 50, warn: (m) => warnings.push(m) });
  for (let i = 0; i < 80; i++) w.record(syntheticRecord(i));
  assert.is(w.stats.dropped, 30);
  assert.match(warnings[0], /buffer is full/);
  await w.flush();
  assert.equal({ ...w.stats }, { recorded: 80, written: 0, dropped: 30, pending: 50 });
  rmSync(path, { recursive: true });
  // the buffer is full of what waits: newcomers are dropped until it is written
  for (let i = 100; i < 110; i++) w.record(syntheticRecord(i));
  await w.flush();
  assert.equal({ ...w.stats }, { recorded: 90, written: 50, dropped: 40, pending: 0 });
  assert.match(warnings.at(-1), /writable again \(40 records dropped in all\)/);
  for (let i = 200; i < 210; i++) w.record(syntheticRecord(i));
  await w.flush();
  assert.is(w.stats.written, 60);
  await w.close();
  // closed: later records are counted as dropped, never thrown
  w.record(syntheticRecord(300));
  assert.is(w.stats.dropped, 41);
});

writer("a database locked past the busy timeout: the batch waits in the buffer, what does not fit is dropped", async () => {
  const warnings = [];
  const path = join(tempDir(), "locked.db");
  const store = await AuditStore.open(path);
  const locker = await open({ filename: path, driver: sqlite3.Database });
  await locker.exec("BEGIN IMMEDIATE");
  const w = new AuditWriter(store, { flushIntervalMs: 60_000, batchSize: 1000, maxBuffer: 4, warn: (m) => warnings.push(m) });
  for (let i = 0; i < 3; i++) w.record(syntheticRecord(i));
  const flushing = w.flush(); // waits out the 5 s busy timeout
  // the flush has taken the batch out of the buffer: what comes now arrives while it waits
  await waitFor(() => w.stats.pending === 0, { what: "the flush to take its batch" });
  for (let i = 3; i < 7; i++) w.record(syntheticRecord(i));
  await flushing;
  assert.equal({ ...w.stats }, { recorded: 7, written: 0, dropped: 3, pending: 4 });
  assert.match(warnings[0], /stayed locked by another process; keeping 4 records/);
  assert.match(warnings[1], /buffer is full \(4 records\); dropping audit records \(3 so far\)/);
  await locker.exec("COMMIT");
  await w.flush();
  assert.equal({ ...w.stats }, { recorded: 7, written: 4, dropped: 3, pending: 0 });
  assert.match(warnings.at(-1), /writable again \(3 records dropped in all\)/);
  // the oldest waited first: the 3 held and the first newcomer
  assert.equal((await store.query(parseFilter({}))).map((r) => r.request_id).sort(), [0, 1, 2, 3].map((i) => syntheticRecord(i).request_id).sort());
  await w.close();
  await locker.close();
});

writer("track(): one record per request with status, tokens, ttft and a bounded error message", async () => {
  const records = [];
  const t = track({ endpoint: "/v1/chat/completions", model: "m", backendType: "llama.cpp/cpu", stream: true, client: "ci" }, (r) => records.push(r));
  await new Promise((r) => setTimeout(r, 5));
  t.firstToken();
  t.tokens(12, 30);
  t.end({ status: "success", statusCode: 200 });
  t.end({ status: "error", statusCode: 500 });
  assert.is(records.length, 1);
  const [r] = records;
  assert.match(r.request_id, /^req_[0-9a-z]{9}[0-9a-f]{16}$/);
  assert.is(r.status, "success");
  assert.is(r.total_tokens, 42);
  assert.ok(r.ttft_ms >= 4 && r.duration_ms >= r.ttft_ms);
  assert.is(r.error_type, null);
  assert.is(r.stream, true);
  assert.is(r.client, "ci");
  for (const status of ["error", "timeout", "cancelled"]) {
    track({ endpoint: "cli:chat", requestId: `x-${status}` }, (rec) => records.push(rec)).end({ status, statusCode: 1, errorType: status === "error" ? "overloaded" : undefined, errorMessage: "e".repeat(900) });
  }
  const [error, timeout, cancelled] = records.slice(1);
  assert.is(error.error_type, "overloaded");
  assert.is(timeout.error_type, "timeout");
  assert.is(cancelled.status, "cancelled");
  assert.is(error.error_message.length, 500);
  assert.is(error.ttft_ms, null);
  assert.is(error.total_tokens, null);
});

writer.run();

const identity = suite("one row per request");

identity("100 records with one request id: 100 rows, and the writer's written count says 100", async () => {
  const path = join(tempDir(), "same.db");
  const w = new AuditWriter(async () => AuditStore.open(path), { flushIntervalMs: 20, batchSize: 30 });
  for (let i = 0; i < 100; i++) w.record({ ...syntheticRecord(i), request_id: "same-id-123", timestamp: NOW });
  await w.close();
  assert.equal(w.stats, { recorded: 100, written: 100, dropped: 0, pending: 0 });
  const store = await AuditStore.open(path);
  const rows = await store.query(parseFilter({ request_id: "same-id-123" }, { defaultLimit: null }));
  assert.is(rows.length, 100);
  assert.is(new Set(rows.map((r) => r.id)).size, 100, "each its own row id");
  await store.close();
});

identity("a database of the old schema (request_id unique) migrates in place: rows and ids kept, ids never given again", async () => {
  const path = join(tempDir(), "v4.db");
  const db = await rawDb(path);
  // the schema as mlxs made it before this migration: the first four migrations
  for (const sql of MIGRATIONS.slice(0, 4)) await db.exec(sql);
  await db.exec("PRAGMA user_version = 4");
  const old = syntheticRecords(50, { now: NOW });
  for (const [i, r] of old.entries()) {
    await db.run(`INSERT INTO audit_logs (id, request_id, timestamp, endpoint, duration_ms, status, stream, load_ms, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      i * 2 + 1, r.request_id, r.timestamp, r.endpoint, r.duration_ms, r.status, r.stream ? 1 : 0, 12.5, "box");
  }
  const refused = await db.run("INSERT INTO audit_logs (request_id, timestamp, endpoint, duration_ms, status) VALUES ('r-1', 1, 'x', 1, 'success')").then(() => null, (e) => e);
  assert.match(refused?.message ?? "", /UNIQUE constraint failed: audit_logs.request_id/, "the old schema keys by request id");
  await db.close();

  const store = await AuditStore.open(path);
  const rows = await store.query(parseFilter({ order: "asc" }, { defaultLimit: null }));
  assert.is(rows.length, 50);
  assert.equal(rows.map((r) => r.id).sort((a, b) => a - b), old.map((_, i) => i * 2 + 1));
  assert.ok(rows.every((r) => r.load_ms === 12.5 && r.instance === "box"));
  assert.equal(rows.find((r) => r.id === 1).request_id, "r-0");
  // the same request id again: another row, after the old ones
  assert.is(await store.insert([{ ...syntheticRecord(0, { now: NOW }), request_id: "r-0" }]), 1);
  assert.is((await store.query(parseFilter({ request_id: "r-0" }))).length, 2);
  // a prune that empties the log: a new row's id is still past every id given before
  await store.prune(NOW + 1);
  assert.is(await store.insert([syntheticRecord(1, { now: NOW })]), 1);
  assert.is(await store.lastId(), 101);
  await store.close();

  const raw = await rawDb(path);
  assert.is((await raw.get("PRAGMA user_version")).user_version, SCHEMA_VERSION);
  const plan = await raw.all("EXPLAIN QUERY PLAN SELECT * FROM audit_logs WHERE request_id = 'r-0'");
  assert.match(plan.map((p) => p.detail).join(" "), /audit_logs_request_id/);
  await raw.close();
});

identity("tokens per second count generation time only: not the time to first token, not the model's load", async () => {
  const store = await AuditStore.open(join(tempDir(), "tps.db"));
  // 3 tokens in 4 s, of which 3.7 s waiting for the model and 0.1 s to the first token: 0.2 s generating
  const base = { ...syntheticRecord(0, { now: NOW }), status: "success", model: "m", client: "k" };
  await store.insert([
    { ...base, duration_ms: 4000, ttft_ms: 100, load_ms: 3700, completion_tokens: 3 },
    { ...base, duration_ms: 1100, ttft_ms: 100, load_ms: null, completion_tokens: 3 },
    { ...base, duration_ms: 50, ttft_ms: null, load_ms: null, completion_tokens: 0, endpoint: "/v1/embeddings" },
  ]);
  const all = parseFilter({}, { defaultLimit: null });
  // 6 tokens in 0.2 s + 1.0 s
  assert.ok(Math.abs((await store.stats(all)).tokensPerSecond - 5) < 1e-9, `${(await store.stats(all)).tokensPerSecond}`);
  const [group] = await store.statsBy(all, "model");
  assert.is(group.key, "m");
  assert.ok(Math.abs(group.tokens_per_second - 5) < 1e-9, `${group.tokens_per_second}`);
  const byEndpoint = await store.statsBy(all, "endpoint");
  assert.is(byEndpoint.find((g) => g.key === "/v1/embeddings")?.tokens_per_second ?? null, null);
  await store.close();
});

identity.run();
