// Models on demand: several generated models of different sizes in a models directory,
// loaded when asked (once, however many ask at once), unloaded when idle, evicted least
// recently used first (never while busy, never when pinned), refused when they cannot fit,
// and a /health that tells the truth.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import { writeTinyModel } from "../dist/core/gguf-writer.js";
import { ENDLESS_CONTEXT, TEST_MODEL, httpCall, jsonRequest, startServer, tempDir, waitFor, waitForRows, followLifecycle } from "./helpers.js";

/** Three models of different sizes (and one that never ends its answers), and a damaged file. */
async function modelsHome() {
  const home = tempDir();
  const dir = join(home, "models");
  mkdirSync(dir, { recursive: true });
  await Promise.all([
    writeTinyModel(join(dir, "alpha.gguf"), { ...TEST_MODEL, seed: 1 }),
    writeTinyModel(join(dir, "beta.gguf"), { ...TEST_MODEL, embeddingLength: 96, seed: 2 }),
    writeTinyModel(join(dir, "gamma.gguf"), { ...TEST_MODEL, embeddingLength: 128, feedForwardLength: 256, seed: 3 }),
    // a long context: an answer that takes seconds, whatever the machine
    writeTinyModel(join(dir, "endless.gguf"), { ...TEST_MODEL, canEnd: false, contextLength: ENDLESS_CONTEXT, seed: 4 }),
  ]);
  // GGUF's magic, then nothing a model needs
  writeFileSync(join(dir, "broken.gguf"), Buffer.concat([Buffer.from("GGUF"), Buffer.alloc(64, 7)]));
  return home;
}

/** for the endless model: one sequence of its whole context */
const LONG = ["--ctx-size", String(ENDLESS_CONTEXT), "--parallel", "1"];
const ask = (model, extra = {}) => jsonRequest({ model, messages: [{ role: "user", content: "Say something." }], max_tokens: 6, temperature: 0, ...extra });
const chat = async (server, model, extra) => httpCall(`${server.url}/v1/chat/completions`, ask(model, extra));
const ps = async (server) => (await httpCall(`${server.url}/v1/ps`)).body.data;
const loadedNames = async (server) => (await ps(server)).filter((m) => m.state === "loaded").map((m) => m.model).sort();


async function withServer(args, fn, options = {}) {
  const home = options.home ?? await modelsHome();
  const server = await startServer(args, { home, env: options.env });
  try {
    await fn(server);
  } finally {
    assert.is(await server.stop(), 0, server.stderr());
  }
}

const demand = suite("load on demand");

demand("/v1/models lists every model of the directory; the first request loads one, its record says how long; a second does not wait", async () => {
  await withServer(["--model", "alpha"], async (server) => {
    const listed = (await httpCall(`${server.url}/v1/models`)).body.data;
    assert.equal(listed.map((m) => m.id).sort(), ["alpha", "beta", "broken", "endless", "gamma"]);
    const alpha = listed.find((m) => m.id === "alpha");
    assert.is(alpha.loaded, true, "the model it was started with is loaded at start");
    assert.is(alpha.context_size, 1024);
    assert.ok(listed.find((m) => m.id === "gamma").size_bytes > alpha.size_bytes, "sizes on disk");
    assert.is(listed.find((m) => m.id === "beta").loaded, false);
    assert.not.ok(JSON.stringify(listed).includes(server.home), "names, never paths");
    const first = await chat(server, "beta", { stream: false });
    assert.is(first.status, 200, first.text);
    assert.ok(first.body.timings.load_ms > 0, "the first request waited for the load");
    assert.ok(first.body.timings.queue_ms >= first.body.timings.load_ms, "queue time includes the load");
    const second = await chat(server, "beta");
    assert.is(second.body.timings.load_ms, 0);
    assert.equal(await loadedNames(server), ["alpha", "beta"]);
    const rows = await waitForRows(server.db, (r) => r.filter((x) => x.model === "beta").length >= 2);
    const [cold, warm] = rows.filter((r) => r.model === "beta");
    assert.ok(cold.load_ms > 0 && warm.load_ms === 0, `${cold.load_ms} then ${warm.load_ms}`);
    assert.ok(cold.ttft_ms < cold.load_ms, "time to first token leaves the load out");
  });
});

