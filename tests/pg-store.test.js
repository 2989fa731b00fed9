// The audit log on PostgreSQL, against a private cluster started here (tests/fixtures/
// postgres.js): the same answers as the SQLite store, byte for byte, from the store and
// from every audit command; day partitions that prune drops; two daemons writing one
// database while `audit tail -f` follows both; a restart of PostgreSQL under load; and a
// password that appears nowhere.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CLI, assertNoMarker, httpCall, jsonRequest, runCli, startServer, tempDir, testModel, waitFor } from "./helpers.js";
import { syntheticRecords } from "./fixtures/audit-records.js";
import { PASSWORD, startPostgres } from "./fixtures/postgres.js";
import { AuditStore } from "../dist/audit/store.js";
import { openAuditStore } from "../dist/audit/open-store.js";
import { parseFilter } from "../dist/audit/filter.js";
import { exportRows } from "../dist/audit/export.js";
import { MIGRATIONS as PG_MIGRATIONS } from "../dist/audit/pg-store.js";
import { AuditWriter } from "../dist/audit/writer.js";
import { encodeRow, linkOf, verifyChains } from "../dist/audit/chain.js";
import { checkSharedRequestId, SHARED_ID } from "./fixtures/same-request-id.js";
import pgDriver from "pg";

const { Client } = pgDriver;

const pg = await startPostgres();
// the cluster goes with this process
process.on("exit", () => pg.destroySync());

/** A fresh database of the cluster for one test, as a URL. */
let databases = 0;
async function freshDatabase() {
  const name = `t${++databases}`;
  const admin = await openAuditStore(pg.url);
  await admin.pool.query(`CREATE DATABASE ${name}`);
  await admin.close();
  return pg.url.replace(/\/postgres$/, `/${name}`);
}

const NOW = Date.UTC(2026, 10, 28, 12, 0, 0, 123);

const contract = suite("the same answers as SQLite");

