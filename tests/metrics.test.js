// GET /metrics (--metrics): the exposition after real traffic, the closed label sets,
// `promtool check metrics`, the API key, and a real Prometheus scraping a daemon.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { httpCall, jsonRequest, startServer, tempDir, testModel, waitFor, waitForText } from "./helpers.js";

const chat = (url, model, extra = {}) => httpCall(`${url}/v1/chat/completions`, jsonRequest({ ...(model ? { model } : {}), messages: [{ role: "user", content: "hello" }], max_tokens: 4, temperature: 0, ...extra }));

/** The value of one sample of the exposition, by its name and labels; undefined when absent. */
function sample(text, name, labels = {}) {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

const exposition = suite("the exposition");

exposition("after real traffic: GenAI histograms per operation, model, route and status, request counters, gauges, process metrics; promtool accepts it", async () => {
  const server = await startServer(["--model", await testModel(), "--metrics"]);
  try {
    const name = (await httpCall(`${server.url}/v1/models`)).body.data[0].id;
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push((await chat(server.url)).body);
    const streamed = await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ messages: [{ role: "user", content: "hi" }], max_tokens: 3, temperature: 0, stream: true }));
    assert.is(streamed.status, 200);
    assert.is((await httpCall(`${server.url}/v1/completions`, jsonRequest({ prompt: "once", max_tokens: 2 }))).status, 200);
    assert.is((await httpCall(`${server.url}/v1/embeddings`, jsonRequest({ input: "a b c" }))).status, 200);
    // a model nobody serves, its name made to break out of a label: counted as unknown
    const evil = 'evil"} 1\nmlxs_pwned{x="1';
    assert.is((await chat(server.url, evil)).status, 404);
    assert.is((await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ messages: "no" }))).status, 400);
    assert.is((await httpCall(`${server.url}/v1/no/such/route`)).status, 404);

    // a request is counted once its answer has been sent and its connection closed, a
    // moment after the client has read it: the scrape waits for the last of them
    const requests = (text, http_route, status) => sample(text, "mlxs_requests_total", { http_route, status });
    let res;
    await waitFor(async () => {
      res = await httpCall(`${server.url}/metrics`);
      const t = res.text;
      return requests(t, "/v1/chat/completions", "success") === 4 && requests(t, "/v1/chat/completions", "error") === 2
        && requests(t, "/v1/completions", "success") === 1 && requests(t, "/v1/embeddings", "success") === 1 && requests(t, "unknown", "error") === 1;
    }, { what: "every request counted", timeoutMs: 10_000, describe: () => res?.text.split("\n").filter((l) => l.startsWith("mlxs_requests_total")).join("; ") });
    assert.is(res.status, 200);
    assert.match(res.headers["content-type"], /^text\/plain; version=0\.0\.4/);
    const text = res.text;
    const ok = { gen_ai_operation_name: "chat", gen_ai_request_model: name, http_route: "/v1/chat/completions", status: "success" };
    assert.is(sample(text, "gen_ai_server_request_duration_seconds_count", ok), 4);
    assert.is(sample(text, "gen_ai_server_time_to_first_token_seconds_count", ok), 4);
    assert.ok(sample(text, "gen_ai_server_time_per_output_token_seconds_count", ok) >= 3);
    const promptTokens = answers.reduce((sum, a) => sum + a.usage.prompt_tokens, 0);
    const completionTokens = answers.reduce((sum, a) => sum + a.usage.completion_tokens, 0);
    assert.ok(sample(text, "gen_ai_client_token_usage_sum", { ...ok, gen_ai_token_type: "input" }) > promptTokens, "three answers' prompts and the stream's");
    assert.ok(sample(text, "gen_ai_client_token_usage_sum", { ...ok, gen_ai_token_type: "output" }) >= completionTokens);
    assert.is(sample(text, "gen_ai_server_request_duration_seconds_count", { gen_ai_operation_name: "text_completion", http_route: "/v1/completions" }), 1);
    assert.is(sample(text, "gen_ai_client_token_usage_count", { gen_ai_operation_name: "embeddings", gen_ai_token_type: "input" }), 1);
    assert.is(sample(text, "gen_ai_client_token_usage_count", { gen_ai_operation_name: "embeddings", gen_ai_token_type: "output" }), undefined);
    // the bucket bounds are OpenTelemetry's
    assert.is(sample(text, "gen_ai_server_request_duration_seconds_bucket", { ...ok, le: "81.92" }), 4);
    // refused requests: the unknown model, and the bad body (for the default model)
    assert.is(sample(text, "gen_ai_server_request_duration_seconds_count", { gen_ai_request_model: "unknown", status: "error" }), 1);
    assert.is(sample(text, "gen_ai_server_request_duration_seconds_count", { gen_ai_request_model: name, status: "error" }), 1);
    assert.not.match(text, /evil|pwned/);
    assert.is(sample(text, "mlxs_requests_total", { http_route: "/v1/chat/completions", status: "success" }), 4);
    assert.is(sample(text, "mlxs_requests_total", { http_route: "/v1/chat/completions", status: "error" }), 2);
    assert.is(sample(text, "mlxs_requests_total", { http_route: "unknown", status: "error" }), 1);
    // health checks and scrapes are not requests of the API
    assert.is(sample(text, "mlxs_requests_total", { http_route: "/metrics" }), undefined);
    assert.is(sample(text, "mlxs_models_loaded"), 1);
    assert.is(sample(text, "mlxs_sequences_busy"), 0);
    assert.is(sample(text, "mlxs_queue_depth"), 0);
    assert.is(sample(text, "mlxs_audit_dropped_total"), 0);
    assert.ok(sample(text, "mlxs_audit_pending") >= 0);
    assert.ok(sample(text, "process_resident_memory_bytes") > 0);
    // the audit writer's batches are timed once it has written one
    await waitFor(async () => sample((await httpCall(`${server.url}/metrics`)).text, "mlxs_audit_write_seconds_count") > 0, { what: "an audit write", timeoutMs: 10_000 });
    const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    assert.is(check.error, undefined, "promtool is installed (npm test installs Debian's prometheus: tests/requirements.sh)");
    assert.is(check.status, 0, check.stdout + check.stderr);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

