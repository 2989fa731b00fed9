// The model residency's rules, unit by unit, against fake runners and a fake clock
// (tests/fixtures/fake-runner.js): no process, no model file, no wall time. One load per
// model, keep-alive (the daemon's and each request's, capped), LRU eviction under
// --max-loaded and the memory budget, the VRAM budget, pins, busy models, the load wait and
// its 503, the load queue, runners that crash, unloads, events, health and the spare runner.
// The end-to-end tests (lifecycle, runner, serve) still run the same rules with real
// runner processes; these run in milliseconds.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { ModelRegistry } from "../dist/core/registry.js";
import { PINNED_RELOAD_BACKOFF_MS, ModelResidency } from "../dist/core/residency.js";
import { CoreError } from "../dist/core/types.js";
import { FakeClock, FakeRunners, settle } from "./fixtures/fake-runner.js";

const GiB = 2 ** 30;
const MINUTE = 60_000;
const KEEP_ALIVE = 5 * MINUTE;

/**
 * A scheduler over fake runners. `models`: names (the first is the default), each with its
 * fake's behaviour in `behaviour`; `lifecycle` and `core` override the options below.
 */
function setup({ models = ["a", "b", "c"], pins = [], behaviour = {}, lifecycle = {}, core = {}, spare, started = true } = {}) {
  const clock = new FakeClock();
  const runners = new FakeRunners(behaviour);
  const sources = models.map((name) => ({ name, path: `/nowhere/${name}.gguf` }));
  const registry = started
    ? new ModelRegistry({ started: sources, pins })
    : new ModelRegistry({ started: [], configured: Object.fromEntries(models.map((name) => [name, { spec: `hf:nobody/${name}` }])), pins });
  const scheduler = new ModelResidency(
    registry,
    { gpu: "cpu", ctxSize: 1024, parallel: 2, queue: 4, ...core },
    { keepAliveMs: KEEP_ALIVE, maxLoaded: 0, memoryBudgetBytes: 64 * GiB, loadWaitMs: 30_000, modelsDir: "", ...lifecycle },
    { runners: runners.factory, clock, spare },
  );
  const events = [];
  scheduler.events.on("event", (event) => events.push(event));
  const state = (name) => scheduler.loadedModels().find((m) => m.name === name)?.state ?? "unloaded";
  const loaded = () => scheduler.loadedModels().filter((m) => m.state === "loaded").map((m) => m.name).sort();
  /** the events as "type:model", and "evict:victim>for" */
  const told = () => events.map((e) => e.type === "evict" ? `evict:${e.model}>${e.for}` : e.type === "unload" ? `unload:${e.model}:${e.reason}` : `${e.type}:${e.model}`);
  /** a lease taken and given back at once */
  const use = async (name, options) => (await scheduler.acquire(name, options)).release();
  return { clock, runners, registry, scheduler, events, state, loaded, told, use };
}

/** Whether (and how) a promise has settled, without waiting for it. */
function track(promise) {
  const outcome = { done: false, value: undefined, error: undefined };
  promise.then((value) => Object.assign(outcome, { done: true, value }), (error) => Object.assign(outcome, { done: true, error }));
  return outcome;
}

/** The error the promise rejects with (fails if it resolves). */
async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.unreachable("it should have been refused");
}

// ---------------------------------------------------------------------------------------

const loads = suite("one load per model");

loads("concurrent first requests share one runner and one load; each is told how long it waited", async () => {
  const s = setup({ behaviour: { a: { hold: true } } });
  const waiting = Array.from({ length: 5 }, () => track(s.scheduler.acquire("a")));
  await settle();
  assert.is(s.runners.made.length, 1);
  assert.is(s.runners.last("a").loadCalls, 1);
  assert.is(s.state("a"), "loading");
  assert.is(s.scheduler.loadedModels()[0].queued, 5, "all five wait for the load");
  await s.clock.advance(1500);
  assert.ok(waiting.every((w) => !w.done), "nobody is answered before the load ends");
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(waiting.every((w) => w.done && w.value.runner === s.runners.last("a")));
  assert.equal(waiting.map((w) => w.value.loadMs), [1500, 1500, 1500, 1500, 1500]);
  assert.equal(s.told(), ["load:a"]);
  assert.is(s.events[0].load_ms, 1500);
  assert.is(s.scheduler.loadedModels()[0].running, 5);
});

