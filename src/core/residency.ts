/**
 * Which models are in memory: the one module that loads, keeps, evicts and unloads them
 * (as Ollama's sched.go). A request leases its model: the first request for a model that
 * is not loaded starts its one load, and every request that comes meanwhile shares it; a
 * model is unloaded when it has been idle (no request running or waiting) for its
 * keep-alive, when room is needed for another (idle ones only, least recently used first),
 * or when asked. Pinned models are never evicted and never expire.
 *
 * What goes wrong elsewhere, and why it cannot here:
 * - two loads of one model: a model has one state and at most one load in flight;
 * - an expiry racing a new request: a lease clears the timer before anything awaits, and
 *   an unload under way is waited for, then the model is loaded again;
 * - a model evicted under a request: only models that no request holds or waits for are
 *   evicted, and only to make room that a load needs now;
 * - memory running out: a load is admitted only once its estimate fits the budget (and the
 *   count fits --max-loaded; and, with a VRAM budget, its VRAM estimate fits that too);
 *   past --load-wait the request is answered 503, never crashed; a model that could never
 *   fit is told so at once;
 * - a pile of requests behind a load: as many may wait for a model's load as its loaded
 *   runner would take (--parallel sequences and --queue waiting); more are refused at once,
 *   as the runner refuses them once loaded;
 * - a pinned model lost to a crash: its runner is replaced and the model loaded again at
 *   once (not again at once if it stopped soon after such a reload: then at its next request);
 * - a stuck residency behind a health check that says ok: every decision goes through one
 *   queue, and /health asks that queue (and every loaded runner) for an answer in time.
 */
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import type { ModelEntry, ModelRegistry } from "./registry.js";
import type { Clock, ClockTimer, ModelRunner, RunnerFactory, SparePolicy } from "./model-runner.js";
import { systemClock } from "./model-runner.js";
import type { Estimate } from "./runner-protocol.js";
import { RunnerModel, SpareRunner } from "./runner.js";
import { resolveModelSpec } from "./model-specs.js";
import { CoreError, type CoreOptions, type ModelSource } from "./types.js";

export interface LifecycleOptions {
  /** how long an idle model stays loaded: 0 unloads it at once, -1 never */
  keepAliveMs: number;
  /** the longest keep-alive a request may ask for (-1 asks for "never"); undefined: no cap */
  maxKeepAliveMs?: number;
  /** models loaded at once; 0: no limit but memory */
  maxLoaded: number;
  /** RAM that loaded models may take, by node-llama-cpp's estimates */
  memoryBudgetBytes: number;
  /**
   * VRAM that loaded models may take, by node-llama-cpp's estimates (Estimate.vramBytes);
   * undefined: VRAM is not counted (on CPU every model's estimate is 0 anyway)
   */
  vramBudgetBytes?: number;
  /** how long a request waits for room (idle models to evict) before 503 */
  loadWaitMs: number;
  /** where a configured remote model is downloaded to */
  modelsDir: string;
  /** keep a runner started ahead of the next load (SpareRunner): for a daemon, whose models come and go */
  spareRunner?: boolean;
}

type State = "unloaded" | "loading" | "loaded" | "unloading";

/** What the residency takes from outside: by default runner processes, SpareRunner and the real clock. */
export interface ResidencyDeps<R extends ModelRunner = RunnerModel> {
  /** makes each model's runner; default: a RunnerModel (taking the spare runner's process, if one is up) */
  runners?: RunnerFactory<R>;
  /** default: the system's */
  clock?: Clock;
  /** the spare runner, when LifecycleOptions.spareRunner; `quiet`: whether it may start now. Default: SpareRunner */
  spare?: (quiet: () => boolean) => SparePolicy;
}

/** A pinned model whose runner stops again this soon after being reloaded at once waits for its next request. */
export const PINNED_RELOAD_BACKOFF_MS = 60_000;

export type LifecycleEvent =
  | { type: "load"; model: string; load_ms: number }
  | { type: "load_failed"; model: string; error: string }
  | { type: "unload"; model: string; reason: "keep_alive" | "request" | "forced" | "shutdown" | "stopped" }
  | { type: "evict"; model: string; for: string };