demand("20 requests at once for a model not loaded share one load", async () => {
  await withServer(["--model", "alpha"], async (server) => {
    const followed = await followLifecycle(server);
    const answers = await Promise.all(Array.from({ length: 20 }, () => chat(server, "gamma", { max_tokens: 2 })));
    assert.ok(answers.every((a) => a.status === 200), answers.map((a) => a.status).join(" "));
    await waitFor(() => followed.events.some((e) => e.type === "load" && e.model === "gamma"), { what: "the load event" });
    await followed.stop();
    assert.is(followed.events.filter((e) => e.type === "load" && e.model === "gamma").length, 1, JSON.stringify(followed.events));
  });
});

demand("a damaged model file among good ones: a clear 503 for it, every other model untouched", async () => {
  await withServer(["--model", "alpha"], async (server) => {
    const broken = await chat(server, "broken");
    assert.is(broken.status, 503, broken.text);
    assert.is(broken.body.code, "model_unavailable");
    assert.match(broken.body.detail, /broken/);
    assert.not.ok(broken.text.includes(server.home), "the message names the model, not its path");
    assert.is((await chat(server, "beta")).status, 200);
    assert.is((await chat(server, "alpha")).status, 200);
    assert.is((await httpCall(`${server.url}/health`)).status, 200);
    assert.is((await chat(server, "broken")).status, 503, "and it is tried again, and fails again, cleanly");
  });
});

demand.run();

const expiry = suite("keep-alive");

expiry("--keep-alive: an idle model is unloaded after it; keep_alive 0 unloads after the request; a cap holds -1", async () => {
  await withServer(["--model", "alpha", "--keep-alive", "1s", "--max-keep-alive", "3s"], async (server) => {
    const used = Date.now();
    await chat(server, "beta");
    assert.ok((await loadedNames(server)).includes("beta"));
    await waitFor(async () => !(await loadedNames(server)).includes("beta"), { what: "beta to expire", timeoutMs: 15_000 });
    assert.ok(Date.now() - used >= 1000, "not before its keep-alive");
    await chat(server, "gamma", { keep_alive: 0 });
    await waitFor(async () => !(await loadedNames(server)).includes("gamma"), { what: "gamma unloaded after its request" });
    await chat(server, "beta", { keep_alive: -1 });
    const capped = (await ps(server)).find((m) => m.model === "beta");
    const left = Date.parse(capped.expires_at) - Date.now();
    assert.ok(left > 0 && left <= 3000, `-1 is capped by --max-keep-alive: ${left} ms left`);
    const bad = await chat(server, "beta", { keep_alive: "soon" });
    assert.is(bad.status, 400);
    assert.is(bad.body.error.param, "keep_alive");
  });
});

expiry.run();

const eviction = suite("eviction and memory");

eviction("--max-loaded 2: the least recently used idle model is evicted for a new one", async () => {
  await withServer(["--model", "alpha", "--max-loaded", "2", "--keep-alive", "-1"], async (server) => {
    await chat(server, "beta");
    await chat(server, "alpha");
    const followed = await followLifecycle(server);
    await chat(server, "gamma");
    assert.equal(await loadedNames(server), ["alpha", "gamma"]);
    await waitFor(() => followed.events.some((e) => e.type === "evict"), { what: "the evict event" });
    assert.equal(followed.events.filter((e) => e.type === "evict").map((e) => [e.model, e.for]), [["beta", "gamma"]]);
    await followed.stop();
  });
});

eviction("a busy model is never evicted: the other request waits, then gets 503 with Retry-After; once free, it loads", async () => {
  await withServer(["--model", "endless", "--max-loaded", "1", "--load-wait", "1s", ...LONG], async (server) => {
    const controller = new AbortController();
    const res = await request(`${server.url}/v1/chat/completions`, { ...ask("endless", { stream: true, max_tokens: 100_000 }), signal: controller.signal });
    const reader = res.body[Symbol.asyncIterator]();
    await reader.next();
    const refused = await chat(server, "beta");
    assert.is(refused.status, 503, refused.text);
    assert.is(refused.body.code, "model_unavailable");
    assert.ok(Number(refused.headers["retry-after"]) > 0);
    assert.equal(await loadedNames(server), ["endless"], "still loaded, still generating");
    controller.abort();
    await res.body.destroy();
    await waitFor(async () => (await ps(server))[0]?.running === 0, { what: "the stream to end" });
    assert.is((await chat(server, "beta")).status, 200);
    assert.equal(await loadedNames(server), ["beta"]);
  });
});