contract("queries, follows, exports, stats and prunes: the same rows and bytes from both stores", async () => {
  const url = await freshDatabase();
  const file = join(tempDir(), "audit.db");
  const sqlite = await AuditStore.open(file);
  const postgres = await openAuditStore(url);
  // three days of records, every status, some with odd characters for CSV and JSON
  const records = syntheticRecords(3000, { now: NOW, spacingMs: 90_000 }).map((r, i) => ({
    ...r, ...(i % 97 === 0 ? { error_message: `a "quoted", multi\nline \\ message\t\u0001 ${i}`, error_type: "internal", status: "error" } : {}),
    instance: i % 2 ? "box-1" : null, duration_ms: i % 5 === 0 ? 100 + i : r.duration_ms + 0.25,
  }));
  for (let i = 0; i < records.length; i += 500) {
    assert.is(await sqlite.insert(records.slice(i, i + 500)), Math.min(500, records.length - i));
    assert.is(await postgres.insert(records.slice(i, i + 500)), Math.min(500, records.length - i));
  }
  // new records (new objects) whose request ids are stored already: another row each
  const again = records.slice(0, 10).map((r) => ({ ...r }));
  assert.is(await postgres.insert(again), 10, "a request id stored already is another row");
  assert.is(await sqlite.insert(again), 10, "a request id stored already is another row");
  // the same records tried again (a writer whose commit's answer was lost): stored once
  assert.is(await postgres.insert(again), 10, "all of them are stored");
  const reopened = await openAuditStore(url);
  assert.is(await reopened.insert(again.slice(0, 5)), 5, "through a new connection too");
  await reopened.close();
  assert.is((await postgres.query(parseFilter({ request_id: "r-3" }))).length, 2);
  const filters = [
    {}, { order: "asc", limit: "50", offset: "7" }, { model: "beta" }, { status: "error" }, { endpoint: "/v1/chat/completions", min_duration_ms: "500" },
    { since: new Date(NOW - 86_400_000).toISOString(), until: new Date(NOW - 3_600_000).toISOString() }, { client: "ci-bot", limit: "1000" }, { request_id: "r-42" },
  ];
  for (const raw of filters) {
    const filter = parseFilter(raw);
    assert.equal(await postgres.query(filter), await sqlite.query(filter), JSON.stringify(raw));
    const whole = parseFilter(raw, { defaultLimit: null });
    const a = await sqlite.stats(whole);
    const b = await postgres.stats(whole);
    // sums of floating-point durations, added in another order: equal to 9 digits
    assert.ok(Math.abs((a.tokensPerSecond ?? 0) - (b.tokensPerSecond ?? 0)) < 1e-9 * Math.max(1, a.tokensPerSecond ?? 0), `tokens/s ${a.tokensPerSecond} ${b.tokensPerSecond}`);
    assert.equal({ ...b, tokensPerSecond: null }, { ...a, tokensPerSecond: null }, JSON.stringify(raw));
    for (const by of ["client", "model", "endpoint", "day"]) assert.equal(await postgres.statsBy(whole, by), await sqlite.statsBy(whole, by), `${by} ${JSON.stringify(raw)}`);
    for (const format of ["csv", "jsonl", "json"]) {
      const texts = [];
      for (const store of [sqlite, postgres]) {
        let text = "";
        await exportRows(store, { ...whole, order: raw.order ?? "asc" }, format, async (t) => { text += t; return true; });
        texts.push(text);
      }
      assert.ok(texts[0].length > 10 || raw.request_id, `${format} ${JSON.stringify(raw)}: ${texts[0]}`);
      assert.is(texts[1], texts[0], `${format} ${JSON.stringify(raw)}`);
    }
    // page by page (PostgreSQL renders pages ahead of the one read), both ways: the same pages
    const pages = async (store, order) => {
      const got = [];
      for await (const page of store.exportPages({ ...whole, order }, "json", "\n", raw.limit ? 16 : 113)) got.push([page.count, page.text]);
      return got;
    };
    for (const order of ["asc", "desc"]) assert.equal(await pages(postgres, order), await pages(sqlite, order), `pages ${order} ${JSON.stringify(raw)}`);
  }
  assert.is(await postgres.lastId(), await sqlite.lastId());
  assert.equal(await postgres.after(2990, parseFilter({}, { defaultLimit: null })), await sqlite.after(2990, parseFilter({}, { defaultLimit: null })));
  // prune: the same count; whole days go as dropped partitions
  const cutoff = NOW - 2 * 86_400_000 + 3_600_000;
  assert.is(await postgres.countOlderThan(cutoff), await sqlite.countOlderThan(cutoff));
  const partitions = async () => (await postgres.pool.query("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1")).rows.map((r) => r.name);
  const before = await partitions();
  assert.ok(before.length >= 4, `${before}`);
  assert.is(await postgres.prune(cutoff), await sqlite.prune(cutoff));
  const after = await partitions();
  assert.ok(after.length < before.length, "whole days dropped");
  assert.equal(after, before.filter((name) => name >= "audit_logs_p20261126"));
  assert.equal(await postgres.query(parseFilter({ limit: "5000" })), await sqlite.query(parseFilter({ limit: "5000" })));
  await sqlite.close();
  await postgres.close();

  // every audit command, byte for byte
  const home = tempDir();
  for (const args of [["tail", "-n", "30"], ["tail", "--json", "-n", "5", "--status", "error"], ["export", "--format", "csv"], ["export", "--format", "json", "--model", "gamma"], ["stats"], ["stats", "--by", "day", "--json"], ["verify"], ["prune", "--dry-run", "--older-than", new Date(NOW - 86_400_000).toISOString()]]) {
    const fromFile = await runCli(["audit", ...args, "--db", file], { env: { MLXS_HOME: home } });
    const fromPg = await runCli(["audit", ...args, "--db", url], { env: { MLXS_HOME: home } });
    assert.is(fromFile.code, 0, fromFile.stderr);
    assert.is(fromPg.code, 0, fromPg.stderr);
    assert.is(fromPg.stdout, fromFile.stdout, args.join(" "));
  }
});