loads("a loaded model is leased at once, with no new load", async () => {
  const s = setup();
  await s.use("a");
  const lease = await s.scheduler.acquire("a");
  assert.is(lease.loadMs, 0);
  assert.is(s.runners.made.length, 1);
  assert.is(s.runners.loads, 1);
  lease.release();
});

loads("two models load side by side, each in its own runner", async () => {
  const s = setup({ behaviour: { a: { hold: true }, b: { hold: true } } });
  const a = track(s.scheduler.acquire("a"));
  const b = track(s.scheduler.acquire("b"));
  await settle();
  assert.equal(s.runners.made.map((r) => r.name), ["a", "b"]);
  s.runners.last("b").finishLoad();
  await settle();
  assert.ok(b.done && !a.done, "b does not wait for a");
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(a.done);
  assert.equal(s.loaded(), ["a", "b"]);
});

loads("a failed load fails every request that waited for it, closes its runner, and the next request tries again", async () => {
  const s = setup({ behaviour: { a: { hold: true } } });
  const waiting = [track(s.scheduler.acquire("a")), track(s.scheduler.acquire("a"))];
  await settle();
  const first = s.runners.last("a");
  first.finishLoad(new CoreError("unavailable", "cannot load model a: its file cannot be read"));
  await settle();
  assert.ok(waiting.every((w) => w.done && w.error instanceof CoreError && w.error.kind === "unavailable"));
  assert.is(waiting[0].error.message, "cannot load model a: its file cannot be read");
  assert.ok(first.closed, "the runner of a failed load is stopped");
  assert.is(s.state("a"), "unloaded");
  assert.equal(s.told(), ["load_failed:a"]);
  s.runners.models.a = {};
  const lease = await s.scheduler.acquire("a");
  assert.is.not(lease.runner, first, "a new runner");
  assert.is(s.state("a"), "loaded");
});

loads("an error that is not a CoreError is told as `unavailable`, naming the model", async () => {
  const s = setup({ behaviour: { a: { fail: new Error("boom") } } });
  const error = await rejection(s.scheduler.acquire("a"));
  assert.is(error.kind, "unavailable");
  assert.match(error.message, /cannot load model a/);
});

loads("the estimate is asked once; threads measured at the first load are given to the next runner", async () => {
  const s = setup({ behaviour: { a: { threads: 3 } } });
  await s.use("a");
  assert.equal(s.runners.last("a").threadsGiven, [undefined]);
  await s.scheduler.unload("a");
  await s.use("a");
  assert.is(s.runners.of("a").length, 2);
  assert.equal(s.runners.last("a").threadsGiven, [3]);
  assert.is(s.runners.made.reduce((n, r) => n + r.estimateCalls, 0), 1);
});

loads("an unknown model is not_found, and loads nothing", async () => {
  const s = setup();
  const error = await rejection(s.scheduler.acquire("zeta"));
  assert.is(error.kind, "not_found");
  assert.is(s.runners.made.length, 0);
});

loads("a request that gives up waiting for the load leaves the queue; the load goes on for the others", async () => {
  const s = setup({ behaviour: { a: { hold: true } } });
  const controller = new AbortController();
  const leaving = track(s.scheduler.acquire("a", { signal: controller.signal }));
  const staying = track(s.scheduler.acquire("a"));
  await settle();
  controller.abort();
  await settle();
  assert.is(leaving.error?.kind, "cancelled");
  assert.is(s.scheduler.loadedModels()[0].queued, 1);
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(staying.done && !staying.error);
  assert.is(s.state("a"), "loaded");
});

// ---------------------------------------------------------------------------------------

const keep = suite("keep-alive");

keep("an idle model is unloaded once its keep-alive has passed since its last request, not a millisecond before", async () => {
  const s = setup();
  await s.use("a");
  const runner = s.runners.last("a");
  await s.clock.advance(KEEP_ALIVE - 1);
  assert.is(s.state("a"), "loaded");
  await s.clock.advance(1);
  assert.is(s.state("a"), "unloaded");
  assert.ok(runner.closed);
  assert.equal(s.told(), ["load:a", "unload:a:keep_alive"]);
});

keep("a request in between starts the keep-alive again from its end", async () => {
  const s = setup();
  await s.use("a");
  await s.clock.advance(4 * MINUTE);
  await s.use("a");
  await s.clock.advance(4 * MINUTE);
  assert.is(s.state("a"), "loaded");
  await s.clock.advance(MINUTE);
  assert.is(s.state("a"), "unloaded");
});