eviction("a pinned model is never evicted nor expired", async () => {
  await withServer(["--model", "alpha", "--pin", "gamma", "--max-loaded", "1", "--keep-alive", "1s", "--load-wait", "1s"], async (server) => {
    assert.equal(await loadedNames(server), ["gamma"], "pinned models load at start, first");
    const refused = await chat(server, "beta");
    assert.is(refused.status, 503);
    assert.ok((await ps(server))[0].pinned);
    assert.is((await ps(server))[0].expires_at, null);
    assert.is((await chat(server, "gamma")).status, 200);
  });
});

eviction("the memory budget: a model that can never fit is refused at once; the one that fits loads", async () => {
  await withServer(["--model", "alpha", "--memory-budget", "8mb"], async (server) => {
    const started = Date.now();
    const big = await chat(server, "gamma");
    assert.is(big.status, 503, big.text);
    assert.match(big.body.detail, /needs about \d+ MiB of memory; the budget is 8 MiB/);
    assert.is(big.headers["retry-after"], undefined, "trying again will not help");
    assert.ok(Date.now() - started < 10_000);
    assert.is((await chat(server, "alpha")).status, 200);
  });
});

eviction.run();

const control = suite("load, unload, ps and health");

control("unload waits for the running request; force cancels it (recorded cancelled); load by hand", async () => {
  await withServer(["--model", "endless", ...LONG], async (server) => {
    // a request that ends by itself, long enough to be seen running: unload waits for it,
    // and it completes
    const running = chat(server, "endless", { max_tokens: 3000 });
    await waitFor(async () => (await ps(server))[0]?.running === 1, { what: "the request to run" });
    const unloaded = await httpCall(`${server.url}/v1/models/endless/unload`, { method: "POST" });
    assert.is(unloaded.body.was_loaded, true);
    const answer = await running;
    assert.is(answer.status, 200);
    assert.is(answer.body.usage.completion_tokens, 3000, "it ran to its end before the unload");
    assert.equal(await loadedNames(server), []);
    // forced: a stream that would never end is cut
    const loaded = await httpCall(`${server.url}/v1/models/endless/load`, { method: "POST" });
    assert.is(loaded.status, 200);
    assert.equal(await loadedNames(server), ["endless"]);
    const res = await request(`${server.url}/v1/chat/completions`, { ...ask("endless", { stream: true, max_tokens: 100_000 }), headers: { "content-type": "application/json", "x-request-id": "forced-1" } });
    const body = res.body.text();
    await waitFor(async () => (await ps(server))[0]?.running === 1, { what: "the stream to run" });
    const forced = await httpCall(`${server.url}/v1/models/endless/unload?force=true`, { method: "POST" });
    assert.is(forced.status, 200);
    assert.match(await body, /event: error\ndata: .*model_unloaded/);
    const rows = await waitForRows(server.db, (r) => r.some((x) => x.request_id === "forced-1"));
    assert.is(rows.find((x) => x.request_id === "forced-1").status, "cancelled");
    assert.is((await httpCall(`${server.url}/v1/models/nope/load`, { method: "POST" })).status, 404);
  });
});

/** The daemon's child processes (its runners, loaded or spare). */
const childrenOf = (pid) => readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

control("once a model is unloaded, a spare runner waits; the next load takes it rather than starting a process; it leaves with the daemon", async () => {
  let spare;
  await withServer(["--model", "alpha"], async (server) => {
    const [first] = await ps(server);
    assert.ok(first.pid > 0);
    assert.equal(childrenOf(server.child.pid), [first.pid], "no spare before anything was unloaded");
    await httpCall(`${server.url}/v1/models/alpha/unload`, { method: "POST" });
    await waitFor(() => { const c = childrenOf(server.child.pid); return c.length === 1 && c[0] !== first.pid; }, { what: "a spare runner" });
    [spare] = childrenOf(server.child.pid);
    assert.is((await httpCall(`${server.url}/v1/models/alpha/load`, { method: "POST" })).status, 200);
    assert.is((await ps(server))[0].pid, spare, "the load took the spare");
    assert.is((await chat(server, "alpha")).status, 200);
    // and another waits for the next load
    await waitFor(() => childrenOf(server.child.pid).length === 2, { what: "a new spare runner" });
  });
  await waitFor(() => !alive(spare), { what: "the runners to leave with the daemon" });
});

