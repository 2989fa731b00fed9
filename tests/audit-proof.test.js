// Proof that the audit log holds one record per request (issue 20, item 6): under each fault
// a test counts the requests it sent (every request the daemon read a byte of) against the
// records in the real database, and, where the daemon survives, against its writer's
// written count and its request count in /metrics. records = requests, in every case.
//
// What other files already prove, and this one does not repeat:
// - SIGTERM with every answer finishing inside the drain, a request stuck past the drain, queued
//   requests and new connections answered 503 while draining: serve-limits.test.js
//   ("SIGTERM under load", suite "shutdown"). Here: streams cut by the drain's end, clients
//   leaving during it, and requests whose bytes were still coming when the signal came.
// - One stream whose runner is SIGKILLed (its tokens as sent): faults.test.js, runner.test.js.
//   Here: every kind of request the runner held at once (streams, queued, embeddings).
// - Runners stopped (SIGSTOP) and then SIGTERM: serve-limits.test.js (suite "shutdown"). Here:
//   a runner stopped under --request-timeout while the daemon serves on (issue 21's gap, below).
// - PostgreSQL restarted under embeddings load, every id stored: pg-store.test.js. Here: streams
//   open across the restart, a shared X-Request-ID, each request exactly once, /metrics agreeing.
// - The SQLite file locked past the busy timeout, three records kept: faults.test.js. Here:
//   under load, streams and a shared X-Request-ID, /metrics agreeing. The file made immutable
//   (chattr +i) for a while: its records wait (up to the writer's buffer) and land, records = requests.
// - 100 requests sharing one X-Request-ID give 100 rows, streams and /metrics agree:
//   tests/fixtures/same-request-id.js, run on SQLite by audit-cli.test.js and on PostgreSQL by
//   pg-store.test.js. Here a shared id rides along with the PostgreSQL restart and the lock,
//   where batches are held and written again.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { execFileSync } from "node:child_process";
import { connect } from "node:net";
import { readFileSync, readdirSync } from "node:fs";
import { request } from "undici";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import { ENDLESS_CONTEXT, auditRows, httpCall, jsonRequest, startServer, testModel, waitFor, waitForRows, waitForText } from "./helpers.js";

const json = jsonRequest;
const call = httpCall;
/** as long as its context allows: still running whenever a test acts on it */
const endless = { messages: [{ role: "user", content: "go on" }], max_tokens: 100_000, temperature: 1 };
/** no single read or answer in this file may take longer than this */
const READ_DEADLINE_MS = 60_000;

/** The pids of a process's children: a daemon's model runners. */
function childPids(pid) {
  return readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number));
}

/** The sum of a sample over all its series in a Prometheus exposition. */
function metric(text, name) {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{.*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) sum += Number(m[2]);
  }
  return sum;
}

/**
 * The requests a test sent, as the ids they were sent with (an id sent n times counts n
 * times), and the check: the records hold each id exactly as often, nothing more.
 * `minted`: requests the daemon could not have read an id of (a connection cut before its
 * headers were whole), matched by the ids the daemon mints.
 */
function ledger() {
  const sent = [];
  return {
    sent,
    add(id) { sent.push(id); return id; },
    /** an answer the daemon never got a byte of (the port already closed) is no request */
    remove(id) { sent.splice(sent.indexOf(id), 1); },
    check(rows, what) {
      const tally = (ids) => {
        const counts = new Map();
        for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
        return [...counts].sort();
      };
      const ids = rows.map((r) => (/^req_/.test(r.request_id) ? "minted" : r.request_id));
      assert.equal(tally(ids), tally(sent), `${what}: one record per request`);
      assert.is(rows.length, sent.length, `${what}: ${rows.length} records, ${sent.length} requests`);
      assert.is(new Set(rows.map((r) => r.id)).size, rows.length, `${what}: each record its own row`);
    },
  };
}

/**
 * A streamed chat completion, read until its first piece of text (so the daemon has sent
 * bytes of its answer), then in the background to its end. `text()` is what came so far.
 */