exposition("off unless --metrics; behind the API key when keys are set, unless --metrics-public", async () => {
  const model = await testModel();
  const plain = await startServer(["--model", model]);
  try {
    assert.is((await httpCall(`${plain.url}/metrics`)).status, 404);
  } finally {
    assert.is(await plain.stop(), 0);
  }
  const keyed = await startServer(["--model", model, "--metrics", "--api-key", "key-0000001"]);
  try {
    assert.is((await httpCall(`${keyed.url}/metrics`)).status, 401);
    assert.is((await httpCall(`${keyed.url}/metrics`, { headers: { authorization: "Bearer key-0000001" } })).status, 200);
  } finally {
    assert.is(await keyed.stop(), 0);
  }
  const open = await startServer(["--model", model, "--metrics", "--metrics-public", "--api-key", "key-0000001"]);
  try {
    assert.is((await httpCall(`${open.url}/metrics`)).status, 200);
    assert.is((await chat(open.url)).status, 401, "the API itself still needs the key");
  } finally {
    assert.is(await open.stop(), 0);
  }
});

exposition.run();

const prometheus = suite("a real Prometheus");

const freePort = () => new Promise((resolve) => {
  const probe = createServer().listen(0, "127.0.0.1", () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  });
});

prometheus("Prometheus scrapes a daemon: its API answers the request count, the token sum and a latency quantile", async () => {
  const installed = spawnSync("prometheus", ["--version"], { encoding: "utf8" });
  assert.is(installed.error, undefined, "prometheus is installed (npm test installs Debian's prometheus: tests/requirements.sh)");
  const server = await startServer(["--model", await testModel(), "--metrics"]);
  const dir = tempDir();
  const port = await freePort();
  const target = new URL(server.url).host;
  writeFileSync(join(dir, "prometheus.yml"), `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mlxs\n    static_configs:\n      - targets: ["${target}"]\n`);
  const prom = spawn("prometheus", [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  prom.stderr.on("data", (c) => { log += c; });
  prom.on("error", (error) => { log += `could not start prometheus: ${error.message}`; });
  const query = async (q) => {
    const res = await httpCall(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`).catch(() => undefined);
    const value = res?.body?.data?.result?.[0]?.value?.[1];
    return value === undefined ? undefined : Number(value);
  };
  try {
    await waitForText(() => log, /Server is ready to receive web requests/, { timeoutMs: 30_000 });
    let tokens = 0;
    for (let i = 0; i < 5; i++) tokens += (await chat(server.url)).body.usage.completion_tokens;
    const route = 'http_route="/v1/chat/completions",status="success"';
    assert.is(await waitFor(async () => (await query(`mlxs_requests_total{${route}}`)) === 5 || undefined, { what: "Prometheus to scrape 5 requests", timeoutMs: 30_000, intervalMs: 250 }), true);
    assert.is(await query(`sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output",${route}})`), tokens);
    assert.is(await query(`sum(gen_ai_server_request_duration_seconds_count{${route}})`), 5);
    const p95 = await query(`histogram_quantile(0.95, sum by (le) (gen_ai_server_request_duration_seconds_bucket{${route}}))`);
    assert.ok(p95 > 0 && p95 <= 81.92, `p95 ${p95}`);
    assert.is(await query(`up{job="mlxs"}`), 1);
  } finally {
    prom.kill("SIGTERM");
    await new Promise((resolve) => (prom.exitCode !== null ? resolve() : prom.on("close", resolve)));
    assert.is(await server.stop(), 0);
  }
});

prometheus.run();
