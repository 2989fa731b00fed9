import { suite } from "uvu";
import * as assert from "uvu/assert";
import { execFileSync, spawn } from "node:child_process";
import { connect } from "node:net";
import { join } from "node:path";
import { readdirSync, renameSync, rmSync } from "node:fs";
import { request } from "undici";
import fc from "fast-check";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import { AuditStore } from "../dist/audit/store.js";
import { syntheticRecords } from "./fixtures/audit-records.js";
import { CLI, ROOT, auditRows, httpCall, jsonRequest, rssKb, runCli, startServer, tempDir, testModel, waitFor, waitForRows, waitForText } from "./helpers.js";

const json = jsonRequest;
const call = httpCall;
const embed = (url, id) => call(`${url}/v1/embeddings`, json({ input: `load ${id}` }, { "x-request-id": id }));

const audit = suite("audit under faults");

audit("SIGKILL during heavy writing: the database opens, passes integrity_check, and lost at most one flush", async () => {
  const db = join(tempDir(), "audit.db");
  const child = spawn(process.execPath, [join(ROOT, "tests/fixtures/audit-writer-forever.js"), db]);
  let out = "";
  child.stdout.on("data", (c) => { out += c; });
  const confirmedSoFar = () => Math.max(0, ...out.trim().split("\n").filter(Boolean).map((l) => Number(l.split(" ")[1])));
  // killed in the middle of writing: once several flushes have committed
  await waitFor(() => confirmedSoFar() > 3000, { what: "3000 confirmed records" });
  child.kill("SIGKILL");
  await new Promise((r) => child.on("close", r));
  const confirmed = confirmedSoFar();
  assert.ok(confirmed > 3000, `confirmed ${confirmed}`);
  const raw = await open({ filename: db, driver: sqlite3.Database });
  assert.equal(await raw.all("PRAGMA integrity_check"), [{ integrity_check: "ok" }]);
  const { n } = await raw.get("SELECT count(*) AS n FROM audit_logs");
  await raw.close();
  // every flush the writer confirmed is there; what was lost is at most the unflushed tail
  assert.ok(n >= confirmed, `${n} rows, ${confirmed} confirmed`);
  assert.ok(n - confirmed <= 200 * 15, `${n - confirmed} more than confirmed`);
});

audit("a database unwritable for a while (immutable) while serving: requests succeed, their records wait and are written once it is writable again", async () => {
  const server = await startServer(["--model", await testModel()]);
  const files = [server.db, `${server.db}-wal`];
  try {
    for (let i = 0; i < 3; i++) assert.is((await embed(server.url, `before-${i}`)).status, 200);
    await waitForRows(server.db, (rows) => rows.filter((r) => r.request_id.startsWith("before-")).length === 3);
    execFileSync("chattr", ["+i", ...files]);
    for (let i = 0; i < 3; i++) assert.is((await embed(server.url, `during-${i}`)).status, 200);
    await waitForText(server.stderr, /cannot write the audit log: .*; keeping \d+ records to write when it can be written/);
    execFileSync("chattr", ["-i", ...files]);
    for (let i = 0; i < 3; i++) assert.is((await embed(server.url, `after-${i}`)).status, 200);
    await waitForText(server.stderr, /audit log writable again \(0 records dropped in all\)/);
  } finally {
    try { execFileSync("chattr", ["-i", ...files]); } catch { /* already writable */ }
    assert.is(await server.stop(), 0);
  }
  const ids = (await auditRows(server.db)).map((r) => r.request_id);
  for (const id of ["before-0", "before-2", "during-0", "during-1", "during-2", "after-0", "after-2"]) assert.ok(ids.includes(id), id);
  assert.not.match(server.stderr(), /dropping audit records|records were dropped/);
});