/** One model's residency: its state, leases, keep-alive, estimate and runner. */
class Residency<R extends ModelRunner> {
  state: State = "unloaded";
  runner?: R;
  /** leases handed out and not given back: requests running on the model */
  active = 0;
  /** requests waiting for the model to load */
  waiting = 0;
  /** monotonic ms */
  lastUsed = 0;
  keepAliveMs: number;
  expiry?: ClockTimer;
  expiresAt?: number;
  estimate?: Estimate;
  /** its memory counts against the budget: from admission until it is unloaded */
  admitted = false;
  /** the one load in flight */
  ready?: Promise<R>;
  /** the one unload in flight */
  gone?: Promise<void>;
  loadedAt?: number;
  loadMs?: number;
  contextSize?: number;
  /** measured at the first load, given to the next ones */
  threads?: number;
  /** when it was last loaded again at once after its runner stopped (a pinned model): monotonic ms */
  reloadedAt?: number;

  constructor(public entry: ModelEntry, keepAliveMs: number) {
    this.keepAliveMs = keepAliveMs;
  }

  get name(): string { return this.entry.name; }
  get idle(): boolean { return this.active === 0 && this.waiting === 0; }
}

/** A model held for one request; release() once the request is over (twice is harmless). */
export interface ModelLease<R extends ModelRunner = RunnerModel> {
  runner: R;
  /** how long this request waited for the model to load (0 when it was loaded) */
  loadMs: number;
  release(): void;
}

/** What `mlxs ps` shows of a loaded model. */
export interface LoadedModelInfo {
  name: string;
  state: State;
  /** the budget's share: node-llama-cpp's estimate */
  memoryBytes: number;
  /** the VRAM budget's share: node-llama-cpp's estimate (0 on CPU) */
  vramBytes: number;
  /** the runner's resident memory now (Linux), when known */
  rssBytes?: number;
  /** the runner's process id, for top and ps */
  pid?: number;
  contextSize?: number;
  threads?: number;
  running: number;
  queued: number;
  pinned: boolean;
  /** when it will be unloaded if it stays idle: epoch ms; null: never, or not idle */
  expiresAt: number | null;
  loadedAt?: number;
  loadMs?: number;
}

/**
 * `R`: the runners' type (RunnerModel in a daemon; a fake in tests), which leases hand out.
 */
export class ModelResidency<R extends ModelRunner = RunnerModel> {
  private readonly residents = new Map<string, Residency<R>>();
  /** lifecycle events, for `mlxs ps -f` */
  readonly events = new EventEmitter();
  /** the one queue of decisions (see above) */
  private decisions: Promise<unknown> = Promise.resolve();
  /** wakes loads that wait for room whenever a model is released or unloaded */
  private roomChanged?: { promise: Promise<void>; resolve: () => void };
  private closed = false;
  private readonly spare?: SparePolicy;
  private readonly clock: Clock;
  private readonly newRunner: RunnerFactory<R>;

  constructor(private readonly registry: ModelRegistry, private readonly core: CoreOptions, private readonly options: LifecycleOptions, deps: ResidencyDeps<R> = {}) {
    this.events.setMaxListeners(0);
    this.clock = deps.clock ?? systemClock;
    if (options.spareRunner) {
      const quiet = () => [...this.residents.values()].every((s) => s.state === "loaded" || s.state === "unloaded");
      this.spare = deps.spare ? deps.spare(quiet) : new SpareRunner(core, quiet);
    }
    const spare = this.spare;
    this.newRunner = deps.runners ?? ((source, onStop) => {
      // typed as the interface: the compiler checks that RunnerModel implements it
      const runner: ModelRunner = new RunnerModel(source, core, onStop, spare instanceof SpareRunner ? spare.take() : undefined);
      // without a factory R is RunnerModel (the class's default), which TypeScript cannot see here
      return runner as R;
    });
  }