contract.run();

const fleet = suite("a fleet on one database");

/** `mlxs audit tail -f` on `db`, with what it printed so far. */
function follow(db, home) {
  const child = spawn(process.execPath, [CLI, "audit", "tail", "-f", "--json", "-n", "0", "--db", db], { env: { ...process.env, MLXS_HOME: home, NO_COLOR: "1" } });
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => { out += c; });
  child.stderr.on("data", (c) => { err += c; });
  return { child, out: () => out, err: () => err, stop: () => { const closed = new Promise((r) => child.on("close", r)); child.kill("SIGINT"); return closed; } };
}

const ask = (url, id) => httpCall(`${url}/v1/embeddings`, jsonRequest({ input: "fleet" }, { "x-request-id": id }));

fleet("two daemons write one database; tail -f follows both through LISTEN/NOTIFY; records say where they were served", async () => {
  const url = await freshDatabase();
  const model = await testModel();
  const home = tempDir();
  const a = await startServer(["--model", model, "--db", url, "--instance", "east-1"]);
  const b = await startServer(["--model", model, "--db", url, "--instance", "west-2"]);
  const tail = follow(url, home);
  try {
    // the follower is listening once one record of each reaches it
    let warm = 0;
    await waitFor(async () => {
      if (/"warm-a-\d+"/.test(tail.out()) && /"warm-b-\d+"/.test(tail.out())) return true;
      await ask(a.url, `warm-a-${warm}`);
      await ask(b.url, `warm-b-${warm++}`);
      return false;
    }, { what: "the follower to follow", intervalMs: 300, describe: () => tail.err() });
    const ids = [];
    await Promise.all([a, b].map(async (server, s) => {
      for (let i = 0; i < 60; i++) {
        const id = `fleet-${s}-${i}`;
        ids.push(id);
        assert.is((await ask(server.url, id)).status, 200);
      }
    }));
    await waitFor(() => ids.every((id) => tail.out().includes(`"${id}"`)), { what: "all 120 records followed", describe: () => `${ids.filter((id) => !tail.out().includes(`"${id}"`)).length} missing; ${tail.err()}` });
    const lines = tail.out().trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.request_id.startsWith("fleet-"));
    assert.is(lines.length, 120, "each once");
    assert.equal([...new Set(lines.map((r) => `${r.request_id.slice(0, 7)} ${r.instance}`))].sort(), ["fleet-0 east-1", "fleet-1 west-2"]);
    // either daemon's audit routes read the whole fleet's log
    const logs = await httpCall(`${b.url}/v1/audit/logs?limit=1000&endpoint=/v1/embeddings`);
    assert.is(logs.status, 200);
    assert.ok(ids.every((id) => logs.body.data.some((r) => r.request_id === id)));
    const viaHttp = await httpCall(`${a.url}/v1/audit/export?format=csv&endpoint=/v1/embeddings&order=asc`);
    const viaCli = await runCli(["audit", "export", "--format", "csv", "--endpoint", "/v1/embeddings", "--order", "asc", "--db", url], { env: { MLXS_HOME: home } });
    assert.is(viaHttp.text, viaCli.stdout);
    assert.is(await tail.stop(), 0);
  } finally {
    if (tail.child.exitCode === null) tail.child.kill("SIGKILL");
    assert.is(await a.stop(), 0);
    assert.is(await b.stop(), 0);
  }
});

