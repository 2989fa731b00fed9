// The request boundary of `mlxs serve`: nothing in a request (method, path, query, headers,
// body) and no bug in a handler ends the daemon; every request gets one answer and one
// record; a bug that escapes every boundary ends the process with status 70, its records
// written first.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { connect } from "node:net";
import { join } from "node:path";
import fc from "fast-check";
import { adminRoutes } from "../dist/server/admin.js";
import { apiRoutes } from "../dist/server/routes.js";
import { ROOT, STACK, assertNoMarker, auditRows, httpCall, jsonRequest, rssKb, startServer, testModel, waitFor, waitForRows } from "./helpers.js";

const FAULT_ROUTES = join(ROOT, "tests/fixtures/fault-routes.js");

/**
 * Sends raw bytes (without half-closing: Node takes that for a client gone); resolves with
 * the response head (status, headers) as soon as it is complete, with no status when the
 * server closed without one, or `timedOut` when nothing came within `timeoutMs`.
 */
function rawRequest(port, bytes, { timeoutMs = 15_000 } = {}) {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    const finish = (result) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ timedOut: true, head: data }), timeoutMs);
    socket.on("data", (chunk) => {
      data += chunk.toString("latin1");
      let end = data.indexOf("\r\n\r\n");
      // 100 Continue comes before the answer
      while (end >= 0 && /^HTTP\/1\.[01] 1\d\d/.test(data)) {
        data = data.slice(end + 4);
        end = data.indexOf("\r\n\r\n");
      }
      if (end < 0) return;
      const head = data.slice(0, end);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]);
      const headers = Object.fromEntries(head.split("\r\n").slice(1).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      finish({ status, headers, head });
    });
    socket.on("error", () => undefined);
    socket.on("close", () => finish({ head: data }));
    socket.write(bytes);
  });
}

const faults = suite("a bug in a handler");

faults("a handler that throws: a 500 problem naming nothing, an error record, and the daemon goes on", async () => {
  const marker = "BUG-MARKER-5d1e";
  const server = await startServer(["--model", await testModel()], { env: { MLXS_TEST_ROUTES: FAULT_ROUTES } });
  try {
    const early = await httpCall(`${server.url}/v1/test/throw`, jsonRequest({ input: marker }, { "x-request-id": "bug-early" }));
    assert.is(early.status, 500);
    assert.match(early.headers["content-type"], /application\/problem\+json/);
    assert.is(early.body.request_id, "bug-early");
    assert.is(early.body.code, "internal_error");
    assert.is(early.body.detail, "The server could not complete the request.");
    assert.not.ok(early.text.includes(marker));
    assert.not.match(early.text, STACK);
    // after the 200 went out: the stream ends, and the record still says the request failed
    const late = await httpCall(`${server.url}/v1/test/throw-late`, jsonRequest({ input: marker }, { "x-request-id": "bug-late" }));
    assert.is(late.status, 200);
    assert.not.ok(late.text.includes(marker));
    const after = await httpCall(`${server.url}/v1/embeddings`, jsonRequest({ input: "still here" }, { "x-request-id": "after-bug" }));
    assert.is(after.status, 200);
    const rows = Object.fromEntries((await waitForRows(server.db, (r) => r.some((x) => x.request_id === "after-bug"))).map((r) => [r.request_id, r]));
    assert.equal([rows["bug-early"].status, rows["bug-early"].status_code, rows["bug-early"].error_type, rows["bug-early"].endpoint],
      ["error", 500, "internal_error", "/v1/test/throw"]);
    assert.equal([rows["bug-late"].status, rows["bug-late"].error_type], ["error", "internal_error"]);
    assert.is(rows["after-bug"].status, "success");
  } finally {
    assert.is(await server.stop(), 0);
  }
  assert.not.ok(server.stderr().includes(marker));
  assertNoMarker(server.home, marker);
});

for (const [path, kind] of [["/v1/test/uncaught", "SyntaxError"], ["/v1/test/unhandled", "Error"]]) {
  faults(`a bug that escapes every boundary (${path}): one line naming the request, every record written, exit 70`, async () => {
    const marker = "ESCAPED-MARKER-77c0";
    const server = await startServer(["--model", await testModel()], { env: { MLXS_TEST_ROUTES: FAULT_ROUTES } });
    // records still in the writer's buffer when the bug strikes: the flush on the way out writes them
    for (let i = 0; i < 5; i++) assert.is((await httpCall(`${server.url}/v1/embeddings`, jsonRequest({ input: "x" }, { "x-request-id": `before-${i}` }))).status, 200);
    const res = await httpCall(`${server.url}/v1/test/${path.split("/").at(-1)}`, jsonRequest({ input: marker }, { "x-request-id": "the-bug" }));
    assert.is(res.status, 202);
    const code = await Promise.race([server.exited, new Promise((r) => setTimeout(() => r("still running"), 15_000))]);
    assert.is(code, 70, server.stderr());
    const lines = server.stderr().trim().split("\n");
    const fatal = lines.filter((l) => l.includes("internal error"));
    assert.equal(fatal, [`mlxs: internal error (${kind}) in request the-bug; flushing the audit log and exiting with status 70`]);
    assert.not.ok(server.stderr().includes(marker));
    assert.not.match(server.stderr(), STACK);
    const ids = (await auditRows(server.db)).map((r) => r.request_id);
    for (let i = 0; i < 5; i++) assert.ok(ids.includes(`before-${i}`), `before-${i} was written`);
    assert.ok(ids.includes("the-bug"));
    assertNoMarker(server.home, marker);
  });
}

