/**
 * A model in memory, as one lifecycle object (node-llama-cpp's style: Llama -> Model ->
 * Context -> Sequence): its context of `parallel` sequences behind a SequencePool, the batcher
 * that drives their generations, the chat template that both generation and token
 * counting use, an embedding context made on first use, and `dispose()`.
 */
import type { ChatWrapper, LlamaContext, LlamaContextSequence, LlamaEmbeddingContext, LlamaModel, Token } from "node-llama-cpp";
import { Batcher } from "./batcher.js";
import { Engine, firstLine } from "./engine.js";
import { Grammars } from "./grammars.js";
import { SequencePool } from "./sequence-pool.js";
import { chooseThreads, threadCandidates } from "./threads.js";
import { CoreError, type CoreOptions, type ModelSource } from "./types.js";

export class LoadedModel {
  readonly batcher = new Batcher();
  /** each sequence's place in the context, in the order node-llama-cpp numbered them */
  readonly order: ReadonlyMap<LlamaContextSequence, number>;
  private readonly usedAt = new Map<LlamaContextSequence, number>();
  private uses = 0;
  private embedding?: Promise<SequencePool<LlamaEmbeddingContext>>;
  private embeddingContext?: LlamaEmbeddingContext;

  private constructor(
    readonly name: string,
    readonly model: LlamaModel,
    private readonly context: LlamaContext,
    /** tokens per sequence */
    readonly contextSize: number,
    readonly sequences: SequencePool<LlamaContextSequence>,
    /** the one chat template that both generation and token counting use */
    readonly chatWrapper: ChatWrapper,
    /** llama.cpp threads: as given, or as measured at load (threads.ts) */
    readonly threads: number,
    /** the grammars of constrained answers, built once per schema */
    readonly grammars: Grammars,
    private readonly options: CoreOptions,
    sequenceList: LlamaContextSequence[],
  ) {
    this.order = new Map(sequenceList.map((sequence, i) => [sequence, i]));
  }

  /** `onBusy`: called whenever sequences are taken, given back or waited for. */
  static async load(engine: Engine, source: ModelSource, options: CoreOptions, onBusy?: () => void): Promise<LoadedModel> {
    const llama = await engine.get();
    const { resolveChatWrapper } = await import("node-llama-cpp");
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: source.path, gpuLayers: options.gpu === "cpu" ? 0 : "auto" });
    } catch (error) {
      // named, not by its path: the message may reach clients
      throw new CoreError("unavailable", `cannot load model ${source.name}: ${firstLine(error).replaceAll(source.path, source.name)}`, { cause: error });
    }
    const contextSize = Math.min(options.ctxSize, model.trainContextSize);
    const { parallel, queue } = options;
    // unless given, the most threads that may be chosen; the measurement below caps them
    const threads = options.threads ?? Math.max(...threadCandidates());
    const contextMade = model.createContext({ contextSize, sequences: parallel, threads }).catch(async (error: unknown) => {
      await model.dispose();
      throw new CoreError("unavailable", `cannot create a context of ${contextSize} tokens x ${parallel} sequences for model ${source.name}: ${firstLine(error)}`, { cause: error });
    });
    // while llama.cpp makes the context on its own thread: finding the chat template takes
    // this thread a few hundred milliseconds (node-llama-cpp renders the model's Jinja
    // template against each known format), half a cold start (bench/lifecycle.js)
    const chatWrapper = resolveChatWrapper(model);
    const context = await contextMade;
    const sequenceList = Array.from({ length: parallel }, () => context.getSequence());
    const chosen = options.threads ?? await chooseThreads(llama, sequenceList[0]!, calibrationPrompt(model));
    const sequences = new SequencePool(sequenceList, queue, onBusy);
    return new LoadedModel(source.name, model, context, contextSize, sequences, chatWrapper, chosen, new Grammars(llama), options, sequenceList);
  }

  /** Marks a sequence as just used (sequences are reused least recently used first). */
  used(sequence: LlamaContextSequence): void {
    this.usedAt.set(sequence, ++this.uses);
  }

  /** When the sequence was last used: higher is later; 0 for never. */
  lastUsed(sequence: LlamaContextSequence): number {
    return this.usedAt.get(sequence) ?? 0;
  }

  /** The embedding context, made on first use; one embedding at a time, the others queued. */
  embeddings(): Promise<SequencePool<LlamaEmbeddingContext>> {
    this.embedding ??= this.model.createEmbeddingContext({ contextSize: this.contextSize, threads: this.threads })
      .then((context) => {
        this.embeddingContext = context;
        return new SequencePool([context], this.options.queue);
      })
      .catch((error: unknown) => {
        this.embedding = undefined;
        throw new CoreError("internal", `cannot create an embedding context: ${firstLine(error)}`, { cause: error });
      });
    return this.embedding;
  }

  async dispose(): Promise<void> {
    await this.embeddingContext?.dispose();
    await this.context.dispose();
    await this.model.dispose();
  }
}

/** A few tokens to decode from while measuring threads. */
function calibrationPrompt(model: LlamaModel): Token[] {
  const { bos, shouldPrependBosToken } = model.tokens;
  return [...(shouldPrependBosToken && bos !== null ? [bos] : []), ...model.tokenize("Hello, the")];
}