fleet("PostgreSQL restarts under load: records are held and written when it is back, none dropped; prune under load", async () => {
  const url = await freshDatabase();
  const server = await startServer(["--model", await testModel(), "--db", url]);
  let down = false;
  try {
    const sent = [];
    const failures = [];
    let stopSending = false;
    // a failure is kept for the assertion below, never left to reject unseen
    const sending = (async () => {
      for (let i = 0; !stopSending && failures.length === 0; i++) {
        const id = `load-${i}`;
        try {
          const res = await ask(server.url, id);
          if (res.status === 200) sent.push(id);
          else failures.push(`${id}: ${res.status}`);
        } catch (error) {
          failures.push(`${id}: ${error.message}`);
        }
      }
    })();
    const going = () => { if (failures.length) throw new Error(`answering failed: ${failures[0]}\n${server.stderr()}`); return true; };
    await waitFor(() => going() && sent.length >= 30, { what: "traffic" });
    down = true;
    await pg.stop();
    const during = sent.length;
    await waitFor(() => going() && sent.length >= during + 30, { what: "answers while PostgreSQL is down" });
    await waitFor(() => /keeping \d+ records to write/.test(server.stderr()), { what: "the writer to hold its records", describe: () => server.stderr() });
    await pg.start();
    down = false;
    // prune while it writes: nothing older than an hour ago here, and no error
    const pruned = await runCli(["audit", "prune", "--older-than", "1h", "--db", url]);
    assert.is(pruned.code, 0, pruned.stderr);
    await waitFor(() => going() && sent.length >= during + 60, { what: "more answers after the restart" });
    stopSending = true;
    await sending;
    assert.equal(failures, [], "answering never waits for the audit log");
    const store = await openAuditStore(url);
    await waitFor(async () => {
      const stored = new Set((await store.query(parseFilter({ endpoint: "/v1/embeddings", limit: "100000" }))).map((r) => r.request_id));
      return sent.every((id) => stored.has(id));
    }, { what: "every record written", timeoutMs: 30_000, intervalMs: 250 });
    await store.close();
    assert.match(server.stderr(), /audit log writable again \(0 records dropped in all\)/);
  } finally {
    if (down) await pg.start();
    assert.is(await server.stop(), 0);
  }
});

fleet("one row per request: 100 requests sharing one X-Request-ID give 100 rows; two streams with overlapping filters each give every row once; /metrics agrees", async () => {
  const url = await freshDatabase();
  const server = await startServer(["--model", await testModel(), "--db", url, "--metrics"]);
  const store = await openAuditStore(url);
  try {
    await checkSharedRequestId(server, () => store.query(parseFilter({ request_id: SHARED_ID }, { defaultLimit: null })));
  } finally {
    await store.close();
    assert.is(await server.stop(), 0);
  }
});

fleet("a database of the old schema (unique request id and time) migrates in place: its rows kept, a repeated id another row", async () => {
  const url = await freshDatabase();
  const admin = new Client({ connectionString: url });
  await admin.connect();
  await admin.query(PG_MIGRATIONS[0]);
  await admin.query("CREATE TABLE mlxs_audit_schema (version int NOT NULL); INSERT INTO mlxs_audit_schema VALUES (1)");
  await admin.query(`CREATE TABLE audit_logs_p20261128 PARTITION OF audit_logs FOR VALUES FROM (${Date.UTC(2026, 10, 28)}) TO (${Date.UTC(2026, 10, 29)})`);
  for (let i = 0; i < 20; i++) {
    await admin.query("INSERT INTO audit_logs (request_id, timestamp, endpoint, duration_ms, status) VALUES ($1, $2, '/v1/embeddings', 5, 'success')", [`old-${i}`, NOW]);
  }
  const refused = await admin.query("INSERT INTO audit_logs (request_id, timestamp, endpoint, duration_ms, status) VALUES ('old-1', $1, 'x', 1, 'success')", [NOW]).then(() => null, (e) => e);
  assert.match(refused?.message ?? "", /duplicate key/, "the old schema keys by request id and time");
  await admin.end();
  const store = await openAuditStore(url);
  try {
    const before = await store.query(parseFilter({ order: "asc" }, { defaultLimit: null }));
    assert.equal(before.map((r) => r.request_id), Array.from({ length: 20 }, (_, i) => `old-${i}`));
    assert.is(await store.insert([{ ...syntheticRecords(1, { now: NOW })[0], request_id: "old-1" }]), 1);
    const again = await store.query(parseFilter({ request_id: "old-1" }));
    assert.is(again.length, 2);
    assert.ok(again.every((r) => r.id > 0) && again[0].id !== again[1].id);
    assert.is((await store.pool.query("SELECT max(version) AS v FROM mlxs_audit_schema")).rows[0].v, PG_MIGRATIONS.length);
    // the rows from before the chain were chained in place, in id order, from genesis
    const result = await verifyChains(store);
    assert.equal(result.chains.map((c) => [c.chain, c.records, c.from, c.broken]), [["", 21, "genesis", null]]);
  } finally {
    await store.close();
  }
});