keep("a model held by a request never expires, however long it runs; its keep-alive counts from the release", async () => {
  const s = setup();
  await s.use("a");
  assert.is(s.clock.pending, 1, "idle: its expiry is set");
  const lease = await s.scheduler.acquire("a");
  assert.is(s.clock.pending, 0, "a lease clears the expiry before anything awaits");
  await s.clock.advance(10 * KEEP_ALIVE);
  assert.is(s.state("a"), "loaded");
  assert.is(s.scheduler.loadedModels()[0].expiresAt, null, "no expiry while held");
  lease.release();
  assert.is(s.scheduler.loadedModels()[0].expiresAt, s.clock.now() + KEEP_ALIVE);
  await s.clock.advance(KEEP_ALIVE);
  assert.is(s.state("a"), "unloaded");
});

keep("a request's keep_alive 0 unloads the model as soon as it is idle", async () => {
  const s = setup();
  const lease = await s.scheduler.acquire("a", { keepAliveMs: 0 });
  assert.is(s.state("a"), "loaded");
  lease.release();
  await settle();
  assert.is(s.state("a"), "unloaded");
  assert.equal(s.told(), ["load:a", "unload:a:keep_alive"]);
});

keep("a request's keep_alive -1 keeps the model loaded for good", async () => {
  const s = setup();
  await s.use("a", { keepAliveMs: -1 });
  await s.clock.advance(30 * 24 * 60 * MINUTE);
  assert.is(s.state("a"), "loaded");
  assert.is(s.scheduler.loadedModels()[0].expiresAt, null);
  assert.is(s.clock.pending, 0, "no timer left behind");
});

keep("a request's keep_alive holds for the requests after it that give none", async () => {
  const s = setup();
  await s.use("a", { keepAliveMs: 10_000 });
  await s.use("a");
  await s.clock.advance(10_000);
  assert.is(s.state("a"), "unloaded");
});

keep("--max-keep-alive caps what a request asks for, and turns its -1 into the cap", async () => {
  const s = setup({ lifecycle: { maxKeepAliveMs: 10 * MINUTE } });
  await s.use("a", { keepAliveMs: 60 * MINUTE });
  await s.clock.advance(10 * MINUTE);
  assert.is(s.state("a"), "unloaded", "an hour asked, ten minutes given");
  await s.use("b", { keepAliveMs: -1 });
  await s.clock.advance(10 * MINUTE);
  assert.is(s.state("b"), "unloaded", "forever asked, ten minutes given");
  await s.use("c", { keepAliveMs: MINUTE });
  await s.clock.advance(MINUTE);
  assert.is(s.state("c"), "unloaded", "less than the cap is taken as is");
});

keep("the daemon's keep-alive 0 unloads every model once idle; -1 never does", async () => {
  const zero = setup({ lifecycle: { keepAliveMs: 0 } });
  await zero.use("a");
  await settle();
  assert.is(zero.state("a"), "unloaded");
  const never = setup({ lifecycle: { keepAliveMs: -1 } });
  await never.use("a");
  await never.clock.advance(365 * 24 * 60 * MINUTE);
  assert.is(never.state("a"), "loaded");
});

keep("idleMs counts from the end of the last request, on the scheduler's clock", async () => {
  const s = setup();
  await s.use("a");
  await s.clock.advance(1234);
  assert.is(s.scheduler.idleMs("a"), 1234);
});

// ---------------------------------------------------------------------------------------

const room = suite("room: --max-loaded, the memory budget, pins, busy models");

room("past --max-loaded, the least recently used idle model is evicted for the new one", async () => {
  const s = setup({ lifecycle: { maxLoaded: 2 } });
  await s.use("a");
  await s.clock.advance(10);
  await s.use("b");
  await s.clock.advance(10);
  await s.use("a");
  await s.clock.advance(10);
  await s.use("c");
  assert.equal(s.loaded(), ["a", "c"]);
  assert.ok(s.runners.last("b").closed);
  assert.equal(s.told(), ["load:a", "load:b", "evict:b>c", "load:c"]);
});