  /**
   * The model, loaded (loading it, or waiting for its load, if need be), held until
   * release(). `keepAliveMs`: the request's own keep-alive for the model (Ollama's field).
   */
  async acquire(name: string, { keepAliveMs, signal }: { keepAliveMs?: number; signal?: AbortSignal } = {}): Promise<ModelLease<R>> {
    const resident = this.residencyOf(name);
    const loaded = resident.state === "loaded" && resident.runner && !resident.gone;
    // as many may wait for the load as the loaded runner would take: a refusal now, as it would refuse them then
    const room = this.core.parallel + this.core.queue;
    if (!loaded && resident.waiting >= room) {
      throw new CoreError("overloaded", `model ${resident.name} is loading and the requests waiting for it are at the limit (${room}: --parallel and --queue)`);
    }
    // held before anything awaits: no expiry or eviction can take it from here on
    this.clearExpiry(resident);
    if (keepAliveMs !== undefined) resident.keepAliveMs = this.capped(keepAliveMs);
    if (loaded) {
      resident.active++;
      return this.lease(resident, resident.runner!, 0);
    }
    resident.waiting++;
    const started = this.clock.monotonic();
    let runner: R;
    try {
      runner = await abortable(this.ready(resident), signal);
    } catch (error) {
      resident.waiting--;
      this.released(resident);
      throw error;
    }
    resident.waiting--;
    resident.active++;
    return this.lease(resident, runner, this.clock.monotonic() - started);
  }

  /** Loads a model now (POST /v1/models/{id}/load); it then idles as after a request. */
  async load(name: string, keepAliveMs?: number): Promise<{ loadMs: number }> {
    const lease = await this.acquire(name, { keepAliveMs });
    lease.release();
    return { loadMs: lease.loadMs };
  }

  /**
   * Unloads a model. It waits for the requests running on it, unless `force`, which
   * cancels them. Requests that come meanwhile wait, and load it again.
   */
  async unload(name: string, { force = false } = {}): Promise<boolean> {
    const resident = this.residencyOf(name);
    if (resident.state === "unloaded" && !resident.ready) return false;
    await this.unloadResident(resident, force ? "forced" : "request", force);
    return true;
  }

  /** The models in memory (or on their way in or out). */
  loadedModels(): LoadedModelInfo[] {
    return [...this.residents.values()].filter((s) => s.state !== "unloaded").map((s) => ({
      name: s.name,
      state: s.state,
      memoryBytes: s.estimate?.ramBytes ?? 0,
      vramBytes: s.estimate?.vramBytes ?? 0,
      rssBytes: rssOf(s.runner?.pid),
      pid: s.runner?.pid,
      contextSize: s.contextSize,
      threads: s.threads,
      // leases out: generating, or waiting in the runner for a sequence
      running: s.active - (s.runner?.queue().waiting ?? 0),
      queued: s.waiting + (s.runner?.queue().waiting ?? 0),
      pinned: s.entry.pinned,
      expiresAt: s.expiresAt ?? null,
      loadedAt: s.loadedAt,
      loadMs: s.loadMs,
    }));
  }

  /** Milliseconds since the model's last request ended. */
  idleMs(name: string): number {
    const resident = this.residents.get(name);
    return resident ? Math.round(this.clock.monotonic() - resident.lastUsed) : 0;
  }

  /**
   * Health: the decision queue answers, and so does every loaded model's runner, each
   * within `timeoutMs`. Resolves with the names that did not answer ("scheduler" for its queue of decisions: the name /health reports).
   */
  async check(timeoutMs: number): Promise<string[]> {
    const late = (what: string, work: Promise<unknown>) => this.withDeadline(work, timeoutMs).then(() => undefined, () => what);
    const checks = [late("scheduler", this.decide(() => true))];
    for (const resident of this.residents.values()) if (resident.state === "loaded" && resident.runner) checks.push(late(resident.name, resident.runner.ping(timeoutMs)));
    return (await Promise.all(checks)).filter((name): name is string => name !== undefined);
  }