async function openStream(url, id, { signal } = {}) {
  const controller = new AbortController();
  const gone = AbortSignal.any([controller.signal, AbortSignal.timeout(READ_DEADLINE_MS), ...(signal ? [signal] : [])]);
  const res = await request(`${url}/v1/chat/completions`, { ...json({ ...endless, stream: true }, { "x-request-id": id }), signal: gone });
  let text = "";
  const iterator = res.body[Symbol.asyncIterator]();
  while (!/"content":"[^"]/.test(text)) {
    const { value, done } = await iterator.next();
    if (done) throw new Error(`${id} ended before its first token: ${text.slice(-300)}`);
    text += value;
  }
  const rest = (async () => {
    try {
      for (;;) {
        const { value, done } = await iterator.next();
        if (done) return;
        text += value;
      }
    } catch { /* the client left, or its deadline */ }
  })();
  return { id, status: res.statusCode, text: () => text, leave: () => controller.abort(), ended: rest.then(() => text) };
}

/** The answers' pieces of text a stream had shown: a lower bound of its completion tokens. */
const pieces = (text) => (text.match(/"content":"[^"]/g) ?? []).length;

/** The records of the daemon's writer agree with its database and with its request count. */
async function checkMetrics(server, rows, what) {
  const text = (await call(`${server.url}/metrics`)).text;
  assert.is(metric(text, "mlxs_audit_written_total"), rows.length, `${what}: the writer's written count is the rows`);
  assert.is(metric(text, "mlxs_audit_dropped_total"), 0, `${what}: none dropped`);
  assert.is(metric(text, "mlxs_audit_pending"), 0, `${what}: none pending`);
  assert.is(metric(text, "mlxs_requests_total"), rows.length, `${what}: /metrics counted each request once`);
}

const faults = suite("records = requests under faults");

