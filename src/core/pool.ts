/**
 * The served models, each loaded once on first use (concurrent first requests share one
 * load), with its context of `parallel` sequences behind a SlotPool, and an embedding
 * context created when the first embedding is asked for.
 */
import type { ChatWrapper, LlamaContextSequence, LlamaEmbeddingContext, LlamaModel } from "node-llama-cpp";
import { Engine, firstLine } from "./engine.js";
import { SlotPool } from "./scheduler.js";
import { CoreError, type CoreOptions, type ModelInfo, type ModelSource } from "./types.js";

export interface LoadedModel {
  readonly name: string;
  readonly model: LlamaModel;
  /** tokens per sequence */
  readonly contextSize: number;
  readonly sequences: SlotPool<LlamaContextSequence>;
  /** the one chat template that both generation and token counting use */
  readonly chatWrapper: ChatWrapper;
  embeddings(): Promise<SlotPool<LlamaEmbeddingContext>>;
}

export class ModelPool {
  private readonly loading = new Map<string, Promise<LoadedModel>>();
  /** the models whose load has finished */
  private readonly ready = new Map<string, LoadedModel>();

  constructor(
    private readonly engine: Engine,
    private readonly sources: ModelSource[],
    private readonly options: CoreOptions,
  ) {
    if (sources.length === 0) throw new CoreError("invalid_request", "no model to serve");
  }

  list(): ModelInfo[] {
    return this.sources.map((s) => {
      const model = this.ready.get(s.name);
      return { name: s.name, path: s.path, loaded: model !== undefined, ...(model ? { busy: model.sequences.busy, waiting: model.sequences.waiting } : {}) };
    });
  }

  /** The named model, or the first one when no name is given. */
  get(name?: string): Promise<LoadedModel> {
    const source = name === undefined ? this.sources[0]! : this.sources.find((s) => s.name === name);
    if (!source) return Promise.reject(new CoreError("not_found", "the model is not served here", { param: "model" }));
    let loaded = this.loading.get(source.name);
    if (!loaded) {
      loaded = this.load(source);
      this.loading.set(source.name, loaded);
      loaded.then((model) => this.ready.set(source.name, model), () => this.loading.delete(source.name));
    }
    return loaded;
  }

  private async load(source: ModelSource): Promise<LoadedModel> {
    const llama = await this.engine.get();
    const { resolveChatWrapper } = await import("node-llama-cpp");
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: source.path, gpuLayers: this.options.gpu === "cpu" ? 0 : "auto" });
    } catch (error) {
      throw new CoreError("internal", `cannot load model ${source.path}: ${firstLine(error)}`, { cause: error });
    }
    const contextSize = Math.min(this.options.ctxSize, model.trainContextSize);
    const { threads, parallel, queue } = this.options;
    const context = await model.createContext({ contextSize, sequences: parallel, threads }).catch((error: unknown) => {
      void model.dispose();
      throw new CoreError("internal", `cannot create a context of ${contextSize} tokens x ${parallel} sequences: ${firstLine(error)}`, { cause: error });
    });
    const sequences = new SlotPool(Array.from({ length: parallel }, () => context.getSequence()), queue);
    let embeddings: Promise<SlotPool<LlamaEmbeddingContext>> | undefined;
    return {
      name: source.name, model, contextSize, sequences, chatWrapper: resolveChatWrapper(model),
      embeddings: () => {
        embeddings ??= model.createEmbeddingContext({ contextSize, threads })
          .then((ctx) => new SlotPool([ctx], queue))
          .catch((error: unknown) => {
            embeddings = undefined;
            throw new CoreError("internal", `cannot create an embedding context: ${firstLine(error)}`, { cause: error });
          });
        return embeddings;
      },
    };
  }

  async dispose(): Promise<void> {
    const models = await Promise.allSettled(this.loading.values());
    this.loading.clear();
    this.ready.clear();
    for (const m of models) if (m.status === "fulfilled") await m.value.model.dispose();
  }
}
