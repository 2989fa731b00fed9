// Many users, one daemon: Host and Origin checks (DNS rebinding), scoped keys, limits per
// key, usage per key, and the headers every answer carries.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { request as httpRequest } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { assertNoMarker, httpCall, jsonRequest, runCli, startServer, tempDir, testModel, waitForRows } from "./helpers.js";
import { syntheticRecord } from "./fixtures/audit-records.js";
import { adminRoutes } from "../dist/server/admin.js";
import { apiRoutes } from "../dist/server/routes.js";
import { metricsRoute } from "../dist/server/metrics.js";
import { KeyLimits } from "../dist/server/key-limits.js";
import { AuditStore } from "../dist/audit/store.js";
import { parseFilter } from "../dist/audit/filter.js";

/**
 * A GET (or POST with `body`) with exactly these headers, Host included: what a rebinding
 * page's browser sends. `headOnly`: resolve at the status line (a live stream never ends).
 */
function raw(url, path, headers, { method = "GET", body, headOnly = false } = {}) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, method, headers: { ...headers, ...(body ? { "content-type": "application/json" } : {}) }, setHost: false }, (res) => {
      let text = "";
      if (headOnly && res.statusCode === 200) {
        res.destroy();
        return resolve({ status: res.statusCode, headers: res.headers, text });
      }
      res.on("data", (c) => { text += c; });
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

const ask = { messages: [{ role: "user", content: "hello" }], max_tokens: 3, temperature: 0 };

const browsers = suite("browser attacks");

browsers("bound to loopback: a foreign Host gets 403 on every route, /health included, recorded without the name; loopback names and --allowed-host pass", async () => {
  const server = await startServer(["--model", await testModel(), "--allowed-host", "mlxs.internal"]);
  try {
    const { port } = new URL(server.url);
    for (const [method, path, body] of [["GET", "/health"], ["GET", "/v1/models"], ["GET", "/v1/audit/logs"], ["GET", "/v1/audit/export"], ["POST", "/v1/chat/completions", ask]]) {
      const res = await raw(server.url, path, { Host: `attacker.example:${port}` }, { method, body });
      assert.is(res.status, 403, `${method} ${path}`);
      assert.match(res.headers["content-type"], /application\/problem\+json/);
      assert.match(res.text, /host_not_allowed/);
      assert.not.match(res.text, /attacker/);
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, "localhost", `mlxs.internal:${port}`, "MLXS.internal"]) {
      assert.is((await raw(server.url, "/v1/models", { Host: host })).status, 200, host);
    }
    // five refusals, five records: /health's too (only a health check that was answered goes unrecorded)
    const rows = await waitForRows(server.db, (r) => r.filter((x) => x.error_type === "host_not_allowed").length === 5);
    assert.ok(rows.filter((x) => x.error_type === "host_not_allowed").every((x) => x.status_code === 403 && x.status === "error"));
  } finally {
    assert.is(await server.stop(), 0);
  }
  assertNoMarker(server.home, "attacker");
});

