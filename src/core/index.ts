/**
 * The inference core: the served models, each in a runner process of its own, and the
 * things a door can ask of them. It knows nothing of HTTP, SQL or terminals.
 */
import { RunnerModel } from "./runner.js";
import {
  CoreError, type ChatRequest, type CompletionRequest, type CoreOptions, type EmbeddingRequest, type EmbeddingResult, type GenerationEvent,
  type ModelInfo, type ModelSource,
} from "./types.js";

export class InferenceCore {
  private readonly runners: RunnerModel[];

  constructor(models: ModelSource[], readonly options: CoreOptions) {
    if (models.length === 0) throw new CoreError("invalid_request", "no model to serve");
    this.runners = models.map((source) => new RunnerModel(source, options));
  }

  models(): ModelInfo[] { return this.runners.map((runner) => runner.info()); }

  /** e.g. `llama.cpp/cpu`; starts llama.cpp (in the first model's runner) if it is not running yet */
  backend(): Promise<string> { return this.runners[0]!.backend(); }

  /** Loads a model now rather than on its first request. */
  async load(name?: string): Promise<void> { await this.runner(name).load(); }

  async *chat(request: ChatRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    yield* this.runner(request.model).chat(request, signal);
  }

  async *complete(request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    yield* this.runner(request.model).complete(request, signal);
  }

  /** Tokens per sequence of a model (loading it if needed). */
  async contextSize(name?: string): Promise<number> { return (await this.runner(name).load()).contextSize; }

  /** The prompt tokens a chat request would use, counted exactly as generation counts them. */
  async countTokens(request: ChatRequest): Promise<number> { return this.runner(request.model).countTokens(request); }

  async embed(request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult> {
    return this.runner(request.model).embed(request, signal);
  }

  async close(): Promise<void> {
    await Promise.all(this.runners.map((runner) => runner.close()));
  }

  /** The named model, or the first one when no name is given. */
  private runner(name?: string): RunnerModel {
    const runner = name === undefined ? this.runners[0] : this.runners.find((r) => r.name === name);
    if (!runner) throw new CoreError("not_found", "the model is not served here", { param: "model" });
    return runner;
  }
}

export * from "./types.js";