audit("the database moved away, then deleted, while serving: nothing lost, a new file begun, tail -f and the stream follow", async () => {
  const server = await startServer(["--model", await testModel()]);
  const archived = join(server.home, "archived.db");
  const follower = spawn(process.execPath, [CLI, "audit", "tail", "-f", "--json", "-n", "0"], { env: { ...process.env, MLXS_HOME: server.home, NO_COLOR: "1" } });
  let followed = "";
  let followerErr = "";
  follower.stdout.on("data", (c) => { followed += c; });
  follower.stderr.on("data", (c) => { followerErr += c; });
  const stream = await request(`${server.url}/v1/audit/stream`);
  let streamed = "";
  const streaming = (async () => { for await (const c of stream.body) streamed += c; })().catch(() => undefined);
  // the audit routes leave records too: only the embeddings matter here
  const ids = (text) => [...text.matchAll(/"request_id":"((?:first|second|third)-\d)"/g)].map((m) => m[1]);
  const embeddings = async (db) => (await auditRows(db)).filter((r) => r.endpoint === "/v1/embeddings" && !r.request_id.startsWith("warm")).map((r) => r.request_id);
  // each step waits until the follower and the stream have shown what came before it
  const shown = async (names) => {
    await waitFor(() => names.every((n) => followed.includes(`"${n}"`) && streamed.includes(`"${n}"`)), {
      what: `${names.join(", ")} followed and streamed`, describe: () => `follower: ${followerErr}`,
    });
  };
  try {
    // the follower and the stream are following once a record reaches both; one written
    // before the follower has started (a slow start under load) never does: write more (a CLI
    // starting on a machine loaded past two burners and another test file took over 20 s once)
    let warm = 0;
    await waitFor(async () => {
      if (/"warm-\d+"/.test(followed) && /"warm-\d+"/.test(streamed)) return true;
      assert.is((await embed(server.url, `warm-${warm++}`)).status, 200);
      return false;
    }, { what: "the follower and the stream to follow", timeoutMs: 60_000, intervalMs: 250, describe: () => `${warm} sent; the follower printed ${followed.length} bytes (stderr: ${followerErr}), the stream ${streamed.length}` });
    for (let i = 0; i < 2; i++) assert.is((await embed(server.url, `first-${i}`)).status, 200);
    await shown(["first-0", "first-1"]);
    // a log rotation by hand: the -wal and -shm files stay behind under the old name
    renameSync(server.db, archived);
    for (let i = 0; i < 2; i++) assert.is((await embed(server.url, `second-${i}`)).status, 200);
    await shown(["second-0", "second-1"]);
    rmSync(server.db);
    for (let i = 0; i < 2; i++) assert.is((await embed(server.url, `third-${i}`)).status, 200);
    await shown(["third-0", "third-1"]);
    assert.equal((await call(`${server.url}/v1/audit/logs?order=asc&endpoint=/v1/embeddings`)).body.data.map((r) => r.request_id), ["third-0", "third-1"]);
    const closed = new Promise((r) => follower.on("close", r));
    follower.kill("SIGINT");
    assert.is(await closed, 0);
  } finally {
    // a failure above must not leave the follower running (the file would never end)
    if (follower.exitCode === null) follower.kill("SIGKILL");
    stream.body.destroy();
    assert.is(await server.stop(), 0);
  }
  await streaming;
  assert.is(server.stderr().match(/was moved or deleted while open/g)?.length, 2, server.stderr());
  // the moved file got everything its WAL held (SQLite alone would have left that behind)
  const raw = await open({ filename: archived, driver: sqlite3.Database });
  assert.equal(await raw.all("PRAGMA integrity_check"), [{ integrity_check: "ok" }]);
  await raw.close();
  assert.equal(await embeddings(archived), ["first-0", "first-1"]);
  assert.equal(await embeddings(server.db), ["third-0", "third-1"]);
  assert.equal(readdirSync(server.home).filter((f) => f.includes("orphaned")), []);
  const all = ["first-0", "first-1", "second-0", "second-1", "third-0", "third-1"];
  assert.equal(ids(followed), all, followerErr);
  assert.equal(ids(streamed), all);
  assert.match(followerErr, /was moved or deleted; following the new file/);
});

audit("a -wal file left without its database is set aside, never adopted by a new one", async () => {
  const home = tempDir();
  const db = join(home, "audit.db");
  const store = await AuditStore.open(db);
  await store.insert(syntheticRecords(50, { prefix: "lost" }));
  // moved away while open, and the process gone without closing it (as after a SIGKILL)
  renameSync(db, join(home, "moved.db"));
  const r = await runCli(["embed", "--model", await testModel(), "fresh"], { env: { MLXS_HOME: home } });
  assert.is(r.code, 0, r.stderr);
  const rows = await auditRows(db);
  assert.equal(rows.map((row) => row.endpoint), ["cli:embed"]);
  const raw = await open({ filename: db, driver: sqlite3.Database });
  assert.equal(await raw.all("PRAGMA integrity_check"), [{ integrity_check: "ok" }]);
  await raw.close();
  assert.is(readdirSync(home).filter((f) => f.startsWith("audit.db-wal.orphaned-")).length, 1);
  await store.close();
});