  /**
   * Puts a decision on the queue; resolves with its result. Decisions are short: one that
   * must wait returns what to wait for, wrapped, and the queue goes on meanwhile. A
   * decision that never ends is a stuck residency: what /health finds.
   */
  decide<T>(decision: () => T | Promise<T>): Promise<T> {
    const result = this.decisions.then(decision);
    this.decisions = result.catch(() => undefined);
    return result;
  }

  /** The backend, from the runner of the model started with (started, not loaded), else from the spare runner. */
  backend(): Promise<string> {
    const name = this.registry.startedName;
    // started with no model: llama.cpp starts in the spare runner, which the first load takes
    if (name === undefined && this.spare) return this.spare.backend();
    const resident = this.residencyOf(name ?? this.registry.defaultName);
    resident.runner ??= this.runnerFor(resident, resident.entry as ModelSource);
    return resident.runner.backend();
  }

  /** Unloads everything; what is still running is cancelled. */
  async close(): Promise<void> {
    this.closed = true;
    this.spare?.close();
    await Promise.all([...this.residents.values()].map(async (resident) => {
      this.clearExpiry(resident);
      await resident.ready?.catch(() => undefined);
      await this.unloadResident(resident, "shutdown", true);
      await resident.runner?.close();
    }));
  }

  /** The resident's model, loaded: its one load, shared by every request that waits for it. */
  private ready(resident: Residency<R>): Promise<R> {
    return resident.ready ??= this.loadResident(resident).finally(() => {
      resident.ready = undefined;
      // the load took the spare runner, if there was one: the next load gets a new one
      this.spare?.refill();
    });
  }

  private residencyOf(name: string): Residency<R> {
    let resident = this.residents.get(name);
    const entry = this.registry.get(name);
    if (!entry) throw new CoreError("not_found", "the model is not served here", { param: "model" });
    if (!resident) {
      resident = new Residency(entry, entry.pinned ? -1 : this.options.keepAliveMs);
      this.residents.set(name, resident);
    }
    resident.entry = entry;
    return resident;
  }

  private lease(resident: Residency<R>, runner: R, loadMs: number): ModelLease<R> {
    let held = true;
    return {
      runner, loadMs,
      release: () => {
        if (!held) return;
        held = false;
        resident.active--;
        this.released(resident);
      },
    };
  }

  /** A request is over (or gave up waiting): the model may now be idle, and room may have come. */
  private released(resident: Residency<R>): void {
    resident.lastUsed = this.clock.monotonic();
    if (resident.idle && resident.state === "loaded") this.expireLater(resident);
    this.wakeRoomWaiters();
  }

  private expireLater(resident: Residency<R>): void {
    this.clearExpiry(resident);
    const ms = resident.entry.pinned ? -1 : resident.keepAliveMs;
    if (ms < 0 || this.closed) return;
    if (ms === 0) {
      void this.unloadResident(resident, "keep_alive");
      return;
    }
    resident.expiresAt = this.clock.now() + ms;
    resident.expiry = this.clock.setTimeout(() => {
      resident.expiry = resident.expiresAt = undefined;
      if (resident.idle && resident.state === "loaded") void this.unloadResident(resident, "keep_alive");
    }, ms, { unref: true });
  }

  private clearExpiry(resident: Residency<R>): void {
    if (resident.expiry !== undefined) this.clock.clearTimeout(resident.expiry);
    resident.expiry = resident.expiresAt = undefined;
  }