fleet.run();

const chained = suite("the hash chain on PostgreSQL");

/**
 * A log of 300 records in two chains ("a", "b"), fractional durations, written by the real
 * writer in three runs, ten minutes apart over three days (partitions); ids burnt between runs.
 */
async function writtenPgLog() {
  const url = await freshDatabase();
  const start = NOW - 3 * 86_400_000;
  for (let batch = 0; batch < 3; batch++) {
    const writer = AuditWriter.forLocation(url);
    for (let i = batch * 100; i < (batch + 1) * 100; i++) {
      writer.record({ ...syntheticRecords(1, { now: start })[0], request_id: `c-${i}`, timestamp: start + i * 600_000, duration_ms: 100 + Math.random() * 1000, ttft_ms: Math.random() * 50, instance: i % 3 === 0 ? "b" : "a" });
    }
    await writer.close();
    assert.is(writer.stats.written, 100);
    await sql(url, "SELECT setval('audit_logs_id_seq', nextval('audit_logs_id_seq') + 5)");
  }
  return url;
}

async function sql(url, text, params = []) {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** A copy of the database at `url` (no one connected to it), with `text` run in it. */
let copies = 0;
async function tamperedPg(url, text, params = []) {
  const name = `copy${++copies}`;
  await sql(pg.url, `CREATE DATABASE ${name} TEMPLATE ${new URL(url).pathname.slice(1)}`);
  const copy = pg.url.replace(/\/postgres$/, `/${name}`);
  if (text) await sql(copy, text, params);
  return copy;
}

async function verifyPg(url) {
  const store = await openAuditStore(url, { create: false });
  try {
    return await verifyChains(store);
  } finally {
    await store.close();
  }
}

const brokenAt = (result) => result.chains.filter((c) => c.broken).map((c) => [c.chain, c.broken.id, c.broken.kind]);
const chainRows = (url, instance) => sql(url, "SELECT * FROM audit_logs WHERE instance = $1 ORDER BY chain_seq", [instance]);

chained("records written through the real writer verify whole, and mlxs audit verify prints each chain as on SQLite; each tampering is found at its row", async () => {
  const url = await writtenPgLog();
  const { code, stdout, stderr } = await runCli(["audit", "verify", "--db", url, "--json"]);
  assert.is(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.equal([report.whole, report.rows], [true, 300]);
  assert.equal(report.chains.map((c) => [c.chain, c.records, c.broken]), [["a", 200, null], ["b", 100, null]]);
  const heads = await sql(url, "SELECT instance, seq, link FROM audit_chain_heads ORDER BY instance");
  assert.equal(heads.map((h) => [h.instance, Number(h.seq), h.link]), report.chains.map((c) => [c.chain, c.records, c.head]));
  const text = await runCli(["audit", "verify", "--db", url]);
  assert.is(text.code, 0);
  assert.match(text.stdout, /chain "a": whole, 200 records/);
  assert.match(text.stdout, /audit log whole: 2 chain\(s\), 300 rows/);

  const a = await chainRows(url, "a");
  const b = await chainRows(url, "b");
  // one column of one row edited
  const edited = await tamperedPg(url, "UPDATE audit_logs SET duration_ms = duration_ms + 0.001 WHERE id = $1", [a[120].id]);
  assert.equal(brokenAt(await verifyPg(edited)), [["a", Number(a[120].id), "altered"]]);
  const cli = await runCli(["audit", "verify", "--db", edited]);
  assert.is(cli.code, 1);
  assert.match(cli.stdout, new RegExp(`chain "a": BROKEN at row ${a[120].id}: altered`));
  assert.match(cli.stdout, /chain "b": whole/);
  // a row deleted: found at the row after it in its chain
  assert.equal(brokenAt(await verifyPg(await tamperedPg(url, "DELETE FROM audit_logs WHERE id = $1", [b[40].id]))), [["b", Number(b[41].id), "removed"]]);
  // the newest rows deleted: found against the kept head
  const cut = brokenAt(await verifyPg(await tamperedPg(url, "DELETE FROM audit_logs WHERE instance = 'a' AND chain_seq > 196")));
  assert.equal(cut, [["a", Number(a[195].id), "truncated"]]);
  // two rows' contents swapped (every column but the id and the chain's): the first no longer matches its link
  const columns = Object.keys(a[0]).filter((c) => !["id", "chain_seq", "chain_prev", "chain_link"].includes(c) && a[50][c] !== a[51][c]);
  const swap = `UPDATE audit_logs SET ${columns.map((c, i) => `${c} = CASE id WHEN $1 THEN $${i + 3}::${c === "timestamp" ? "bigint" : "text"} ELSE $${i + 3 + columns.length}::${c === "timestamp" ? "bigint" : "text"} END${["duration_ms", "ttft_ms", "load_ms"].includes(c) ? "::float8" : ["prompt_tokens", "completion_tokens", "total_tokens", "status_code", "tool_calls"].includes(c) ? "::int" : c === "stream" ? "::smallint" : ""}`).join(", ")} WHERE id IN ($1, $2)`;
  const swapped = await tamperedPg(url, swap, [a[50].id, a[51].id, ...columns.map((c) => a[51][c]), ...columns.map((c) => a[50][c])]);
  assert.equal(brokenAt(await verifyPg(swapped)), [["a", Number(a[50].id), "altered"]]);
  // a forged row in an unused id, its link computed from the row before it
  const [gap] = await sql(url, "SELECT max(id) + 1 AS id FROM audit_logs WHERE id <= 100");
  const before = a.filter((r) => Number(r.id) < Number(gap.id)).at(-1);
  const forged = { ...before, id: Number(gap.id), request_id: "forged", chain_seq: Number(before.chain_seq) + 1, chain_prev: before.chain_link };
  for (const c of ["timestamp", "chain_seq"]) forged[c] = Number(forged[c]);
  forged.chain_link = linkOf(forged.chain_prev, encodeRow(forged));
  const keys = Object.keys(forged);
  const inserted = await tamperedPg(url, `INSERT INTO audit_logs (${keys.join(", ")}) VALUES (${keys.map((_, i) => `$${i + 1}`).join(", ")})`, keys.map((c) => forged[c]));
  assert.equal(brokenAt(await verifyPg(inserted)), [["a", forged.id, "inserted"]]);
  // one put in with no link at all
  const bare = await tamperedPg(url, "INSERT INTO audit_logs (id, request_id, timestamp, endpoint, duration_ms, status, instance) VALUES ($1, 'x', $2, '/v1/models', 1, 'success', 'b')", [forged.id, Number(before.timestamp)]);
  assert.equal(brokenAt(await verifyPg(bare)), [["b", forged.id, "unchained"]]);
  // an untouched copy: no false alarm
  assert.equal(brokenAt(await verifyPg(await tamperedPg(url))), []);
});

chained("a pruned log (whole days dropped, the rest deleted) verifies from its checkpoint; a change after the prune is still found", async () => {
  const url = await writtenPgLog();
  const store = await openAuditStore(url);
  const [{ t: cutoff }] = await sql(url, "SELECT timestamp AS t FROM audit_logs ORDER BY timestamp OFFSET 150 LIMIT 1");
  const pruned = await store.prune(Number(cutoff));
  await store.close();
  assert.is(pruned, 150);
  const result = await verifyPg(url);
  assert.equal(brokenAt(result), []);
  assert.ok(result.chains.every((c) => c.from === "checkpoint" && c.skipped === 0), JSON.stringify(result.chains));
  assert.is(result.rows, 150);
  const a = await chainRows(url, "a");
  assert.equal(brokenAt(await verifyPg(await tamperedPg(url, "UPDATE audit_logs SET prompt_tokens = prompt_tokens + 1 WHERE id = $1", [a.at(-10).id]))), [["a", Number(a.at(-10).id), "altered"]]);
});

chained("two writers on one database at once (as two daemons) keep every chain whole, though their ids interleave out of chain order", async () => {
  const url = await freshDatabase();
  await (await openAuditStore(url)).close();
  const writers = ["p", "q"].map(() => AuditWriter.forLocation(url, { batchSize: 50, flushIntervalMs: 5 }));
  await Promise.all(writers.map(async (writer, w) => {
    for (let i = 0; i < 1500; i++) {
      writer.record({ ...syntheticRecords(1, { now: NOW })[0], request_id: `w${w}-${i}`, timestamp: NOW + i, instance: i % 2 ? "a" : "b" });
      if (i % 25 === 24) await new Promise((r) => setImmediate(r));
    }
    await writer.close();
  }));
  assert.equal(writers.map((w) => w.stats.written), [1500, 1500]);
  const result = await verifyPg(url);
  assert.equal(brokenAt(result), []);
  assert.is(result.rows, 3000);
  assert.equal(result.chains.map((c) => [c.chain, c.records]), [["a", 1500], ["b", 1500]]);

  // ids are minted before the chain's lock: a writer that minted first may link last. Made
  // to happen here: p's first try waits on a held head lock past its lock_timeout (ids
  // minted, nothing stored), q writes, p tries again with the same ids; a retry of rows
  // already stored (a lost commit's answer) links nothing twice
  const racing = await freshDatabase();
  await (await openAuditStore(racing)).insert([{ ...syntheticRecords(1, { now: NOW })[0], instance: "a" }]);
  await sql(pg.url, `ALTER DATABASE ${new URL(racing).pathname.slice(1)} SET lock_timeout = '300ms'`);
  const [p, q] = [await openAuditStore(racing), await openAuditStore(racing)];
  const batch = (name) => syntheticRecords(20, { now: NOW, prefix: name }).map((r) => ({ ...r, instance: "a" }));
  const first = batch("p");
  const holder = new Client({ connectionString: racing });
  await holder.connect();
  await holder.query("BEGIN; SELECT * FROM audit_chain_heads FOR UPDATE");
  const refused = await p.insert(first).then(() => null, (e) => e);
  assert.match(refused?.message ?? "", /lock timeout/);
  await holder.query("COMMIT");
  await holder.end();
  assert.is(await q.insert(batch("q")), 20);
  assert.is(await p.insert(first), 20);
  assert.is(await p.insert(first), 20, "tried again: stored once, linked once");
  await p.close();
  await q.close();
  const [{ n }] = await sql(racing, "SELECT count(*) AS n FROM (SELECT id < lag(id) OVER (PARTITION BY instance ORDER BY chain_seq) AS back FROM audit_logs) x WHERE back");
  assert.is(Number(n), 1, "p's rows follow q's in the chain, with lower ids");
  const raced = await verifyPg(racing);
  assert.equal([brokenAt(raced), raced.rows, raced.chains.map((c) => c.records)], [[], 41, [41]]);
});

chained.run();

const secrets = suite("the password");

secrets("the password is in no line, error, help text, record or file; PGPASSWORD and ~/.pgpass work as libpq users expect", async () => {
  const url = await freshDatabase();
  const home = tempDir();
  const server = await startServer(["--model", await testModel(), "--db", url], { home });
  let stderr = "";
  try {
    assert.is((await ask(server.url, "secret-1")).status, 200);
    const bare = url.replace(`:${PASSWORD}@`, "@");
    const tail = await runCli(["audit", "tail", "--db", bare], { env: { MLXS_HOME: home, PGPASSWORD: PASSWORD } });
    assert.is(tail.code, 0, tail.stderr);
    // ~/.pgpass: host:port:database:user:password, readable by its owner only
    const { hostname, port, pathname, username } = new URL(url);
    const userHome = tempDir();
    writeFileSync(join(userHome, ".pgpass"), `${hostname}:${port}:${pathname.slice(1)}:${username}:${PASSWORD}\n`, { mode: 0o600 });
    const fromFile = await runCli(["audit", "stats", "--db", bare], { env: { MLXS_HOME: home, HOME: userHome, PGPASSWORD: undefined } });
    assert.is(fromFile.code, 0, fromFile.stderr);
    // and with none anywhere: refused at once, and said so
    const started = Date.now();
    const without = await runCli(["audit", "stats", "--db", bare], { env: { MLXS_HOME: home, HOME: tempDir(), PGPASSWORD: undefined } });
    assert.is(without.code, 1);
    assert.match(without.stderr, /^mlxs: cannot use audit database postgres:\/\/mlxs@\S+: the server asks for a password and none was given \(in the URL, PGPASSWORD or ~\/\.pgpass\)\n$/);
    assert.ok(Date.now() - started < 30_000, "not after the server's own authentication timeout");
    await waitFor(async () => (await runCli(["audit", "tail", "--json", "--db", url], { env: { MLXS_HOME: home } })).stdout.includes("secret-1"), { what: "the record" });
    const wrong = await runCli(["audit", "stats", "--db", url.replace(PASSWORD, "Wrong-Password-1")], { env: { MLXS_HOME: home } });
    assert.is(wrong.code, 1);
    assert.match(wrong.stderr, /^mlxs: .*password authentication failed/);
    assert.not.match(wrong.stderr, /Wrong-Password-1|pg-Secret/);
    const missing = await runCli(["audit", "tail", "--db", url.replace(/\/t\d+$/, "/nope")], { env: { MLXS_HOME: home } });
    assert.is(missing.code, 1);
    assert.not.match(missing.stderr, new RegExp(PASSWORD));
    // sslmode passes through to the driver: this cluster has no TLS, so requiring it fails
    const tls = await runCli(["audit", "stats", "--db", `${url}?sslmode=require`], { env: { MLXS_HOME: home } });
    assert.is(tls.code, 1);
    assert.match(tls.stderr, /SSL/i);
    assert.not.match(tls.stderr, new RegExp(PASSWORD));
    const help = await runCli(["serve", "--help"], { env: { MLXS_HOME: home, MLXS_AUDIT_DB: url } });
    assert.not.match(help.stdout + help.stderr, new RegExp(PASSWORD));
  } finally {
    assert.is(await server.stop(), 0);
    stderr = server.stderr();
  }
  assert.not.match(stderr, new RegExp(PASSWORD));
  assertNoMarker(home, PASSWORD);
  const store = await openAuditStore(url);
  const text = JSON.stringify(await store.query(parseFilter({ limit: "1000" })));
  await store.close();
  assert.not.match(text, new RegExp(PASSWORD));
});

secrets.run();