room("a model in use is never evicted: the new one waits for its release, then takes its place", async () => {
  const s = setup({ lifecycle: { maxLoaded: 1 } });
  const lease = await s.scheduler.acquire("a");
  const b = track(s.scheduler.acquire("b"));
  await s.clock.advance(10_000);
  assert.not.ok(b.done);
  assert.equal(s.loaded(), ["a"]);
  lease.release();
  await settle();
  assert.ok(b.done && !b.error);
  assert.equal(s.loaded(), ["b"]);
  assert.is(b.value.loadMs, 10_000);
});

room("a model that is loading (requests wait for it) is never evicted: the idle one goes", async () => {
  const s = setup({ lifecycle: { maxLoaded: 2 }, behaviour: { b: { hold: true } } });
  await s.use("a");
  const b = track(s.scheduler.acquire("b"));
  await settle();
  const c = track(s.scheduler.acquire("c"));
  await settle();
  assert.equal(s.told(), ["load:a", "evict:a>c", "load:c"]);
  assert.ok(c.done && !c.error);
  assert.is(s.state("b"), "loading");
  s.runners.last("b").finishLoad();
  await settle();
  assert.ok(b.done && !b.error);
  assert.equal(s.loaded(), ["b", "c"]);
});

room("a pinned model is never evicted: a request for another waits its --load-wait, then is answered 503", async () => {
  const s = setup({ pins: ["a"], lifecycle: { maxLoaded: 1 } });
  await s.use("a");
  const b = track(s.scheduler.acquire("b"));
  await s.clock.advance(30_000 - 1);
  assert.not.ok(b.done);
  await s.clock.advance(1);
  assert.ok(b.done);
  assert.is(b.error.kind, "unavailable");
  assert.is(b.error.retryAfterS, 5);
  assert.match(b.error.message, /no room to load model b/);
  assert.equal(s.loaded(), ["a"]);
  assert.is(s.runners.last("b").loadCalls, 0, "b never loaded");
  assert.ok(s.runners.last("b").closed);
  assert.equal(s.told(), ["load:a", "load_failed:b"]);
});

room("a pinned model never expires", async () => {
  const s = setup({ pins: ["a"], lifecycle: { keepAliveMs: 1000 } });
  await s.use("a", { keepAliveMs: 0 });
  await s.clock.advance(365 * 24 * 60 * MINUTE);
  assert.is(s.state("a"), "loaded");
  assert.is(s.scheduler.loadedModels()[0].pinned, true);
});

room("after a 503 the model loads as soon as there is room", async () => {
  const s = setup({ lifecycle: { maxLoaded: 1, loadWaitMs: 1000 } });
  const lease = await s.scheduler.acquire("a");
  const b = track(s.scheduler.acquire("b"));
  await s.clock.advance(1000);
  assert.is(b.error?.kind, "unavailable");
  lease.release();
  await s.use("b");
  assert.equal(s.loaded(), ["b"]);
});

room("the memory budget: models fit side by side while their estimates do; past it the least recently used is evicted", async () => {
  const s = setup({ lifecycle: { memoryBudgetBytes: 10 * GiB }, behaviour: { a: { ramBytes: 4 * GiB }, b: { ramBytes: 4 * GiB }, c: { ramBytes: 3 * GiB } } });
  await s.use("a");
  await s.clock.advance(10);
  await s.use("b");
  assert.equal(s.loaded(), ["a", "b"]);
  await s.clock.advance(10);
  await s.use("c");
  assert.equal(s.loaded(), ["b", "c"], "4 + 4 + 3 > 10: a, the oldest, went");
  assert.equal(s.scheduler.loadedModels().map((m) => m.memoryBytes).sort(), [3 * GiB, 4 * GiB]);
});

room("the memory budget evicts as many idle models as the new one needs", async () => {
  const s = setup({ lifecycle: { memoryBudgetBytes: 10 * GiB }, behaviour: { a: { ramBytes: 3 * GiB }, b: { ramBytes: 3 * GiB }, c: { ramBytes: 9 * GiB } } });
  await s.use("a");
  await s.clock.advance(10);
  await s.use("b");
  await s.use("c");
  assert.equal(s.loaded(), ["c"]);
  assert.equal(s.told().filter((t) => t.startsWith("evict")), ["evict:a>c", "evict:b>c"]);
});