  /** The one load of a resident: an unload under way first, then room, then the runner's load. */
  private async loadResident(resident: Residency<R>): Promise<R> {
    while (resident.gone) await resident.gone;
    if (resident.state === "loaded" && resident.runner) return resident.runner;
    if (this.closed) throw new CoreError("unavailable", "the server is shutting down");
    resident.state = "loading";
    const started = this.clock.monotonic();
    try {
      const source = await this.sourceOf(resident);
      resident.runner ??= this.runnerFor(resident, source);
      resident.estimate ??= await resident.runner.estimate();
      await this.admit(resident);
      const result = await resident.runner.load(resident.threads ?? this.core.threads);
      resident.threads = result.threads;
      resident.contextSize = result.contextSize;
      resident.state = "loaded";
      resident.loadedAt = this.clock.now();
      resident.lastUsed = this.clock.monotonic();
      resident.loadMs = resident.lastUsed - started;
      this.emit({ type: "load", model: resident.name, load_ms: round(resident.loadMs) });
      return resident.runner;
    } catch (error) {
      resident.state = "unloaded";
      resident.admitted = false;
      const runner = resident.runner;
      resident.runner = undefined;
      await runner?.close();
      const failure = error instanceof CoreError ? error : new CoreError("unavailable", `cannot load model ${resident.name}`, { cause: error });
      this.emit({ type: "load_failed", model: resident.name, error: failure.message });
      this.wakeRoomWaiters();
      throw failure.kind === "internal" ? new CoreError("unavailable", `cannot load model ${resident.name}: ${failure.message}`) : failure;
    }
  }

  /**
   * Waits until the resident's estimate fits the budgets (RAM, and VRAM when it has one) and
   * the count, evicting idle models (least recently used first) to make room.
   */
  private async admit(resident: Residency<R>): Promise<void> {
    const need = resident.estimate!.ramBytes;
    if (need > this.options.memoryBudgetBytes) {
      throw new CoreError("unavailable", `model ${resident.name} needs about ${mib(need)} of memory; the budget is ${mib(this.options.memoryBudgetBytes)} (--memory-budget)`);
    }
    const vramBudget = this.options.vramBudgetBytes;
    const needVram = vramBudget === undefined ? 0 : vramOf(resident);
    if (vramBudget !== undefined && needVram > vramBudget) {
      throw new CoreError("unavailable", `model ${resident.name} needs about ${mib(needVram)} of GPU memory; the VRAM budget is ${mib(vramBudget)}`);
    }
    const deadline = this.clock.monotonic() + this.options.loadWaitMs;
    for (;;) {
      const next = await this.decide((): { wait: Promise<void> } | undefined => {
        const admitted = [...this.residents.values()].filter((s) => s.admitted && s !== resident);
        const used = admitted.reduce((sum, s) => sum + (s.estimate?.ramBytes ?? 0), 0);
        const usedVram = vramBudget === undefined ? 0 : admitted.reduce((sum, s) => sum + vramOf(s), 0);
        const countFits = this.options.maxLoaded <= 0 || admitted.length < this.options.maxLoaded;
        const vramFits = vramBudget === undefined || usedVram + needVram <= vramBudget;
        if (countFits && used + need <= this.options.memoryBudgetBytes && vramFits) {
          resident.admitted = true;
          return undefined;
        }
        const victim = admitted
          .filter((s) => s.state === "loaded" && s.idle && !s.entry.pinned && !s.gone)
          .sort((a, b) => a.lastUsed - b.lastUsed)[0];
        if (victim) {
          this.emit({ type: "evict", model: victim.name, for: resident.name });
          return { wait: this.unloadResident(victim, undefined) };
        }
        return { wait: this.roomWaiter() };
      });
      if (next === undefined) return;
      const left = deadline - this.clock.monotonic();
      if (left <= 0 || !(await this.withDeadline(next.wait, left).then(() => true, () => false))) {
        const vram = vramBudget === undefined ? "" : `, VRAM budget ${mib(vramBudget)}`;
        throw new CoreError("unavailable", `no room to load model ${resident.name}: the loaded models are busy (--max-loaded ${this.options.maxLoaded || "unlimited"}, --memory-budget ${mib(this.options.memoryBudgetBytes)}${vram})`, { retryAfterS: 5 });
      }
    }
  }

  /** Unloads a resident: after its load, after the requests running on it (unless `force`). `reason` undefined: an eviction (its event is already out). */
  private unloadResident(resident: Residency<R>, reason: Extract<LifecycleEvent, { type: "unload" }>["reason"] | undefined, force = false): Promise<void> {
    if (resident.gone) return resident.gone;
    if (resident.state === "unloaded") return Promise.resolve();
    this.clearExpiry(resident);
    resident.gone = (async () => {
      await resident.ready?.catch(() => undefined);
      if (resident.state !== "loaded") return;
      resident.state = "unloading";
      if (!force) while (resident.active > 0) await this.roomWaiter();
      const runner = resident.runner;
      resident.runner = undefined;
      await runner?.close();
      this.markUnloaded(resident);
      if (reason) this.emit({ type: "unload", model: resident.name, reason });
    })().finally(() => {
      resident.gone = undefined;
      this.wakeRoomWaiters();
      // models come and go here: the next load should find a runner ready
      this.spare?.want();
    });
    return resident.gone;
  }