faults("SIGTERM mid-stream: streams cut at the drain's end, clients leaving, requests half-sent at the signal; one record each", async () => {
  // a 2 s drain the streams outlast; a header timeout that cannot end a half-sent request first
  const server = await startServer(["--model", await testModel({ endless: true }), "--ctx-size", String(ENDLESS_CONTEXT), "--parallel", "4", "--queue", "4", "--drain-timeout", "2", "--header-timeout", "120"]);
  const { port } = new URL(server.url);
  const book = ledger();
  const sockets = [];
  /** A raw connection that has sent `head`: its answer, once it closes. */
  const raw = (head) => new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => { if (head) socket.write(head); resolve(socket); });
    socket.once("error", reject);
    let answer = "";
    socket.on("data", (c) => { answer += c; });
    socket.answer = new Promise((r) => socket.on("close", () => r(answer)));
    socket.on("error", () => undefined);
    sockets.push(socket);
  });
  const body = JSON.stringify(endless);
  const whole = (id) => `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: ${id}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  try {
    // four streams generating, each has had text; two plain requests queued behind them (one
    // takes the sequence of the client that leaves): every answer outlasts the drain
    const streams = await Promise.all(["term-s0", "term-s1", "term-s2", "term-left"].map((id) => openStream(server.url, book.add(id))));
    const queued = ["term-q0", "term-q1"].map((id) => call(`${server.url}/v1/chat/completions`, { ...json(endless, { "x-request-id": book.add(id) }), headersTimeout: READ_DEADLINE_MS }));
    await waitFor(async () => (await call(`${server.url}/health`)).body.models[0].waiting === 2, { what: "2 requests queued" });
    // bytes of three more requests have come: half the headers, the headers and half the
    // body, a few bytes of headers that will never be whole; and a connection that sent nothing
    const halfHead = await raw(whole(book.add("term-half-head")).slice(0, 40));
    const halfBody = await raw(whole(book.add("term-half-body")).slice(0, -10));
    const never = await raw("POST /v1/chat/comp");
    book.add("minted");
    const silent = await raw("");
    server.child.kill("SIGTERM");
    await waitForText(server.stderr, /SIGTERM: draining/);
    halfHead.write(whole("term-half-head").slice(40));
    halfBody.write(whole("term-half-body").slice(-10));
    streams.find((s) => s.id === "term-left").leave();
    // a new request during the drain; one that finds the port closed already was never read
    const fresh = await call(`${server.url}/v1/models`, { headers: { "x-request-id": book.add("term-new") } }).catch((error) => ({ error }));
    if (fresh.error) {
      assert.match(fresh.error.code ?? "", /ECONNREFUSED/, String(fresh.error));
      book.remove("term-new");
    } else assert.is(fresh.status, 503);
    assert.is(await server.exited, 0, server.stderr());
    // every client heard how its request ended
    for (const stream of streams.filter((s) => s.id !== "term-left")) assert.match(await stream.ended, /event: error\ndata: \{.*"code":"shutting_down"/, stream.id);
    for (const answer of await Promise.all(queued)) assert.is(answer.status, 503, answer.text.slice(0, 300));
    for (const socket of [halfHead, halfBody, never]) assert.match(await socket.answer, /^HTTP\/1\.1 503 /, `a half-sent request (${sockets.indexOf(socket)}) is answered`);
    assert.is(await silent.answer, "", "a connection that sent nothing gets nothing");
  } finally {
    for (const socket of sockets) socket.destroy();
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
  }
  const rows = await auditRows(server.db);
  book.check(rows, "SIGTERM");
  const by = Object.fromEntries(rows.map((r) => [/^req_/.test(r.request_id) ? "minted" : r.request_id, r]));
  for (const id of ["term-s0", "term-s1", "term-s2"]) {
    assert.equal([by[id].status, by[id].status_code, by[id].error_type], ["cancelled", 200, "shutting_down"], id);
  }
  assert.equal([by["term-left"].status, by["term-left"].status_code], ["cancelled", 499]);
  for (const id of ["term-q0", "term-q1", "term-half-head", "term-half-body", "minted"]) {
    assert.is(by[id].status_code, 503, id);
    assert.ok(["draining", "shutting_down"].includes(by[id].error_type), `${id}: ${by[id].error_type}`);
  }
  assert.not.match(server.stderr(), /dropped/);
});

faults("a runner SIGKILLed mid-stream with streams, queued requests and embeddings on it: one record each, /metrics agrees", async () => {
  const server = await startServer(["--model", await testModel({ endless: true }), "--ctx-size", String(ENDLESS_CONTEXT), "--parallel", "3", "--queue", "8", "--metrics"]);
  const book = ledger();
  try {
    const streams = await Promise.all(["kill-s0", "kill-s1", "kill-s2"].map((id) => openStream(server.url, book.add(id))));
    const others = [
      ...["kill-q0", "kill-q1"].map((id) => call(`${server.url}/v1/chat/completions`, { ...json({ ...endless, max_tokens: 5 }, { "x-request-id": book.add(id) }), headersTimeout: READ_DEADLINE_MS })),
      ...["kill-e0", "kill-e1"].map((id) => call(`${server.url}/v1/embeddings`, { ...json({ input: "held" }, { "x-request-id": book.add(id) }), headersTimeout: READ_DEADLINE_MS })),
    ];
    await waitFor(async () => (await call(`${server.url}/health`)).body.models[0].waiting >= 2, { what: "2 requests queued" });
    const runners = childPids(server.child.pid);
    assert.ok(runners.length > 0, "a runner");
    for (const pid of runners) process.kill(pid, "SIGKILL");
    for (const stream of streams) assert.match(await stream.ended, /event: error/, stream.id);
    // each is answered, however (an error, or a new runner's answer)
    for (const answer of await Promise.all(others)) assert.ok(answer.status === 200 || answer.status >= 500, `${answer.status}`);
    await waitForText(server.stderr, /the runner of model endless stopped \(SIGKILL\)/);
    // the daemon lives on, and a new runner answers
    const after = await call(`${server.url}/v1/chat/completions`, json({ ...endless, max_tokens: 3 }, { "x-request-id": book.add("kill-after") }));
    assert.is(after.status, 200, after.text);
    const rows = await waitForRows(server.db, (r) => r.length >= book.sent.length, { what: `${book.sent.length} records` });
    book.check(rows, "runner SIGKILL");
    for (const stream of streams) {
      const row = rows.find((r) => r.request_id === stream.id);
      assert.equal([row.status, row.status_code], ["error", 200], stream.id);
      assert.ok(row.completion_tokens >= pieces(stream.text()), `${stream.id}: ${row.completion_tokens} tokens recorded, ${pieces(stream.text())} seen`);
    }
    await checkMetrics(server, rows, "runner SIGKILL");
  } finally {
    assert.is(await server.stop(), 0);
  }
});

/**
 * Issue 21's watchdog (a runner that does not answer a cancel in time is killed, and replaced at
 * the next request) is what makes a request held by a stopped runner end within
 * --request-timeout: true, the test holds the daemon to the deadline; false, it would only
 * report the gap.
 */
const RUNNER_WATCHDOG = true;

faults("a runner stopped (SIGSTOP) mid-stream under --request-timeout: one record per request", async () => {
  const timeoutS = 2;
  const server = await startServer(["--model", await testModel({ endless: true }), "--ctx-size", String(ENDLESS_CONTEXT), "--parallel", "2", "--request-timeout", String(timeoutS), "--metrics"]);
  const book = ledger();
  const stopped = [];
  try {
    const stream = await openStream(server.url, book.add("stop-s0"));
    for (const pid of childPids(server.child.pid)) { process.kill(pid, "SIGSTOP"); stopped.push(pid); }
    assert.ok(stopped.length > 0, "a runner");
    const sentAt = Date.now();
    // a plain request and a stream that reach the stopped runner
    const others = [
      call(`${server.url}/v1/chat/completions`, { ...json(endless, { "x-request-id": book.add("stop-p0") }), headersTimeout: READ_DEADLINE_MS }),
      call(`${server.url}/v1/chat/completions`, { ...json({ ...endless, stream: true }, { "x-request-id": book.add("stop-s1") }), headersTimeout: READ_DEADLINE_MS }),
    ];
    // the deadline the watchdog's goal sets (issue 21: the error within --request-timeout + 1 s),
    // with room for a loaded machine
    const deadlineMs = timeoutS * 1000 + 5_000;
    let rows = [];
    const landed = await waitForRows(server.db, (r) => (rows = r).length >= book.sent.length, { what: "every record while the runner is stopped", timeoutMs: deadlineMs - (Date.now() - sentAt) })
      .then(() => true, () => false);
    if (RUNNER_WATCHDOG) assert.ok(landed, `${rows.length} of ${book.sent.length} records within ${deadlineMs} ms of a runner stopping`);
    else if (!landed) console.log(`  known gap (issue 21): ${book.sent.length - rows.length} of ${book.sent.length} requests held by a stopped runner had no answer and no record ${Date.now() - sentAt} ms after --request-timeout ${timeoutS}; they end when it runs again`);
    // (killed by the watchdog, a runner is gone)
    for (const pid of stopped) { try { process.kill(pid, "SIGCONT"); } catch { /* gone */ } }
    const [plain, streamed] = await Promise.all(others);
    assert.is(plain.status, 504, plain.text.slice(0, 300));
    assert.ok(streamed.status === 504 || /"code":"timeout"/.test(streamed.text), streamed.text.slice(-300));
    assert.match(await stream.ended, /"code":"timeout"/);
    rows = await waitForRows(server.db, (r) => r.length >= book.sent.length, { what: `${book.sent.length} records` });
    book.check(rows, "runner SIGSTOP");
    // each request says it timed out: none claims its client left
    assert.equal(rows.map((r) => [r.request_id, r.status]).sort(), book.sent.map((id) => [id, "timeout"]).sort(), JSON.stringify(rows.map((r) => [r.request_id, r.status, r.status_code, r.error_type])));
    await checkMetrics(server, rows, "runner SIGSTOP");
  } finally {
    for (const pid of stopped) { try { process.kill(pid, "SIGCONT"); } catch { /* gone */ } }
    assert.is(await server.stop(), 0);
  }
});

/**
 * Embeddings sent one after another by `workers` clients until `stop()`: half of them share one
 * X-Request-ID. Every request sent is in the ledger (answered or not, the daemon read it).
 */
function load(url, book, { prefix, shared, workers = 2 }) {
  let stopping = false;
  let answered = 0;
  const failures = [];
  const running = Promise.all(Array.from({ length: workers }, async (_, w) => {
    for (let i = 0; !stopping; i++) {
      const id = book.add(i % 2 ? shared : `${prefix}-${w}-${i}`);
      try {
        const res = await call(`${url}/v1/embeddings`, { ...json({ input: "load" }, { "x-request-id": id }), headersTimeout: READ_DEADLINE_MS });
        if (res.status === 200) answered++;
        else failures.push(`${id}: ${res.status}`);
      } catch (error) {
        failures.push(`${id}: ${error.message}`);
      }
    }
  }));
  return {
    answered: () => answered,
    /** answering never waits for the audit log */
    healthy: () => { if (failures.length) throw new Error(`answering failed: ${failures.slice(0, 3).join("; ")}`); return true; },
    stop: async () => { stopping = true; await running; },
  };
}

faults("PostgreSQL restarted under load, streams open across it, one X-Request-ID shared: each request exactly once, /metrics agrees", async () => {
  const { startPostgres } = await import("./fixtures/postgres.js");
  const { openAuditStore } = await import("../dist/audit/open-store.js");
  const { parseFilter } = await import("../dist/audit/filter.js");
  const pg = await startPostgres();
  process.on("exit", () => pg.destroySync());
  const server = await startServer(["--model", await testModel({ endless: true }), "--ctx-size", String(ENDLESS_CONTEXT), "--parallel", "3", "--db", pg.url, "--metrics"]);
  const book = ledger();
  let down = false;
  try {
    const traffic = load(server.url, book, { prefix: "pg", shared: "pg-same-id" });
    await waitFor(() => traffic.healthy() && traffic.answered() >= 20, { what: "traffic" });
    const streams = await Promise.all(["pg-s0", "pg-s1"].map((id) => openStream(server.url, book.add(id))));
    down = true;
    await pg.stop();
    const during = traffic.answered();
    await waitFor(() => traffic.healthy() && traffic.answered() >= during + 20, { what: "answers while PostgreSQL is down" });
    await waitForText(server.stderr, /keeping \d+ records to write/, { what: "the writer to hold its records" });
    // one stream's client leaves while the database is down; the other is still going after it
    streams[0].leave();
    await pg.start();
    down = false;
    const back = traffic.answered();
    await waitFor(() => traffic.healthy() && traffic.answered() >= back + 20, { what: "answers after the restart" });
    streams[1].leave();
    await Promise.all(streams.map((s) => s.ended));
    await traffic.stop();
    traffic.healthy();
    await waitForText(server.stderr, /audit log writable again \(0 records dropped in all\)/);
    const store = await openAuditStore(pg.url);
    let rows = [];
    try {
      await waitFor(async () => (rows = await store.query(parseFilter({ order: "asc" }, { defaultLimit: null }))).length >= book.sent.length, {
        what: `${book.sent.length} records`, timeoutMs: 30_000, intervalMs: 250, describe: () => `${rows.length} records`,
      });
    } finally {
      await store.close();
    }
    book.check(rows, "PostgreSQL restart");
    assert.ok(book.sent.filter((id) => id === "pg-same-id").length >= 20, "many requests shared the id");
    assert.equal(rows.filter((r) => ["pg-s0", "pg-s1"].includes(r.request_id)).map((r) => r.status), ["cancelled", "cancelled"]);
    await checkMetrics(server, rows, "PostgreSQL restart");
  } finally {
    if (down) await pg.start();
    assert.is(await server.stop(), 0);
  }
});

faults("the SQLite file locked by another process past the busy timeout, under load: each request exactly once once it is free, /metrics agrees", async () => {
  const server = await startServer(["--model", await testModel({ endless: true }), "--ctx-size", String(ENDLESS_CONTEXT), "--parallel", "3", "--metrics"]);
  const book = ledger();
  let locker;
  try {
    // the file exists, and a first batch has gone through
    assert.is((await call(`${server.url}/v1/embeddings`, json({ input: "first" }, { "x-request-id": book.add("lock-first") }))).status, 200);
    await waitForRows(server.db, (rows) => rows.length === 1);
    const traffic = load(server.url, book, { prefix: "lock", shared: "lock-same-id" });
    const streams = await Promise.all(["lock-s0", "lock-s1"].map((id) => openStream(server.url, book.add(id))));
    // what a long VACUUM or a forgotten sqlite3 session does
    locker = await open({ filename: server.db, driver: sqlite3.Database });
    // it waits its turn behind the daemon's own batches
    await locker.exec("PRAGMA busy_timeout = 30000");
    await locker.exec("BEGIN IMMEDIATE");
    streams[0].leave();
    // the writer's busy timeout (5 s) has passed: it keeps what it holds
    await waitForText(server.stderr, /the database stayed locked by another process; keeping \d+ records/, { timeoutMs: 30_000 });
    const during = traffic.answered();
    await waitFor(() => traffic.healthy() && traffic.answered() >= during + 20, { what: "answers while the file is locked" });
    await locker.exec("COMMIT");
    await locker.close();
    locker = undefined;
    await waitForText(server.stderr, /audit log writable again \(0 records dropped in all\)/);
    streams[1].leave();
    await Promise.all(streams.map((s) => s.ended));
    await traffic.stop();
    traffic.healthy();
    const rows = await waitForRows(server.db, (r) => r.length >= book.sent.length, { what: `${book.sent.length} records` });
    book.check(rows, "SQLite locked");
    assert.ok(book.sent.filter((id) => id === "lock-same-id").length >= 10, "many requests shared the id");
    await checkMetrics(server, rows, "SQLite locked");
  } finally {
    await locker?.close();
    assert.is(await server.stop(), 0);
  }
  assert.not.match(server.stderr(), /dropping audit records|records were dropped/);
});

faults("the SQLite file made immutable (chattr +i) under load, then writable: its records wait and land, records = requests", async () => {
  const server = await startServer(["--model", await testModel(), "--metrics"]);
  const files = [server.db, `${server.db}-wal`];
  const book = ledger();
  let dropped;
  try {
    assert.is((await call(`${server.url}/v1/embeddings`, json({ input: "first" }, { "x-request-id": book.add("ro-first") }))).status, 200);
    await waitForRows(server.db, (rows) => rows.length === 1);
    const traffic = load(server.url, book, { prefix: "ro", shared: "ro-same-id" });
    execFileSync("chattr", ["+i", ...files]);
    try {
      await waitForText(server.stderr, /cannot write the audit log: .*; keeping \d+ records to write when it can be written/, { timeoutMs: 30_000 });
    } finally {
      execFileSync("chattr", ["-i", ...files]);
    }
    await waitForText(server.stderr, /audit log writable again/);
    // every request sent from now on finds the writer writing
    const recovered = book.sent.length;
    const back = traffic.answered();
    await waitFor(() => traffic.healthy() && traffic.answered() >= back + 20, { what: "answers after it is writable" });
    await traffic.stop();
    traffic.healthy();
    // every request is written: none dropped
    let rows = [];
    const counts = async () => {
      const text = (await call(`${server.url}/metrics`)).text;
      return { written: metric(text, "mlxs_audit_written_total"), dropped: metric(text, "mlxs_audit_dropped_total"), pending: metric(text, "mlxs_audit_pending") };
    };
    let seen;
    await waitFor(async () => {
      seen = await counts();
      return seen.pending === 0 && seen.written + seen.dropped === book.sent.length;
    }, { what: "every record written", describe: () => `${JSON.stringify(seen)}, ${book.sent.length} requests` });
    rows = await waitForRows(server.db, (r) => r.length >= seen.written, { what: `${seen.written} records` });
    assert.is(rows.length, seen.written, "the writer's count is the rows");
    assert.is(metric((await call(`${server.url}/metrics`)).text, "mlxs_requests_total"), book.sent.length);
    // what was written is each request once; what is missing is exactly what was counted dropped
    const stored = rows.map((r) => r.request_id);
    assert.is(new Set(stored.filter((id) => !id.endsWith("same-id"))).size, stored.filter((id) => !id.endsWith("same-id")).length, "no record twice");
    assert.ok(stored.includes("ro-first"));
    const after = book.sent.slice(recovered).filter((id) => !id.endsWith("same-id"));
    assert.ok(after.length >= 5 && after.every((id) => stored.includes(id)), "each request since it is writable again has its record");
    dropped = seen.dropped;
    assert.is(dropped, 0, "no record dropped while the file could not be written");
    assert.is(rows.length, book.sent.length, "records = requests");
  } finally {
    try { execFileSync("chattr", ["-i", ...files]); } catch { /* already writable */ }
    assert.is(await server.stop(), 0);
  }
});

faults.run();