room("a model that could never fit the budget is told so at once, and evicts nothing", async () => {
  const s = setup({ lifecycle: { memoryBudgetBytes: 8 * GiB }, behaviour: { b: { ramBytes: 9 * GiB } } });
  await s.use("a");
  const b = track(s.scheduler.acquire("b"));
  await settle();
  assert.ok(b.done, "no waiting for --load-wait");
  assert.is(b.error.kind, "unavailable");
  assert.is(b.error.retryAfterS, undefined, "trying again will not help");
  assert.match(b.error.message, /needs about 9216 MiB of memory; the budget is 8192 MiB/);
  assert.equal(s.loaded(), ["a"]);
  assert.equal(s.told(), ["load:a", "load_failed:b"]);
});

room("a loading model counts against --max-loaded: two first requests for two models with room for one load one after the other", async () => {
  const s = setup({ lifecycle: { maxLoaded: 1 }, behaviour: { a: { hold: true } } });
  const a = track(s.scheduler.acquire("a"));
  await settle();
  const b = track(s.scheduler.acquire("b"));
  await settle();
  assert.is(s.runners.last("b").loadCalls, 0, "b waits for room");
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(a.done && !b.done, "a is held: b still waits");
  a.value.release();
  await settle();
  assert.ok(b.done && !b.error);
  assert.equal(s.loaded(), ["b"]);
});

// ---------------------------------------------------------------------------------------

// Accounting only: these fakes report VRAM as a GPU runner's estimate would (Estimate.vramBytes,
// node-llama-cpp's figure); no GPU is used here, and a real one is not tested by this file.
const vram = suite("the VRAM budget (accounting, against fakes that report VRAM)");

vram("models share the VRAM budget by their estimates: past it the least recently used idle one is evicted", async () => {
  const s = setup({ lifecycle: { vramBudgetBytes: 8 * GiB }, behaviour: { a: { vramBytes: 5 * GiB }, b: { vramBytes: 5 * GiB }, c: { vramBytes: 2 * GiB } } });
  await s.use("a");
  await s.clock.advance(10);
  await s.use("c");
  assert.equal(s.loaded(), ["a", "c"], "5 + 2 fit in 8");
  await s.clock.advance(10);
  await s.use("b");
  assert.equal(s.loaded(), ["b", "c"], "5 + 5 do not: a went");
  assert.equal(s.told().filter((t) => t.startsWith("evict")), ["evict:a>b"]);
  assert.equal(s.scheduler.loadedModels().map((m) => m.vramBytes).sort(), [2 * GiB, 5 * GiB]);
});

vram("a model whose VRAM estimate exceeds the VRAM budget is told so at once", async () => {
  const s = setup({ lifecycle: { vramBudgetBytes: 4 * GiB }, behaviour: { a: { vramBytes: 6 * GiB } } });
  const error = await rejection(s.scheduler.acquire("a"));
  assert.is(error.kind, "unavailable");
  assert.match(error.message, /needs about 6144 MiB of GPU memory; the VRAM budget is 4096 MiB/);
  assert.is(s.runners.last("a").loadCalls, 0);
});

vram("a busy model keeps its VRAM: the next load waits, then 503 past --load-wait", async () => {
  const s = setup({ lifecycle: { vramBudgetBytes: 8 * GiB, loadWaitMs: 2000 }, behaviour: { a: { vramBytes: 6 * GiB }, b: { vramBytes: 6 * GiB } } });
  const lease = await s.scheduler.acquire("a");
  const b = track(s.scheduler.acquire("b"));
  await s.clock.advance(2000);
  assert.is(b.error?.kind, "unavailable");
  assert.match(b.error.message, /VRAM budget 8192 MiB/);
  lease.release();
});

vram("without a VRAM budget VRAM is not counted; CPU models (0 VRAM) load under one as without it", async () => {
  const free = setup({ behaviour: { a: { vramBytes: 6 * GiB }, b: { vramBytes: 6 * GiB } } });
  await free.use("a");
  await free.use("b");
  assert.equal(free.loaded(), ["a", "b"]);
  const cpu = setup({ lifecycle: { vramBudgetBytes: 1 } });
  await cpu.use("a");
  await cpu.use("b");
  await cpu.use("c");
  assert.equal(cpu.loaded(), ["a", "b", "c"]);
});

// ---------------------------------------------------------------------------------------

const queue = suite("the load queue (--parallel and --queue)");

