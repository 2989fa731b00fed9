/**
 * The inference core: one engine, the served models, and the three things a door can ask
 * for. It knows nothing of HTTP, SQL or terminals.
 */
import { chat, complete, countChatTokens, toChatHistory } from "./generate.js";
import { embed } from "./embed.js";
import { Engine } from "./engine.js";
import { ModelPool } from "./pool.js";
import type {
  ChatRequest, CompletionRequest, CoreOptions, EmbeddingRequest, EmbeddingResult, GenerationEvent, ModelInfo, ModelSource,
} from "./types.js";

export class InferenceCore {
  private readonly engine: Engine;
  private readonly pool: ModelPool;

  constructor(models: ModelSource[], readonly options: CoreOptions) {
    this.engine = new Engine(options.gpu, options.threads);
    this.pool = new ModelPool(this.engine, models, options);
  }

  models(): ModelInfo[] { return this.pool.list(); }

  /** e.g. `llama.cpp/cpu`; starts llama.cpp if it is not running yet */
  backend(): Promise<string> { return this.engine.backend(); }

  /** Loads a model now rather than on its first request. */
  async load(name?: string): Promise<void> { await this.pool.get(name); }

  async *chat(request: ChatRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    yield* chat(await this.pool.get(request.model), request, signal);
  }

  async *complete(request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    yield* complete(await this.pool.get(request.model), request, signal);
  }

  /** Tokens per sequence of a model (loading it if needed). */
  async contextSize(name?: string): Promise<number> {
    return (await this.pool.get(name)).contextSize;
  }

  /** The prompt tokens a chat request would use, counted exactly as generation counts them. */
  async countTokens(request: ChatRequest): Promise<number> {
    return countChatTokens(await this.pool.get(request.model), toChatHistory(request.messages));
  }

  async embed(request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult> {
    return embed(await this.pool.get(request.model), request, signal);
  }

  async close(): Promise<void> {
    await this.pool.dispose();
    await this.engine.dispose();
  }
}

export * from "./types.js";
