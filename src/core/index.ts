/**
 * The inference core: the models a daemon can serve (registry.ts), which of them are in
 * memory (residency.ts, each loaded model in a runner process of its own), and the things
 * a door can ask of them. It knows nothing of HTTP, SQL or terminals.
 */
import { ModelRegistry } from "./registry.js";
import { ModelResidency, type LifecycleEvent, type LifecycleOptions, type LoadedModelInfo, type ModelLease } from "./residency.js";
import type { RunnerModel } from "./runner.js";
import { checkChatRequest, checkCompletionRequest, checkCountRequest, checkEmbeddingRequest } from "./request-checks.js";
import {
  type ChatRequest, type CompletionRequest, type CoreOptions, type EmbeddingRequest, type EmbeddingResult, type GenerationEvent,
  type KeepAlive, type ModelInfo, type ModelSource,
} from "./types.js";

/** No keep-alive expiry, no limit: a command that runs once, a test. */
const KEEP_EVERYTHING: LifecycleOptions = { keepAliveMs: -1, maxLoaded: 0, memoryBudgetBytes: Number.MAX_SAFE_INTEGER, loadWaitMs: 30_000, modelsDir: "" };

export class InferenceCore {
  private readonly residency: ModelResidency;

  private readonly registry: ModelRegistry;

  /**
   * `models`: a registry, or just the models to serve (the first is the default); then,
   * unless `lifecycle` says otherwise, they stay loaded once loaded, with no limit.
   */
  constructor(models: ModelRegistry | ModelSource[], readonly options: CoreOptions, lifecycle: Partial<LifecycleOptions> = {}) {
    this.registry = Array.isArray(models) ? new ModelRegistry({ started: models }) : models;
    this.residency = new ModelResidency(this.registry, options, { ...KEEP_EVERYTHING, ...lifecycle });
  }

  /** Every model that can be served, loaded or not. */
  models(): ModelInfo[] {
    const loaded = new Map(this.residency.loadedModels().map((m) => [m.name, m]));
    return this.registry.list().map((entry) => {
      const state = loaded.get(entry.name);
      const base = { name: entry.name, loaded: state?.state === "loaded", sizeBytes: entry.sizeBytes, pinned: entry.pinned };
      if (state?.state !== "loaded") return base;
      const idle = state.running === 0 && state.queued === 0;
      return { ...base, contextSize: state.contextSize, threads: state.threads, busy: state.running, waiting: state.queued, idleMs: idle ? this.residency.idleMs(entry.name) : 0 };
    });
  }

  /** Whether `name` can be served (the models directory is read again when it is not known). */
  has(name: string): boolean { return this.registry.has(name); }

  /** The model a request without a `model` gets. */
  get defaultModel(): string { return this.registry.defaultName; }

  /** The models in memory, for `mlxs ps`. */
  loadedModels(): LoadedModelInfo[] { return this.residency.loadedModels(); }

  /** Load, unload and evict events, as they happen. */
  onEvent(listener: (event: LifecycleEvent & { at: string }) => void): () => void {
    this.residency.events.on("event", listener);
    return () => this.residency.events.off("event", listener);
  }

  /** The names of what does not answer in time: "scheduler", or a loaded model's runner. */
  check(timeoutMs: number): Promise<string[]> { return this.residency.check(timeoutMs); }

  /** e.g. `llama.cpp/cpu`; starts llama.cpp (in the default model's runner) if it is not running yet */
  backend(): Promise<string> { return this.residency.backend(); }

  /** Loads a model now rather than on its first request. */
  load(name = this.defaultModel, keepAliveMs?: number): Promise<{ loadMs: number }> { return this.residency.load(name, keepAliveMs); }

  /**
   * Loads what the daemon was started with and the pinned models, before the first request,
   * as many as --max-loaded allows (the rest load on demand). Returns their names.
   */
  async preload(maxLoaded: number): Promise<string[]> {
    const entries = this.registry.list();
    const wanted = [...entries.filter((e) => e.pinned), ...entries.filter((e) => e.origin === "started" && !e.pinned)];
    const names = wanted.slice(0, maxLoaded > 0 ? maxLoaded : wanted.length).map((e) => e.name);
    for (const name of names) await this.load(name);
    return names;
  }

  /** Unloads a model: after its running requests, or at once cancelling them (`force`). False when it was not loaded. */
  unload(name: string, options: { force?: boolean } = {}): Promise<boolean> { return this.residency.unload(name, options); }

  /*
   * Each request is checked, as far as it can be without its model (request-checks.ts),
   * before a model is acquired: a bad request never loads, evicts or waits for one.
   */

  async *chat(request: ChatRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    checkChatRequest(request);
    yield* this.generate(request, signal, (runner) => runner.chat(request, signal));
  }

  async *complete(request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    checkCompletionRequest(request);
    yield* this.generate(request, signal, (runner) => runner.complete(request, signal));
  }

  /** Tokens per sequence of a model (loading it if needed). */
  async contextSize(name?: string): Promise<number> {
    return this.leased({ model: name }, undefined, async (runner) => (await runner.load()).contextSize);
  }

  /** The prompt tokens a chat request would use, counted exactly as generation counts them. */
  async countTokens(request: ChatRequest): Promise<number> {
    checkCountRequest(request);
    return this.leased(request, undefined, (runner) => runner.countTokens(request));
  }

  async embed(request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult> {
    checkEmbeddingRequest(request);
    return this.leased(request, signal, async (runner, lease) => ({ ...await runner.embed(request, signal), loadMs: lease.loadMs }));
  }

  async close(): Promise<void> {
    await this.residency.close();
  }

  /** A generation on the leased model; its first event and its timings say how long the load took. */
  private async *generate(request: { model?: string } & KeepAlive, signal: AbortSignal | undefined, run: (runner: RunnerModel) => AsyncGenerator<GenerationEvent>): AsyncGenerator<GenerationEvent> {
    const lease = await this.lease(request, signal);
    try {
      for await (const event of run(lease.runner)) {
        if (event.type === "start") yield { ...event, loadMs: lease.loadMs };
        else if (event.type === "done") yield { ...event, timings: { ...event.timings, loadMs: lease.loadMs, queueMs: event.timings.queueMs + lease.loadMs } };
        else yield event;
      }
    } finally {
      lease.release();
    }
  }

  private async leased<T>(request: { model?: string } & KeepAlive, signal: AbortSignal | undefined, work: (runner: RunnerModel, lease: ModelLease) => Promise<T>): Promise<T> {
    const lease = await this.lease(request, signal);
    try {
      return await work(lease.runner, lease);
    } finally {
      lease.release();
    }
  }

  private lease(request: { model?: string } & KeepAlive, signal?: AbortSignal): Promise<ModelLease> {
    return this.residency.acquire(request.model ?? this.defaultModel, { keepAliveMs: request.keepAliveMs, signal });
  }
}

export { ModelRegistry, type LifecycleOptions, type LifecycleEvent, type LoadedModelInfo };
export * from "./types.js";