queue("requests waiting for a load are bounded by what the loaded model would take (--parallel + --queue); past it, refused at once as `overloaded`", async () => {
  const s = setup({ core: { parallel: 2, queue: 1 }, behaviour: { a: { hold: true } } });
  const waiting = Array.from({ length: 3 }, () => track(s.scheduler.acquire("a", { keepAliveMs: 1000 })));
  const refused = track(s.scheduler.acquire("a", { keepAliveMs: 0 }));
  await settle();
  assert.ok(refused.done);
  assert.is(refused.error.kind, "overloaded", "the kind a full sequence queue uses");
  assert.match(refused.error.message, /the requests waiting for it are at the limit \(3: --parallel and --queue\)/);
  assert.is(s.scheduler.loadedModels()[0].queued, 3);
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(waiting.every((w) => w.done && !w.error));
  // the refused request changed nothing: its keep_alive 0 was not taken
  waiting.forEach((w) => w.value.release());
  await s.clock.advance(999);
  assert.is(s.state("a"), "loaded");
});

queue("once loaded, the model takes more than the load queue's bound (its runner queues and refuses them)", async () => {
  const s = setup({ core: { parallel: 1, queue: 0 } });
  const leases = [];
  for (let i = 0; i < 5; i++) leases.push(await s.scheduler.acquire("a"));
  assert.is(s.scheduler.loadedModels()[0].running, 5);
  leases.forEach((l) => l.release());
});

queue("--queue 0: the request that starts the load is taken (a sequence will be free for it); one more is refused", async () => {
  const s = setup({ core: { parallel: 1, queue: 0 }, behaviour: { a: { hold: true } } });
  const first = track(s.scheduler.acquire("a"));
  const second = track(s.scheduler.acquire("a"));
  await settle();
  assert.is(second.error?.kind, "overloaded");
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(first.done && !first.error);
});

// ---------------------------------------------------------------------------------------

const crash = suite("runners that stop");

crash("a runner that stops while loaded: its model is unloaded, and the next request loads it in a new runner", async () => {
  const s = setup();
  await s.use("a");
  const first = s.runners.last("a");
  first.crash();
  assert.is(s.state("a"), "unloaded");
  assert.equal(s.told(), ["load:a", "unload:a:stopped"]);
  assert.is(s.clock.pending, 0, "its keep-alive timer went with it");
  const lease = await s.scheduler.acquire("a");
  assert.is.not(lease.runner, first);
  assert.is(s.runners.of("a").length, 2);
  assert.is(s.state("a"), "loaded");
  lease.release();
});

crash("requests that held the stopped runner give their leases back harmlessly; its room is free for others", async () => {
  const s = setup({ lifecycle: { maxLoaded: 1 } });
  const held = await s.scheduler.acquire("a");
  const b = track(s.scheduler.acquire("b"));
  await settle();
  assert.not.ok(b.done);
  s.runners.last("a").crash();
  await settle();
  assert.ok(b.done && !b.error, "the stopped model's room went to b");
  held.release();
  held.release();
  assert.equal(s.loaded(), ["b"]);
  const a = s.scheduler.loadedModels().find((m) => m.name === "a");
  assert.is(a, undefined);
});

crash("a pinned model whose runner stops is loaded again at once, in a new runner, with no request", async () => {
  const s = setup({ pins: ["a"] });
  await s.use("a");
  s.runners.last("a").crash();
  await settle();
  assert.is(s.runners.of("a").length, 2);
  assert.is(s.state("a"), "loaded");
  assert.equal(s.told(), ["load:a", "unload:a:stopped", "load:a"]);
});

crash("a pinned model that stops again soon after such a reload waits for its next request (no crash loop); later it is reloaded at once again", async () => {
  const s = setup({ pins: ["a"] });
  await s.use("a");
  s.runners.last("a").crash();
  await settle();
  await s.clock.advance(PINNED_RELOAD_BACKOFF_MS - 1);
  s.runners.last("a").crash();
  await settle();
  assert.is(s.state("a"), "unloaded");
  assert.is(s.runners.of("a").length, 2);
  await s.use("a");
  assert.is(s.runners.of("a").length, 3);
  await s.clock.advance(PINNED_RELOAD_BACKOFF_MS);
  s.runners.last("a").crash();
  await settle();
  assert.is(s.state("a"), "loaded");
  assert.is(s.runners.of("a").length, 4);
});