audit("the database locked by another process past the busy timeout: records wait, none dropped", async () => {
  const server = await startServer(["--model", await testModel()]);
  try {
    assert.is((await embed(server.url, "before")).status, 200);
    await waitForRows(server.db, (rows) => rows.some((r) => r.request_id === "before"));
    // what a long VACUUM or a forgotten sqlite3 session does
    const locker = await open({ filename: server.db, driver: sqlite3.Database });
    await locker.exec("BEGIN IMMEDIATE");
    for (let i = 0; i < 3; i++) assert.is((await embed(server.url, `locked-${i}`)).status, 200);
    // the writer's busy timeout is 5 s
    await waitForText(server.stderr, /the database stayed locked by another process; keeping 3 records/);
    await locker.exec("COMMIT");
    await locker.close();
    await waitForText(server.stderr, /audit log writable again \(0 records dropped in all\)/);
  } finally {
    assert.is(await server.stop(), 0);
  }
  const ids = (await auditRows(server.db)).map((r) => r.request_id);
  assert.equal(ids, ["before", "locked-0", "locked-1", "locked-2"]);
  assert.not.match(server.stderr(), /dropping audit records|records were dropped/);
});

audit("prune and export against a daemon under load: no errors, nothing exported twice or lost", async () => {
  const home = tempDir();
  const store = await AuditStore.open(join(home, "audit.db"));
  await store.insert(syntheticRecords(4000, { now: Date.now() - 40 * 86_400_000, prefix: "old" }));
  await store.close();
  const server = await startServer(["--model", await testModel(), "--retention-days", "0"], { home });
  try {
    let sent = 0;
    const load = (async () => {
      const deadline = Date.now() + 3000;
      await Promise.all(Array.from({ length: 4 }, async (_, w) => {
        while (Date.now() < deadline) {
          const r = await embed(server.url, `load-${w}-${sent++}`);
          assert.is(r.status, 200);
        }
      }));
    })();
    // prune and export while the load runs
    await waitFor(() => sent >= 20, { what: "the load to be under way" });
    const [pruned, exported] = await Promise.all([
      runCli(["audit", "prune", "--older-than", "30d"], { env: { MLXS_HOME: home } }),
      runCli(["audit", "export", "--format", "jsonl"], { env: { MLXS_HOME: home } }),
    ]);
    await load;
    assert.is(pruned.code, 0, pruned.stderr);
    assert.match(pruned.stdout, /^pruned 4000 records/);
    assert.is(exported.code, 0, exported.stderr);
    // an export that ran after the prune's commit and before the writer's next one finds no row at all
    const exportedIds = exported.stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l).request_id);
    assert.is(new Set(exportedIds).size, exportedIds.length, "no record exported twice");
    assert.is(await server.stop(), 0);
    const rows = await auditRows(server.db);
    const loadIds = rows.map((r) => r.request_id).filter((id) => id.startsWith("load-"));
    assert.is(loadIds.length, sent, "every request of the load has its record");
    assert.not.ok(rows.some((r) => r.request_id.startsWith("old-")));
  } finally {
    server.child.kill("SIGKILL");
  }
});

audit("two mlxs serve processes writing one database: both work, every record is there", async () => {
  const home = tempDir();
  const model = await testModel();
  const [a, b] = await Promise.all([startServer(["--model", model], { home }), startServer(["--model", model], { home })]);
  try {
    await Promise.all([a, b].map((server, s) => Promise.all(Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; i < 10; i++) assert.is((await embed(server.url, `two-${s}-${w}-${i}`)).status, 200);
    }))));
  } finally {
    assert.is(await a.stop(), 0);
    assert.is(await b.stop(), 0);
  }
  const ids = new Set((await auditRows(join(home, "audit.db"))).map((r) => r.request_id));
  for (let s = 0; s < 2; s++) for (let w = 0; w < 4; w++) for (let i = 0; i < 10; i++) assert.ok(ids.has(`two-${s}-${w}-${i}`));
});

audit.run();

const storm = suite("disconnect storm and slow clients");