  private markUnloaded(resident: Residency<R>): void {
    resident.state = "unloaded";
    resident.admitted = false;
    resident.loadedAt = resident.loadMs = undefined;
    this.clearExpiry(resident);
  }

  private runnerFor(resident: Residency<R>, source: ModelSource): R {
    const runner: R = this.newRunner(source, () => {
      // a runner that stopped by itself (a crash, or killed as hung): its model is no longer loaded
      if (resident.runner !== runner || resident.gone) return;
      resident.runner = undefined;
      if (resident.state === "loaded") {
        this.markUnloaded(resident);
        this.emit({ type: "unload", model: resident.name, reason: "stopped" });
        this.wakeRoomWaiters();
        if (resident.entry.pinned) this.reloadPinned(resident);
      }
    });
    return runner;
  }

  /**
   * A pinned model whose runner stopped is loaded again at once, in a new runner: pinned
   * means always there. Not when it stopped soon after such a reload (a model that crashes
   * its runner would be reloaded without end): then its next request loads it.
   */
  private reloadPinned(resident: Residency<R>): void {
    const now = this.clock.monotonic();
    if (this.closed || (resident.reloadedAt !== undefined && now - resident.reloadedAt < PINNED_RELOAD_BACKOFF_MS)) return;
    resident.reloadedAt = now;
    // a failure is told as a load_failed event; the next request tries again
    this.ready(resident).catch(() => undefined);
  }

  /** The model's file: a configured remote model is downloaded on its first load. */
  private async sourceOf(resident: Residency<R>): Promise<ModelSource> {
    const { entry } = resident;
    if (entry.path) return { name: entry.name, path: entry.path };
    const source = await resolveModelSpec(entry.spec!, { modelsDir: this.options.modelsDir }).catch((error: unknown) => {
      throw new CoreError("unavailable", `cannot get model ${entry.name}: ${(error as Error).message}`);
    });
    this.registry.resolved(entry.name, source.path);
    return { name: entry.name, path: source.path };
  }

  private capped(keepAliveMs: number): number {
    const max = this.options.maxKeepAliveMs;
    if (max === undefined) return keepAliveMs;
    return keepAliveMs < 0 ? max : Math.min(keepAliveMs, max);
  }

  private roomWaiter(): Promise<void> {
    if (!this.roomChanged) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => { resolve = r; });
      this.roomChanged = { promise, resolve };
    }
    return this.roomChanged.promise;
  }

  private wakeRoomWaiters(): void {
    const waiters = this.roomChanged;
    this.roomChanged = undefined;
    waiters?.resolve();
  }

  private emit(event: LifecycleEvent): void {
    this.events.emit("event", { ...event, at: new Date(this.clock.now()).toISOString() });
  }

  /** The promise, or a rejection once `ms` have passed on the residency's clock. */
  private withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
    let timer: ClockTimer | undefined;
    const late = new Promise<never>((_, reject) => { timer = this.clock.setTimeout(() => reject(new Error("deadline")), ms); });
    return Promise.race([promise, late]).finally(() => this.clock.clearTimeout(timer));
  }
}

/** The promise, or a rejection when the signal aborts first. */
function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new CoreError("cancelled", "the request was cancelled"));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new CoreError("cancelled", "the request was cancelled"));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function rssOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}

/** A model's share of the VRAM budget: its estimate's (a runner that does not report VRAM counts 0). */
const vramOf = (resident: { estimate?: Estimate }) => resident.estimate?.vramBytes ?? 0;
const mib = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MiB`;
const round = (ms: number) => Math.round(ms * 100) / 100;