crash("a pinned model's failed reload is an event, and the next request tries again", async () => {
  const s = setup({ pins: ["a"] });
  await s.use("a");
  s.runners.models.a = { fail: new CoreError("unavailable", "cannot load model a: gone") };
  s.runners.last("a").crash();
  await settle();
  assert.equal(s.told(), ["load:a", "unload:a:stopped", "load_failed:a"]);
  s.runners.models.a = {};
  await s.use("a");
  assert.is(s.state("a"), "loaded");
});

// ---------------------------------------------------------------------------------------

const unload = suite("unload");

unload("unload waits for the requests running on the model, then frees it", async () => {
  const s = setup();
  const lease = await s.scheduler.acquire("a");
  const done = track(s.scheduler.unload("a"));
  await settle();
  assert.is(s.state("a"), "unloading");
  assert.not.ok(s.runners.last("a").closed);
  lease.release();
  await settle();
  assert.is(done.value, true);
  assert.ok(s.runners.last("a").closed);
  assert.equal(s.told(), ["load:a", "unload:a:request"]);
});

unload("a forced unload stops the runner at once, under its requests", async () => {
  const s = setup();
  const lease = await s.scheduler.acquire("a");
  assert.is(await s.scheduler.unload("a", { force: true }), true);
  assert.ok(s.runners.last("a").closed);
  assert.is(s.state("a"), "unloaded");
  assert.equal(s.told(), ["load:a", "unload:a:forced"]);
  lease.release();
});

unload("unloading a model that is not loaded says so, and does nothing", async () => {
  const s = setup();
  assert.is(await s.scheduler.unload("a"), false);
  assert.is(s.runners.made.length, 0);
  assert.equal(s.told(), []);
});

unload("a request during an unload waits for it, then loads the model again in a new runner", async () => {
  const s = setup();
  const lease = await s.scheduler.acquire("a");
  const done = track(s.scheduler.unload("a"));
  await settle();
  const next = track(s.scheduler.acquire("a"));
  await settle();
  assert.not.ok(next.done);
  lease.release();
  await settle();
  assert.ok(done.done && next.done && !next.error);
  assert.is(s.runners.of("a").length, 2);
  assert.is(next.value.runner, s.runners.last("a"));
  assert.equal(s.told(), ["load:a", "unload:a:request", "load:a"]);
});

unload("an unload during a load waits for the load, then unloads", async () => {
  const s = setup({ behaviour: { a: { hold: true } } });
  const load = track(s.scheduler.load("a"));
  await settle();
  const done = track(s.scheduler.unload("a"));
  await settle();
  assert.not.ok(done.done);
  s.runners.last("a").finishLoad();
  await settle();
  assert.ok(load.done && done.done);
  assert.is(s.state("a"), "unloaded");
  assert.equal(s.told(), ["load:a", "unload:a:request"]);
});

unload("load() loads now, then the model idles as after a request", async () => {
  const s = setup();
  const { loadMs } = await s.scheduler.load("a", 1000);
  assert.is(loadMs, 0);
  assert.is(s.state("a"), "loaded");
  await s.clock.advance(1000);
  assert.is(s.state("a"), "unloaded");
});

unload("close unloads everything (events say shutdown), closes the spare, and refuses later requests", async () => {
  let closedSpare = false;
  const spare = () => ({ want() {}, refill() {}, backend: async () => "fake/cpu", close() { closedSpare = true; } });
  const s = setup({ spare, lifecycle: { spareRunner: true } });
  await s.use("a");
  await s.use("b");
  await s.scheduler.close();
  assert.equal(s.loaded(), []);
  assert.ok(s.runners.made.every((r) => r.closed));
  assert.equal(s.told().filter((t) => t.startsWith("unload")).sort(), ["unload:a:shutdown", "unload:b:shutdown"]);
  assert.ok(closedSpare);
  const error = await rejection(s.scheduler.acquire("a"));
  assert.is(error.kind, "unavailable");
  assert.is(s.clock.pending, 0, "no timer left");
});

// ---------------------------------------------------------------------------------------

const health = suite("events, health, what ps shows");

health("events carry the time of the scheduler's clock", async () => {
  const s = setup();
  await s.clock.advance(5000);
  await s.use("a");
  assert.is(s.events[0].at, new Date(s.clock.epoch + 5000).toISOString());
});

health("check: a scheduler and runners that answer say nothing", async () => {
  const s = setup();
  await s.use("a");
  await s.use("b");
  assert.equal(await s.scheduler.check(1000), []);
});