control("/health: 503 when a loaded model's runner stops answering, or the scheduler's queue is stuck", async () => {
  const fixture = join(process.cwd(), "tests", "fixtures", "fault-routes.js");
  await withServer(["--model", "alpha"], async (server) => {
    assert.is((await httpCall(`${server.url}/health`)).status, 200);
    // the runner is the only child process of the daemon
    const child = Number(readFileSync(`/proc/${server.child.pid}/task/${server.child.pid}/children`, "utf8").trim().split(/\s+/)[0]);
    process.kill(child, "SIGSTOP");
    try {
      const stuck = await httpCall(`${server.url}/health`);
      assert.is(stuck.status, 503);
      assert.is(stuck.body.status, "unresponsive");
      assert.equal(stuck.body.unresponsive, ["alpha"]);
    } finally {
      process.kill(child, "SIGCONT");
    }
    await waitFor(async () => (await httpCall(`${server.url}/health`)).status === 200, { what: "health to come back" });
    await httpCall(`${server.url}/v1/test/stall-scheduler`, { method: "POST" });
    const stalled = await httpCall(`${server.url}/health`);
    assert.is(stalled.status, 503);
    assert.equal(stalled.body.unresponsive, ["scheduler"]);
  }, { env: { MLXS_TEST_ROUTES: fixture } });
});

control.run();

const demo = suite("the demo model only where there is no other");

/** A data dir whose models directory holds `names` (and an older demo model's file, which is never a model of the user's). */
async function homeWith(names) {
  const home = tempDir();
  const dir = join(home, "models");
  mkdirSync(dir, { recursive: true });
  await Promise.all(names.map((name, i) => writeTinyModel(join(dir, `${name}.gguf`), { ...TEST_MODEL, seed: 10 + i })));
  if (names.length > 0) await writeTinyModel(join(dir, "mlxs-demo-1.gguf"), { ...TEST_MODEL, seed: 1 });
  return { home, dir };
}

demo("--models-dir with three models and no --model: those three listed, none loaded at start, the demo nowhere; a request without a model is 400 naming them", async () => {
  const { dir } = await homeWith(["alpha", "beta", "gamma"]);
  // the models directory given as a flag, apart from the data dir
  await withServer(["--models-dir", dir, "--max-loaded", "1"], async (server) => {
    assert.match(server.stderr(), /\(models: 3 on demand, /);
    assert.not.match(server.stderr(), /demo model/);
    const listed = (await httpCall(`${server.url}/v1/models`)).body.data;
    assert.equal(listed.map((m) => m.id).sort(), ["alpha", "beta", "gamma"]);
    assert.ok(listed.every((m) => m.loaded === false));
    assert.equal(await ps(server), []);
    assert.equal((await httpCall(`${server.url}/health`)).body.models, []);
    const unnamed = await chat(server, undefined);
    assert.is(unnamed.status, 400, unnamed.text);
    assert.is(unnamed.body.error.param, "model");
    assert.match(unnamed.body.error.message, /alpha, beta, gamma/);
    const named = await chat(server, "beta");
    assert.is(named.status, 200, named.text);
    assert.equal(await loadedNames(server), ["beta"]);
  }, { home: tempDir() });
});

demo("one model in the directory: a request without a model gets it; an empty directory: the demo model, as before", async () => {
  const one = await homeWith(["solo"]);
  await withServer([], async (server) => {
    assert.equal((await httpCall(`${server.url}/v1/models`)).body.data.map((m) => m.id), ["solo"]);
    const r = await chat(server, undefined);
    assert.is(r.status, 200, r.text);
    assert.is(r.body.model, "solo");
  }, { home: one.home });
  const none = await homeWith([]);
  await withServer([], async (server) => {
    assert.match(server.stderr(), /demo model/);
    assert.equal((await httpCall(`${server.url}/v1/models`)).body.data.map((m) => m.id), ["demo"]);
    assert.equal(await loadedNames(server), ["demo"]);
    const r = await chat(server, undefined);
    assert.is(r.status, 200, r.text);
    assert.is(r.body.model, "demo");
  }, { home: none.home });
});

demo.run();