faults("a malformed percent-escape in the path, CONNECT, bytes that are not HTTP: 4xx problems with a record each, the daemon alive", async () => {
  const server = await startServer(["--model", await testModel()]);
  const port = Number(new URL(server.url).port);
  try {
    const escape = await httpCall(`${server.url}/v1/models/%ZZ`, { headers: { "x-request-id": "bad-escape" } });
    assert.is(escape.status, 400);
    assert.is(escape.body.code, "invalid_path");
    assert.is(escape.body.request_id, "bad-escape");
    const connectMethod = await rawRequest(port, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert.is(connectMethod.status, 405);
    assert.match(connectMethod.headers["content-type"], /problem\+json/);
    const garbage = await rawRequest(port, "\x00\x01 not http at all\r\n\r\n");
    assert.is(garbage.status, 400);
    assert.ok(garbage.headers["x-request-id"]);
    const huge = await rawRequest(port, `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${"k".repeat(70_000)}\r\n\r\n`);
    assert.is(huge.status, 431);
    assert.is((await httpCall(`${server.url}/health`)).status, 200);
    const rows = await waitForRows(server.db, (r) => r.length >= 4);
    assert.equal(rows.map((r) => [r.endpoint, r.status_code, r.error_type]), [
      ["/v1/models/{id}", 400, "invalid_path"], ["unknown", 405, "method_not_allowed"], ["unknown", 400, "bad_request"], ["unknown", 431, "headers_too_large"],
    ]);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

faults.run();

const fuzz = suite("the whole request, fuzzed");

// every route of the server, from its own route table: a new route is fuzzed without editing this file
const ROUTES = [...adminRoutes(async () => undefined, () => "ready"), ...apiRoutes(() => "ready")].map((r) => ({ method: r.method, path: r.path }));
const AUDIT_FIELDS = ["model", "backend_type", "endpoint", "status", "since", "until", "request_id", "min_duration_ms", "limit", "offset", "order", "format"];

// mostly what a client would send, so that most requests get past the parser to the routes
const usually = (good, bad) => fc.oneof({ arbitrary: good, weight: 4 }, { arbitrary: bad, weight: 1 });

const nastyText = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.constantFrom("%ZZ", "%", "%4", "%C0%AE%C0%AE", "%00", "%E2%82", "%FF%FE", "..", "%2e%2e", "%2F", "a%00b", "\u00e9t\u00e9", "-1", "1e999", "0x10", ""),
  fc.string({ minLength: 200, maxLength: 3000 }).map((s) => s || "x".repeat(500)),
);
// what may stand in a request line: the server's parser refuses the rest, which is part of the test too
const asTarget = (s) => s.replace(/[\s]/g, (c) => encodeURIComponent(c));
const segment = fc.oneof(nastyText.map(asTarget), fc.constantFrom("tiny", "nope", "x".repeat(20_000)));

const target = fc.oneof(
  fc.tuple(fc.constantFrom(...ROUTES), segment).map(([route, id]) => route.path.replace("{id}", id)),
  fc.tuple(fc.constantFrom(...ROUTES.map((r) => r.path)), fc.array(segment, { maxLength: 3 })).map(([path, extra]) => [path.replace("{id}", "tiny"), ...extra].join("/")),
  fc.tuple(fc.constantFrom("/v1/audit/logs", "/v1/audit/stats", "/v1/audit/export"), fc.array(fc.tuple(fc.oneof(fc.constantFrom(...AUDIT_FIELDS), nastyText), nastyText), { maxLength: 4 }))
    .map(([path, pairs]) => `${path}?${pairs.map(([k, v]) => `${asTarget(k)}=${asTarget(v)}`).join("&")}`),
  fc.constantFrom("/", "*", "//v1/models", "/v1/../v1/models", "/v1/%2e%2e/health", "/v1/models/%ZZ", "/%ZZ", "/v1//models", "http://elsewhere.example/v1/models"),
);

const method = usually(fc.constantFrom("GET", "POST"), fc.constantFrom("PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "GETT", "get"));

const headerValue = fc.oneof(nastyText.map((s) => s.replace(/[\r\n]/g, "")), fc.constantFrom("k".repeat(9000), "\u00ff\u00fe", "a\tb"));
const headers = fc.record({
  host: usually(fc.constant("127.0.0.1"), fc.oneof(headerValue, fc.constant(undefined))),
  "x-request-id": fc.oneof(headerValue, fc.constant(undefined)),
  authorization: fc.oneof(fc.constant("Bearer fuzz-key-12345"), headerValue.map((v) => `Bearer ${v}`), fc.constant(`Bearer ${"a".repeat(12_000)}`), fc.constant(undefined)),
  "x-api-key": fc.oneof(headerValue, fc.constant(undefined)),
  "content-type": usually(fc.constantFrom("application/json", "application/json; charset=utf-8", "application/x+json"), fc.oneof(fc.constant("text/plain"), headerValue)),
  origin: fc.oneof(headerValue, fc.constant(undefined)),
  expect: fc.oneof(fc.constantFrom("100-continue", "nonsense"), fc.constant(undefined)),
}, { requiredKeys: ["host", "content-type"] });

const body = fc.oneof(
  fc.constant(""),
  fc.json({ maxDepth: 3 }),
  fc.constantFrom('{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}', '{"input":"x"}', '{"prompt":"x","max_tokens":2}', '{"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}', "{", "[]"),
  fc.constantFrom(
    '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}}}],"tool_choice":"required","response_format":{"type":"json_object"}}',
    '{"max_tokens":4,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"}}',
    '{"input":[{"role":"user","content":"hi"}],"max_output_tokens":4,"text":{"format":{"type":"json_schema","name":"x","schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}}}}',
  ),
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a).toString("latin1")),
);

// framing: well-formed (the request is complete, so an answer is owed), or fuzzed (the
// parser may refuse it, or wait for bytes that never come: then no answer is fine)
const framing = fc.oneof(
  fc.constant({ kind: "length" }), fc.constant({ kind: "chunked" }), fc.constant({ kind: "none" }),
  fc.record({ kind: fc.constant("fuzzed"), length: fc.oneof(fc.constantFrom("-1", "abc", "1e3", " 5", "99999999999999999999", "0, 0", "5\u0000"), fc.nat({ max: 400 }).map(String), fc.constant(undefined)), te: fc.oneof(fc.constantFrom("chunked", "gzip", "chunked, chunked", "identity", "chunked, gzip", "x"), fc.constant(undefined)) }),
);

const request = fc.record({ method, target, headers, body, framing }).map(({ method, target, headers, body, framing }) => {
  const lines = [`${method} ${target} HTTP/1.1`];
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) lines.push(`${name}: ${value}`);
  let payload = Buffer.from(body, "latin1");
  if (framing.kind === "length") lines.push(`Content-Length: ${payload.length}`);
  if (framing.kind === "chunked") {
    lines.push("Transfer-Encoding: chunked");
    payload = Buffer.concat([payload.length ? Buffer.from(`${payload.length.toString(16)}\r\n`) : Buffer.alloc(0), payload, Buffer.from(payload.length ? "\r\n0\r\n\r\n" : "0\r\n\r\n")]);
  }
  if (framing.kind === "none") payload = Buffer.alloc(0);
  if (framing.kind === "fuzzed") {
    if (framing.length !== undefined) lines.push(`Content-Length: ${framing.length}`);
    if (framing.te !== undefined) lines.push(`Transfer-Encoding: ${framing.te}`);
  }
  lines.push("Connection: close");
  return { bytes: Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n", "latin1"), payload]), owed: framing.kind !== "fuzzed", method, target };
});

async function fuzzServer(args, runs, seed) {
  const server = await startServer(["--model", await testModel(), "--ctx-size", "256", "--request-timeout", "5", "--max-body", "64kb", ...args]);
  const port = Number(new URL(server.url).port);
  try {
    // the heap and caches warm up before the baseline is taken
    for (let i = 0; i < 20; i++) await rawRequest(port, `GET /v1/models/%ZZ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    const before = rssKb(server.child.pid);
    const statuses = new Map();
    await fc.assert(fc.asyncProperty(request, async ({ bytes, owed, method, target }) => {
      // a request whose framing promised more bytes than came is waited for, as any server
      // does: no answer is owed to it, so it is given up on sooner
      const res = await rawRequest(port, bytes, { timeoutMs: owed ? 15_000 : 2_000 });
      const what = `${method} ${target.slice(0, 120)}`;
      assert.is(server.child.exitCode, null, `${what}: the daemon exited\n${server.stderr()}`);
      if (Number.isNaN(res.status) || res.status === undefined) {
        assert.not.ok(owed, `${what}: a complete request got no answer${res.timedOut ? " within 15 s" : ""}: ${JSON.stringify(res.head.slice(0, 200))}`);
        return;
      }
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      assert.ok(res.status < 500, `${what}: ${res.head.slice(0, 300)}`);
      // a request answered by the boundary, not by Node's bare defaults
      if (res.status >= 400) {
        assert.match(res.headers["content-type"] ?? "", /application\/problem\+json/, `${what}: ${res.head}`);
        assert.ok(res.headers["x-request-id"], what);
      }
    }), { numRuns: runs, seed, endOnFailure: true }).catch((error) => {
      // fast-check keeps the failing assertion's own message further down than uvu shows
      throw new Error(`${error.message.split("\n").filter((l) => !l.startsWith("Counterexample")).join("\n").slice(0, 3000)}\n${String(error.cause?.message ?? "").slice(0, 2000)}\ndaemon stderr:\n${server.stderr().slice(-2000)}`);
    });
    const health = await httpCall(`${server.url}/health`);
    assert.is(health.status, 200);
    if (process.env.TEST_VERBOSE) console.error("statuses", JSON.stringify([...statuses].sort()));
    const after = rssKb(server.child.pid);
    assert.ok(after < before * 1.5 + 50_000, `RSS ${before} -> ${after} kB`);
    // the fuzz reached past the parser into the routes, not only into 400s
    assert.ok([...statuses.keys()].some((s) => s !== 400), JSON.stringify([...statuses]));
  } finally {
    assert.is(await server.stop(), 0, server.stderr());
  }
  assert.not.match(server.stderr(), STACK);
}

fuzz("every route x method x path x query x headers x framing, no API key: an answer below 500, the daemon alive, memory bounded", async () => {
  await fuzzServer([], 400, 20261128);
});

fuzz("the same with an API key configured", async () => {
  await fuzzServer(["--api-key", "fuzz-key-12345"], 300, 11);
});

fuzz.run();

const given = suite("what the parser and its timers give up on: answered and recorded");

given("Transfer-Encoding: xchunked is answered 400 (problem+json, request id) and recorded", async () => {
  const server = await startServer(["--model", await testModel()]);
  const port = Number(new URL(server.url).port);
  try {
    const res = await rawRequest(port, `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Request-ID: xchunked-1\r\nTransfer-Encoding: xchunked\r\n\r\n{"messages":[]}`);
    assert.is(res.status, 400, res.head);
    assert.match(res.headers["content-type"], /application\/problem\+json/);
    assert.is(res.headers["x-request-id"], "xchunked-1");
    const rows = await waitForRows(server.db, (r) => r.some((x) => x.request_id === "xchunked-1"));
    assert.equal(rows.filter((r) => r.request_id === "xchunked-1").map((r) => [r.endpoint, r.status, r.status_code, r.error_type]),
      [["/v1/chat/completions", "error", 400, "unsupported_transfer_encoding"]]);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

given("slow headers (slowloris) get 408 and a record each; a body trickled past --body-timeout gets 408, recorded as 408 (not 499)", async () => {
  const server = await startServer(["--model", await testModel(), "--header-timeout", "1", "--body-timeout", "2"]);
  const port = Number(new URL(server.url).port);
  try {
    const slow = await Promise.all(Array.from({ length: 30 }, () => rawRequest(port, "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")));
    assert.equal(slow.map((r) => r.status), Array(30).fill(408));
    assert.ok(slow.every((r) => r.headers["x-request-id"]));
    // a declared body of 200 bytes, 10 bytes every 300 ms: 6 s, past the 2 s body timeout
    const trickled = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1");
      let data = "";
      socket.on("error", () => undefined);
      socket.on("data", (c) => { data += c; });
      socket.on("close", () => { clearInterval(timer); clearTimeout(giveUp); resolve(data); });
      socket.write("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Request-ID: trickle-1\r\nContent-Length: 200\r\n\r\n");
      const timer = setInterval(() => socket.write(" ".repeat(10)), 300);
      // an answer whose connection stays open must not hold the test: what came by then is judged
      const giveUp = setTimeout(() => socket.destroy(), 30_000);
    });
    assert.match(trickled, /^HTTP\/1\.1 408 /);
    assert.match(trickled, /request_timeout/);
    const rows = await waitForRows(server.db, (r) => r.length >= 31);
    assert.is(rows.filter((r) => r.endpoint === "unknown" && r.status_code === 408 && r.error_type === "request_timeout").length, 30);
    assert.equal(rows.filter((r) => r.request_id === "trickle-1").map((r) => [r.endpoint, r.status, r.status_code, r.error_type]),
      [["/v1/chat/completions", "error", 408, "request_timeout"]]);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

given.run();