storm("500 streams whose clients vanish at random: every sequence free after, memory back, one cancelled record each", async () => {
  const server = await startServer(["--model", await testModel({ endless: true }), "--parallel", "4", "--queue", "600"]);
  // enough connections that every request is on the wire at once
  const { Agent } = await import("undici");
  const dispatcher = new Agent({ connections: 600 });
  try {
    await call(`${server.url}/v1/chat/completions`, json({ messages: [{ role: "user", content: "warm" }], max_tokens: 20 }));
    const before = rssKb(server.child.pid);
    // the clients vanish once every request is with the server (generating, queued, or
    // answered already): one that left before its request arrived would have no record
    let answered = 0;
    const arrived = waitFor(async () => {
      const { busy, waiting } = (await call(`${server.url}/health`)).body.models[0];
      return busy + waiting + answered >= 500;
    }, { what: "all 500 requests with the server", timeoutMs: 60_000, intervalMs: 50 });
    const outcomes = await Promise.all(Array.from({ length: 500 }, async (_, i) => {
      const controller = new AbortController();
      // then each at a random moment
      let timer;
      void arrived.then(() => { timer = setTimeout(() => controller.abort(), Math.random() * 500); }, () => controller.abort());
      let done = false;
      try {
        const res = await request(`${server.url}/v1/chat/completions`, { ...json({ messages: [{ role: "user", content: "go" }], max_tokens: 300, temperature: 1, stream: true }, { "x-request-id": `storm-${i}` }), signal: controller.signal, dispatcher });
        const text = await res.body.text();
        done = text.includes("[DONE]");
      } catch { /* vanished */ }
      answered++;
      await arrived.catch(() => undefined);
      clearTimeout(timer);
      return { id: `storm-${i}`, done };
    }));
    await arrived;
    // every request has ended (its record is written once its sequence is free)
    const storm = (rows) => rows.filter((r) => r.request_id.startsWith("storm-"));
    await waitForRows(server.db, (rows) => storm(rows).length === 500, { what: "500 storm records", timeoutMs: 60_000 });
    // every sequence free: a burst of --parallel requests starts at once
    const burst = await Promise.all(Array.from({ length: 4 }, () => call(`${server.url}/v1/chat/completions`, json({ messages: [{ role: "user", content: "burst" }], max_tokens: 5 }))));
    for (const r of burst) {
      assert.is(r.status, 200);
      assert.ok(r.body.timings.queue_ms < 50, `queued ${r.body.timings.queue_ms} ms`);
    }
    const after = rssKb(server.child.pid);
    assert.ok(after < before * 1.25 + 30_000, `RSS ${before} -> ${after} kB`);
    const rows = await auditRows(server.db);
    const byId = new Map(rows.map((r) => [r.request_id, r]));
    for (const { id, done } of outcomes) {
      const record = byId.get(id);
      assert.ok(record, `${id} has a record`);
      // a client that vanished after the server had sent the whole answer, but before it
      // read it all, was still answered in full
      assert.ok(done ? record.status === "success" : ["success", "cancelled"].includes(record.status), `${id}: ${record.status}`);
    }
    assert.ok(outcomes.filter((o) => byId.get(o.id).status === "cancelled").length > 0, "some streams were cut");
    assert.is(rows.filter((r) => r.request_id.startsWith("storm-")).length, 500);
  } finally {
    await dispatcher.close();
    assert.is(await server.stop(), 0);
  }
});

storm("200 half-open connections are closed by the header timeout while normal requests get through", async () => {
  const server = await startServer(["--model", await testModel(), "--header-timeout", "1"]);
  const { port } = new URL(server.url);
  try {
    const sockets = await Promise.all(Array.from({ length: 200 }, () => new Promise((resolve) => {
      const socket = connect(Number(port), "127.0.0.1", () => {
        socket.write("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n");
        resolve(socket);
      });
      socket.on("error", () => undefined);
      // read what the server says (its 408), so its close is seen
      socket.resume();
    })));
    const closed = sockets.map((s) => new Promise((r) => s.on("close", r)));
    const ok = await call(`${server.url}/v1/embeddings`, json({ input: "still here" }));
    assert.is(ok.status, 200);
    const deadline = Date.now() + 5000;
    await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, deadline - Date.now()))]);
    assert.is(sockets.filter((s) => !s.destroyed).length, 0, "every half-open connection was closed");
  } finally {
    assert.is(await server.stop(), 0);
  }
});

storm.run();

const fuzz = suite("bad input");