browsers("an Origin not in --cors-origin gets 403 on every route but the preflight; an allowed one gets its CORS headers", async () => {
  const server = await startServer(["--model", await testModel(), "--cors-origin", "https://app.example"]);
  try {
    const evil = await raw(server.url, "/v1/models", { Host: new URL(server.url).host, Origin: "https://evil.example" });
    assert.is(evil.status, 403);
    assert.match(evil.text, /origin_not_allowed/);
    const posted = await raw(server.url, "/v1/chat/completions", { Host: new URL(server.url).host, Origin: "null" }, { method: "POST", body: ask });
    assert.is(posted.status, 403);
    const preflight = await raw(server.url, "/v1/chat/completions", { Host: new URL(server.url).host, Origin: "https://evil.example", "Access-Control-Request-Method": "POST" }, { method: "OPTIONS" });
    assert.is(preflight.status, 204);
    assert.is(preflight.headers["access-control-allow-origin"], undefined, "a browser then refuses to send it");
    const good = await raw(server.url, "/v1/models", { Host: new URL(server.url).host, Origin: "https://app.example" });
    assert.is(good.status, 200);
    assert.is(good.headers["access-control-allow-origin"], "https://app.example");
    // clients outside a browser send no Origin
    assert.is((await httpCall(`${server.url}/v1/models`)).status, 200);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

browsers("bound beyond loopback: any Host (load balancers), unless --allowed-host names the ones to answer", async () => {
  const model = await testModel();
  const open = await startServer(["--model", model, "--host", "0.0.0.0", "--api-key", "operator-key-1"]);
  try {
    assert.is((await raw(open.url.replace("0.0.0.0", "127.0.0.1"), "/health", { Host: "lb.example" })).status, 200);
  } finally {
    assert.is(await open.stop(), 0);
  }
  const named = await startServer(["--model", model, "--host", "0.0.0.0", "--api-key", "operator-key-1", "--allowed-host", "mlxs.example"]);
  try {
    const url = named.url.replace("0.0.0.0", "127.0.0.1");
    assert.is((await raw(url, "/health", { Host: "lb.example" })).status, 403);
    assert.is((await raw(url, "/health", { Host: "mlxs.example" })).status, 200);
  } finally {
    assert.is(await named.stop(), 0);
  }
});

browsers("headers: nosniff everywhere, no-store on the audit routes and on errors, no Server banner", async () => {
  const server = await startServer(["--model", await testModel()]);
  try {
    const ok = await httpCall(`${server.url}/v1/models`);
    assert.is(ok.headers["x-content-type-options"], "nosniff");
    assert.is(ok.headers.server, undefined);
    const audit = await httpCall(`${server.url}/v1/audit/logs`);
    assert.is(audit.headers["cache-control"], "no-store");
    assert.is(audit.headers["x-content-type-options"], "nosniff");
    const error = await httpCall(`${server.url}/v1/nothing`);
    assert.is(error.status, 404);
    assert.is(error.headers["cache-control"], "no-store");
    assert.is(error.headers["x-content-type-options"], "nosniff");
    assert.is(error.headers.server, undefined);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

browsers.run();

const keys = suite("scoped keys, limits and usage per key");

const KEYS = {
  alice: "alice-secret-key-0001",
  bob: "bob-secret-key-0002",
  auditor: "auditor-secret-key-0003",
  root: "root-secret-key-0004",
  slow: "slow-secret-key-0005",
  one: "one-at-a-time-key-0006",
  tokens: "token-budget-key-0007",
};
const bearer = (key) => ({ authorization: `Bearer ${key}` });

function keysFile() {
  const file = join(tempDir(), "keys");
  writeFileSync(file, [
    "# label key options",
    `alice ${KEYS.alice}`,
    `bob ${KEYS.bob} scope=inference`,
    `auditor ${KEYS.auditor} scope=audit`,
    `root ${KEYS.root} scope=admin`,
    `slow ${KEYS.slow} rpm=2`,
    `one ${KEYS.one} concurrency=1`,
    `tokens ${KEYS.tokens} tpm=10`,
    "",
  ].join("\n"));
  return file;
}

keys("scopes: inference keys use the models and read only their own records (?mine=true); audit keys read the log; admin keys do everything; --api-key is admin", async () => {
  const server = await startServer(["--model", await testModel(), "--api-keys-file", keysFile(), "--api-key", "command-line-key-9"]);
  try {
    const chat = (key, id) => httpCall(`${server.url}/v1/chat/completions`, jsonRequest(ask, { ...bearer(key), "x-request-id": id }));
    assert.is((await chat(KEYS.alice, "alice-1")).status, 200);
    assert.is((await chat(KEYS.alice, "alice-2")).status, 200);
    assert.is((await chat(KEYS.bob, "bob-1")).status, 200);
    const denied = await chat(KEYS.auditor, "auditor-1");
    assert.is(denied.status, 403);
    assert.match(denied.text, /insufficient_scope/);
    await waitForRows(server.db, (r) => ["alice-1", "alice-2", "bob-1"].every((id) => r.some((x) => x.request_id === id)));

    const logs = (key, query = "") => httpCall(`${server.url}/v1/audit/logs${query}`, { headers: bearer(key) });
    assert.is((await logs(KEYS.alice)).status, 403, "an inference key does not read everyone's records");
    const mine = await logs(KEYS.alice, "?mine=true&limit=1000&endpoint=/v1/chat/completions");
    assert.is(mine.status, 200);
    assert.equal(mine.body.data.map((r) => r.request_id).sort(), ["alice-1", "alice-2"]);
    // asking for another's records does not widen mine
    assert.equal((await logs(KEYS.alice, "?mine=true&client=bob&endpoint=/v1/chat/completions")).body.data.map((r) => r.request_id).sort(), ["alice-1", "alice-2"]);
    for (const path of ["/v1/audit/stats", "/v1/audit/export"]) {
      assert.is((await httpCall(`${server.url}${path}`, { headers: bearer(KEYS.bob) })).status, 403, path);
      assert.is((await httpCall(`${server.url}${path}?mine=true`, { headers: bearer(KEYS.bob) })).status, 200, path);
    }
    const all = await logs(KEYS.auditor, "?limit=1000&endpoint=/v1/chat/completions");
    assert.is(all.status, 200);
    assert.ok(["alice-1", "bob-1", "auditor-1"].every((id) => all.body.data.some((r) => r.request_id === id)));

    const name = (await httpCall(`${server.url}/v1/models`, { headers: bearer(KEYS.alice) })).body.data[0].id;
    const load = (key) => httpCall(`${server.url}/v1/models/${name}/load`, { method: "POST", headers: bearer(key) });
    assert.is((await load(KEYS.alice)).status, 403);
    assert.is((await load(KEYS.auditor)).status, 403);
    assert.is((await load(KEYS.root)).status, 200);
    assert.is((await load("command-line-key-9")).status, 200);
    assert.is((await logs("command-line-key-9")).status, 200);
  } finally {
    assert.is(await server.stop(), 0);
  }
  // labels only: no key is anywhere in the data directory
  for (const key of Object.values(KEYS)) assertNoMarker(server.home, key);
  assertNoMarker(server.home, "command-line-key-9");
});

keys("limits: rpm, concurrency and tpm answer 429 with Retry-After, in each API's envelope", async () => {
  const server = await startServer(["--model", await testModel({ endless: true }), "--api-keys-file", keysFile()]);
  try {
    const chat = (key, extra = {}) => httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ ...ask, ...extra }, bearer(key)));
    assert.is((await chat(KEYS.slow)).status, 200);
    assert.is((await chat(KEYS.slow)).status, 200);
    const third = await chat(KEYS.slow);
    assert.is(third.status, 429);
    assert.ok(Number(third.headers["retry-after"]) >= 1 && Number(third.headers["retry-after"]) <= 60);
    assert.is(third.body.error.type, "rate_limit_error");
    const anthropic = await httpCall(`${server.url}/v1/messages`, jsonRequest({ model: "endless", max_tokens: 3, messages: [{ role: "user", content: "hi" }] }, bearer(KEYS.slow)));
    assert.is(anthropic.status, 429);
    assert.is(anthropic.body.type, "error");
    assert.is(anthropic.body.error.type, "rate_limit_error");
    // other keys are not touched by one key's limit
    assert.is((await chat(KEYS.alice)).status, 200);

    // concurrency 1: a second request while one runs
    const { request } = await import("undici");
    const running = await request(`${server.url}/v1/chat/completions`, jsonRequest({ ...ask, max_tokens: 100_000, stream: true }, bearer(KEYS.one)));
    const reading = running.body.text().catch(() => undefined);
    const second = await chat(KEYS.one);
    assert.is(second.status, 429);
    assert.is(second.headers["retry-after"], "1");
    running.body.destroy();
    await reading;

    // tpm 10: the first answer uses more; the next is refused until the minute has passed
    assert.is((await chat(KEYS.tokens)).status, 200);
    const over = await chat(KEYS.tokens);
    assert.is(over.status, 429);
    assert.match(over.body.error.message, /tokens a minute/);
    const rows = await waitForRows(server.db, (r) => r.filter((x) => x.status_code === 429).length >= 4);
    assert.ok(rows.filter((x) => x.status_code === 429).every((x) => x.error_type === "rate_limit_exceeded"));
  } finally {
    assert.is(await server.stop(), 0);
  }
});

keys("usage per key: audit stats --by client|model|endpoint|day, and /v1/audit/stats?by=", async () => {
  const server = await startServer(["--model", await testModel(), "--api-keys-file", keysFile()]);
  try {
    for (const [key, n] of [[KEYS.alice, 3], [KEYS.bob, 1]]) {
      for (let i = 0; i < n; i++) assert.is((await httpCall(`${server.url}/v1/chat/completions`, jsonRequest(ask, bearer(key)))).status, 200);
    }
    await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ messages: "bad" }, bearer(KEYS.bob)));
    await waitForRows(server.db, (r) => r.filter((x) => x.endpoint === "/v1/chat/completions").length === 5);
    const byClient = await httpCall(`${server.url}/v1/audit/stats?by=client&endpoint=/v1/chat/completions`, { headers: bearer(KEYS.auditor) });
    assert.is(byClient.status, 200);
    const groups = Object.fromEntries(byClient.body.data.map((g) => [g.key, g]));
    assert.is(groups.alice.requests, 3);
    assert.is(groups.alice.errors, 0);
    assert.ok(groups.alice.prompt_tokens > 0 && groups.alice.completion_tokens > 0);
    assert.ok(groups.alice.p50_ms > 0 && groups.alice.p95_ms >= groups.alice.p50_ms);
    assert.is(groups.bob.requests, 2);
    assert.is(groups.bob.errors, 1);
    assert.is((await httpCall(`${server.url}/v1/audit/stats?by=colour`, { headers: bearer(KEYS.auditor) })).status, 400);
    // an inference key sees its own group only
    const own = await httpCall(`${server.url}/v1/audit/stats?by=client&mine=true`, { headers: bearer(KEYS.bob) });
    assert.equal(own.body.data.map((g) => g.key), ["bob"]);

    const cli = await runCli(["audit", "stats", "--by", "client", "--endpoint", "/v1/chat/completions", "--json"], { env: { MLXS_HOME: server.home } });
    assert.is(cli.code, 0, cli.stderr);
    assert.equal(JSON.parse(cli.stdout).data, byClient.body.data);
    const table = await runCli(["audit", "stats", "--by", "day"], { env: { MLXS_HOME: server.home } });
    assert.is(table.code, 0, table.stderr);
    assert.match(table.stdout, /^day\s+requests\s+errors\s+tokens in\s+tokens out\s+p50 ms\s+p95 ms\s+tokens\/s\n\d{4}-\d\d-\d\d\s+\d+/);
    const bad = await runCli(["audit", "stats", "--by", "colour"], { env: { MLXS_HOME: server.home } });
    assert.is(bad.code, 2);
    assert.is(bad.stderr.trim().split("\n").length, 1);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

keys.run();

const matrix = suite("the auth matrix, from the route table");

matrix("every route x method x {no key, wrong key, inference, audit, admin} x {good Host, foreign Host, foreign Origin}", async () => {
  const server = await startServer(["--model", await testModel(), "--api-keys-file", keysFile(), "--metrics"]);
  try {
    const name = (await httpCall(`${server.url}/v1/models`, { headers: bearer(KEYS.root) })).body.data[0].id;
    // the table the daemon serves: a new route is covered here without editing this test
    const routes = [...adminRoutes(async () => undefined, () => "ready"), ...apiRoutes(() => "ready"), metricsRoute({}, false)];
    assert.ok(routes.length >= 15);
    const callers = { "no key": undefined, "wrong key": "not-a-key-000000", inference: KEYS.alice, audit: KEYS.auditor, admin: KEYS.root };
    const host = new URL(server.url).host;
    let checked = 0;
    for (const route of routes) {
      const path = route.path.replace("{id}", name);
      for (const [who, key] of Object.entries(callers)) {
        for (const where of ["good Host", "foreign Host", "foreign Origin"]) {
          const headers = { Host: where === "foreign Host" ? "rebound.example" : host, ...(where === "foreign Origin" ? { Origin: "https://rebound.example" } : {}), ...(key ? bearer(key) : {}) };
          const res = await raw(server.url, path, headers, { method: route.method, body: route.method === "POST" ? {} : undefined, headOnly: true });
          const what = `${route.method} ${route.path}, ${who}, ${where}: ${res.status} ${res.text.slice(0, 200)}`;
          checked++;
          if (where === "foreign Host") { assert.is(res.status, 403, what); assert.match(res.text, /host_not_allowed/, what); continue; }
          if (where === "foreign Origin") { assert.is(res.status, 403, what); assert.match(res.text, /origin_not_allowed/, what); continue; }
          if (route.open) { assert.ok(res.status !== 401 && res.status !== 403, what); continue; }
          if (!key || who === "wrong key") { assert.is(res.status, 401, what); continue; }
          const needed = route.scope ?? "inference";
          if (who === "admin" || who === needed) assert.ok(res.status !== 401 && res.status !== 403, what);
          else { assert.is(res.status, 403, what); assert.match(res.text, /insufficient_scope/, what); }
        }
      }
    }
    assert.is(checked, routes.length * 15);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

matrix.run();

const clock = suite("limits on a fake clock, usage by hand");

clock("rpm is a sliding window; concurrency counts what runs; tpm refuses until the tokens leave the minute", () => {
  const limits = new KeyLimits([{ label: "a", key: "x", rpm: 3 }, { label: "c", key: "y", concurrency: 2 }, { label: "t", key: "z", tpm: 50 }]);
  const t0 = 1_000_000;
  for (const at of [0, 10_000, 20_000]) limits.admit("a", t0 + at)();
  const refused = (() => { try { limits.admit("a", t0 + 30_000); } catch (error) { return error; } })();
  assert.is(refused.status, 429);
  assert.is(refused.options.headers["Retry-After"], "30", "the first of the three leaves the window at 60 s");
  assert.throws(() => limits.admit("a", t0 + 59_999));
  limits.admit("a", t0 + 60_001)();
  assert.throws(() => limits.admit("a", t0 + 60_002), "the second is still in the window");
  limits.admit("a", t0 + 70_001);

  const first = limits.admit("c", t0);
  limits.admit("c", t0);
  assert.throws(() => limits.admit("c", t0));
  first();
  first();
  limits.admit("c", t0);
  assert.throws(() => limits.admit("c", t0), "releasing twice gives one place back");

  limits.admit("t", t0)();
  limits.used("t", 60, t0 + 5_000);
  const over = (() => { try { limits.admit("t", t0 + 6_000); } catch (error) { return error; } })();
  assert.is(over.options.headers["Retry-After"], "59");
  limits.admit("t", t0 + 65_001);
  // keys without limits, and unknown labels, are never refused
  for (let i = 0; i < 1000; i++) limits.admit("nobody", t0)();
});

clock("stats --by against figures computed by hand", async () => {
  const store = await AuditStore.open(join(tempDir(), "audit.db"));
  const day1 = Date.UTC(2026, 10, 27, 12);
  const day2 = Date.UTC(2026, 10, 28, 12);
  const rec = (i, client, at, duration, status, prompt, completion) => ({ ...syntheticRecord(i, { now: at }), timestamp: at, client, duration_ms: duration, status, prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, model: "m", endpoint: "/v1/chat/completions" });
  await store.insert([
    rec(1, "a", day1, 40, "success", 10, 5),
    rec(2, "a", day1, 10, "success", 11, 6),
    rec(3, "a", day2, 30, "error", 12, 0),
    rec(4, "a", day2, 20, "success", 13, 7),
    rec(5, "b", day2, 5, "success", 1, 1),
    rec(6, null, day2, 7, "timeout", 2, 0),
  ]);
  const all = parseFilter({}, { defaultLimit: null });
  // nearest rank: p50 of [10, 20, 30, 40] is the 2nd, p95 the 4th
  assert.equal(await store.statsBy(all, "client"), [
    // tokens/s: generated tokens over generation time (duration less ttft, which is 10 + i here, and
    // load, none here) of the records that generated; none where that time is not positive
    { key: "a", requests: 4, errors: 1, prompt_tokens: 46, completion_tokens: 18, p50_ms: 20, p95_ms: 40, tokens_per_second: 18 / ((40 - 11 + 10 - 12 + 20 - 14) / 1000) },
    { key: "(none)", requests: 1, errors: 0, prompt_tokens: 2, completion_tokens: 0, p50_ms: 7, p95_ms: 7, tokens_per_second: null },
    { key: "b", requests: 1, errors: 0, prompt_tokens: 1, completion_tokens: 1, p50_ms: 5, p95_ms: 5, tokens_per_second: null },
  ]);
  assert.equal(await store.statsBy(all, "day"), [
    { key: "2026-11-28", requests: 4, errors: 1, prompt_tokens: 28, completion_tokens: 8, p50_ms: 7, p95_ms: 30, tokens_per_second: null },
    { key: "2026-11-27", requests: 2, errors: 0, prompt_tokens: 21, completion_tokens: 11, p50_ms: 10, p95_ms: 40, tokens_per_second: 11 / ((40 - 11 + 10 - 12) / 1000) },
  ]);
  assert.equal((await store.statsBy(parseFilter({ client: "a", since: new Date(day2 - 1).toISOString() }, { defaultLimit: null }), "model")).map((g) => [g.key, g.requests, g.p50_ms]), [["m", 2, 20]]);
  await store.close();
});

clock.run();

const refusals = suite("refusals leave records, on every route");

refusals("401 and 403 on /metrics (and a foreign Host on /health) are recorded and counted; answered scrapes and health checks are not", async () => {
  const server = await startServer(["--model", await testModel(), "--api-keys-file", keysFile(), "--metrics"]);
  try {
    const host = new URL(server.url).host;
    for (let i = 0; i < 20; i++) assert.is((await raw(server.url, "/metrics", { Host: host, ...bearer(`guess-${i}-0000000000`), "x-request-id": `guess-${i}` })).status, 401);
    for (let i = 0; i < 3; i++) assert.is((await raw(server.url, "/metrics", { Host: host, ...bearer(KEYS.alice), "x-request-id": `scope-${i}` })).status, 403);
    assert.is((await raw(server.url, "/health", { Host: "rebound.example", "x-request-id": "rebound-health" })).status, 403);
    assert.is((await raw(server.url, "/health", { Host: host, "x-request-id": "health-ok" })).status, 200);
    assert.is((await raw(server.url, "/metrics", { Host: host, ...bearer(KEYS.auditor), "x-request-id": "scrape-ok" })).status, 200);
    const rows = await waitForRows(server.db, (r) => r.filter((x) => /^(guess|scope|rebound)-/.test(x.request_id)).length === 24);
    const of = (prefix) => rows.filter((r) => r.request_id.startsWith(prefix));
    assert.ok(of("guess-").every((r) => r.endpoint === "/metrics" && r.status === "error" && r.status_code === 401 && r.error_type === "invalid_api_key"));
    assert.ok(of("scope-").every((r) => r.endpoint === "/metrics" && r.status_code === 403 && r.error_type === "insufficient_scope" && r.client === "alice"));
    assert.equal(of("rebound-").map((r) => [r.endpoint, r.status_code, r.error_type]), [["/health", 403, "host_not_allowed"]]);
    assert.equal([...of("health-ok"), ...of("scrape-ok")], []);
    const scrape = await raw(server.url, "/metrics", { Host: host, ...bearer(KEYS.auditor) });
    assert.match(scrape.text, /mlxs_requests_total\{http_route="\/metrics",status="error"\} 23\n/);
    assert.match(scrape.text, /mlxs_requests_total\{http_route="\/health",status="error"\} 1\n/);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

refusals.run();