health("check names a runner that does not answer in time, and a stuck decision queue, once the deadline passes on the clock", async () => {
  const s = setup();
  await s.use("a");
  await s.use("b");
  s.runners.last("b").hung = true;
  const late = track(s.scheduler.check(1000));
  await s.clock.advance(999);
  assert.not.ok(late.done);
  await s.clock.advance(1);
  assert.equal(late.value, ["b"]);
  void s.scheduler.decide(() => new Promise(() => undefined));
  const stuck = track(s.scheduler.check(1000));
  await s.clock.advance(1000);
  assert.equal(stuck.value, ["scheduler", "b"]);
});

health("loadedModels: state, memory, running and queued, pinned, expiry, load time", async () => {
  const s = setup({ pins: ["b"], behaviour: { a: { ramBytes: 2 * GiB, vramBytes: GiB }, c: { hold: true } } });
  const lease = await s.scheduler.acquire("a");
  await s.use("b");
  const c = track(s.scheduler.acquire("c"));
  await settle();
  const info = Object.fromEntries(s.scheduler.loadedModels().map((m) => [m.name, m]));
  assert.equal([info.a.state, info.a.memoryBytes, info.a.vramBytes, info.a.running, info.a.queued, info.a.pinned, info.a.expiresAt], ["loaded", 2 * GiB, GiB, 1, 0, false, null]);
  assert.equal([info.b.pinned, info.b.expiresAt, info.b.running], [true, null, 0]);
  assert.equal([info.c.state, info.c.running, info.c.queued], ["loading", 0, 1]);
  assert.is(info.a.loadedAt, s.clock.now());
  assert.is(info.a.contextSize, 1024);
  lease.release();
  s.runners.last("c").finishLoad();
  await settle();
  assert.ok(c.done);
});

// ---------------------------------------------------------------------------------------

const spares = suite("the spare runner");

/** A spare that records what the scheduler tells it, and what its quiet() said then; `log.quiet` asks it now. */
function recordingSpare(log) {
  return (quiet) => {
    log.quiet = quiet;
    return {
      want() { log.push(`want quiet=${quiet()}`); },
      refill() { log.push(`refill quiet=${quiet()}`); },
      backend: async () => { log.push("backend"); return "spare/cpu"; },
      close() { log.push("close"); },
    };
  };
}

spares("wanted from the first unload on, refilled after each load; not quiet (no spare may start) while a load or an unload is under way", async () => {
  const log = [];
  const s = setup({ spare: recordingSpare(log), lifecycle: { spareRunner: true }, behaviour: { b: { hold: true } } });
  await s.use("a");
  assert.equal(log, ["refill quiet=true"], "refilled after the load (it starts nothing until wanted)");
  const lease = await s.scheduler.acquire("a");
  const unloading = s.scheduler.unload("a");
  await settle();
  assert.is(log.quiet(), false, "an unload is under way");
  lease.release();
  await unloading;
  assert.equal(log.slice(1), ["want quiet=true"]);
  const b = track(s.scheduler.acquire("b"));
  await settle();
  assert.is(s.state("b"), "loading");
  assert.is(log.quiet(), false, "a load is under way");
  s.runners.last("b").finishLoad();
  await settle();
  assert.ok(b.done);
  assert.equal(log.slice(2), ["refill quiet=true"]);
  assert.is(log.quiet(), true);
});

spares("a spare is not made unless asked for (--spare-runner off: a command that runs once)", async () => {
  const log = [];
  const s = setup({ spare: recordingSpare(log) });
  await s.use("a");
  await s.scheduler.unload("a");
  assert.equal(log, []);
});

spares("the backend: from the spare runner when started with no model, else from the started model's runner, unloaded", async () => {
  const log = [];
  const none = setup({ started: false, spare: recordingSpare(log), lifecycle: { spareRunner: true } });
  assert.is(await none.scheduler.backend(), "spare/cpu");
  assert.equal(log, ["backend"]);
  assert.is(none.runners.made.length, 0);
  const one = setup();
  assert.is(await one.scheduler.backend(), "fake/cpu");
  assert.is(one.runners.made.length, 1);
  assert.is(one.runners.loads, 0, "asking the backend loads no model");
  assert.equal(one.scheduler.loadedModels(), []);
});

loads.run();
keep.run();
room.run();
vram.run();
queue.run();
crash.run();
unload.run();
health.run();
spares.run();