fuzz("generated bodies and raw bytes at every endpoint: never a crash or a hang, always 4xx problem+json with a request id", async () => {
  const server = await startServer(["--model", await testModel(), "--ctx-size", "256", "--request-timeout", "3", "--max-body", "64kb"]);
  const paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/messages/count_tokens"];
  const nasty = fc.oneof(
    fc.string({ maxLength: 40 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null),
    fc.constantFrom(-1, 0, 1e308, -1e308, Number.MAX_SAFE_INTEGER, "NaN", "Infinity", "", "x".repeat(20_000)),
    fc.array(fc.string({ maxLength: 10 }), { maxLength: 40 }),
  );
  const field = fc.constantFrom("model", "messages", "prompt", "input", "max_tokens", "temperature", "top_p", "top_k", "stop", "stop_sequences", "stream", "seed", "system", "n", "encoding_format", "frequency_penalty", "extra");
  const message = fc.record({ role: fc.oneof(fc.constantFrom("user", "assistant", "system", "tool"), nasty), content: fc.oneof(nasty, fc.array(fc.record({ type: fc.oneof(fc.constant("text"), nasty), text: nasty }), { maxLength: 3 })) }, { requiredKeys: [] });
  const body = fc.oneof(
    fc.dictionary(field, nasty, { maxKeys: 6 }),
    fc.record({ messages: fc.array(message, { maxLength: 4 }), max_tokens: fc.oneof(nasty, fc.integer({ min: -5, max: 5 })), stop: fc.oneof(nasty, fc.array(fc.string(), { maxLength: 60 })) }, { requiredKeys: [] }),
    fc.letrec((tie) => ({ deep: fc.oneof({ depthSize: "small" }, fc.integer(), fc.array(tie("deep"), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), tie("deep"), { maxKeys: 2 })) })).deep,
  );
  try {
    const before = rssKb(server.child.pid);
    let count = 0;
    await fc.assert(fc.asyncProperty(fc.constantFrom(...paths), body, async (path, value) => {
      count++;
      const res = await call(`${server.url}${path}`, { ...json(value), headersTimeout: 10_000, bodyTimeout: 10_000 });
      assert.ok(res.status < 500, `${path} ${res.status}: ${res.text.slice(0, 200)}`);
      assert.ok(res.headers["x-request-id"]);
      if (res.status >= 400) {
        assert.match(res.headers["content-type"], /application\/problem\+json/);
        assert.is(res.body.request_id, res.headers["x-request-id"]);
      }
    }), { numRuns: 250, seed: 20261128 });
    const bytes = fc.uint8Array({ maxLength: 3000 });
    await fc.assert(fc.asyncProperty(fc.constantFrom(...paths), bytes, async (path, raw) => {
      const res = await call(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: Buffer.from(raw) });
      assert.ok(res.status >= 400 && res.status < 500, `${res.status}`);
      assert.is(res.body.request_id, res.headers["x-request-id"]);
    }), { numRuns: 100, seed: 7 });
    assert.ok(count >= 250);
    const health = await call(`${server.url}/health`);
    assert.is(health.status, 200);
    const after = rssKb(server.child.pid);
    assert.ok(after < before * 1.5 + 50_000, `RSS ${before} -> ${after} kB`);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

fuzz.run();


const killed = suite("a runner killed mid-stream");

killed("a stream whose runner is SIGKILLed after 20+ tokens ends with an error event and is recorded with the tokens sent", async () => {
  const server = await startServer(["--model", await testModel({ endless: true })]);
  try {
    // a deadline on the whole read: a stream the server never ended would hold the file to its own
    const res = await request(`${server.url}/v1/chat/completions`, { ...json({ messages: [{ role: "user", content: "go on" }], max_tokens: 100_000, temperature: 1, stream: true }, { "x-request-id": "killed-1" }), signal: AbortSignal.timeout(120_000) });
    assert.is(res.statusCode, 200);
    let text = "";
    const iterator = res.body[Symbol.asyncIterator]();
    const pieces = () => (text.match(/"content":"[^"]/g) ?? []).length;
    while (pieces() < 25) {
      const { value, done } = await iterator.next();
      if (done) break;
      text += value;
    }
    const sent = pieces();
    assert.ok(sent >= 25, `${sent} pieces`);
    const runners = readdirSync(`/proc/${server.child.pid}/task`).flatMap((t) => execFileSync("cat", [`/proc/${server.child.pid}/task/${t}/children`], { encoding: "utf8" }).trim().split(/\s+/).filter(Boolean).map(Number));
    for (const pid of runners) process.kill(pid, "SIGKILL");
    for (;;) {
      const { value, done } = await iterator.next();
      if (done) break;
      text += value;
    }
    assert.match(text, /event: error/);
    const [row] = (await waitForRows(server.db, (r) => r.some((x) => x.request_id === "killed-1"))).filter((r) => r.request_id === "killed-1");
    assert.is(row.status, "error");
    // at least what the client was seen to receive (more may have been sent as it was killed)
    assert.ok(row.completion_tokens >= pieces(), `${row.completion_tokens} completion tokens, ${pieces()} pieces received`);
    assert.is(row.total_tokens, row.prompt_tokens + row.completion_tokens);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

killed.run();
