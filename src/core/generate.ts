/**
 * Chat and completion generation: a protocol-neutral request in, text deltas out as they
 * are generated, then one `done` event with the finish reason, usage and timings.
 * Leaving the iteration early (break, return, a thrown error) or aborting the signal stops
 * the generation and frees its sequence before the generator finishes.
 */
import type { ChatHistoryItem, LlamaContextSequence, LlamaChatResponse, LLamaContextualRepeatPenalty } from "node-llama-cpp";
import type { LoadedModel } from "./pool.js";
import { DEFAULT_SAMPLING, validateSampling } from "./sampling.js";
import {
  CoreError, type ChatMessage, type ChatRequest, type CompletionRequest, type FinishReason,
  type GenerationEvent, type SamplingOptions,
} from "./types.js";

type StopMetadata = LlamaChatResponse["metadata"];

/** What one generation needs from a sequence: run it, reporting text and tokens. */
type Runner = (sequence: LlamaContextSequence, hooks: RunHooks) => Promise<StopMetadata>;

interface RunHooks {
  signal: AbortSignal;
  maxTokens: number;
  onText: (text: string) => void;
  onTokens: (count: number) => void;
}

export async function* chat(loaded: LoadedModel, request: ChatRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
  validateSampling(request);
  const history = toChatHistory(request.messages);
  const { LlamaChat } = await import("node-llama-cpp");
  yield* generate(loaded, request, signal, () => countChatTokens(loaded, history), async (sequence, hooks) => {
    const llamaChat = new LlamaChat({ contextSequence: sequence, chatWrapper: loaded.chatWrapper, autoDisposeSequence: false });
    try {
      const response = await llamaChat.generateResponse(history, {
        ...samplingFor(request, hooks),
        onTextChunk: hooks.onText,
        onToken: (tokens) => hooks.onTokens(tokens.length),
      });
      return response.metadata;
    } finally {
      llamaChat.dispose({ disposeSequence: false });
    }
  });
}

export async function* complete(loaded: LoadedModel, request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
  validateSampling(request);
  const { LlamaCompletion } = await import("node-llama-cpp");
  yield* generate(loaded, request, signal, () => countCompletionTokens(loaded, request.prompt), async (sequence, hooks) => {
    const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
    try {
      const response = await completion.generateCompletionWithMeta(request.prompt, {
        ...samplingFor(request, hooks),
        onTextChunk: hooks.onText,
        onToken: (tokens) => hooks.onTokens(tokens.length),
      });
      return response.metadata;
    } finally {
      completion.dispose({ disposeSequence: false });
    }
  });
}

/** Prompt tokens of a chat, counted through the model's chat template as generation sees them. */
export function countChatTokens(loaded: LoadedModel, history: ChatHistoryItem[]): number {
  const { contextText } = loaded.chatWrapper.generateContextState({ chatHistory: history });
  return contextText.tokenize(loaded.model.tokenizer).length;
}

export function countCompletionTokens(loaded: LoadedModel, prompt: string): number {
  const bos = loaded.model.tokens.shouldPrependBosToken && loaded.model.tokens.bos !== null ? 1 : 0;
  return loaded.model.tokenize(prompt).length + bos;
}

export function toChatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem =>
    m.role === "system" ? { type: "system", text: m.content }
      : m.role === "user" ? { type: "user", text: m.content }
        : { type: "model", response: [m.content] });
  // a trailing assistant message is a prefix the answer continues; otherwise the answer starts empty
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  return history;
}

function samplingFor(request: SamplingOptions, hooks: RunHooks) {
  const penalize = request.repeatPenalty !== undefined || request.frequencyPenalty !== undefined || request.presencePenalty !== undefined;
  const repeatPenalty: LLamaContextualRepeatPenalty | false = penalize
    ? { penalty: request.repeatPenalty ?? 1, frequencyPenalty: request.frequencyPenalty, presencePenalty: request.presencePenalty, lastTokens: 64 }
    : false;
  return {
    temperature: request.temperature ?? DEFAULT_SAMPLING.temperature,
    topK: request.topK ?? DEFAULT_SAMPLING.topK,
    topP: request.topP ?? DEFAULT_SAMPLING.topP,
    minP: request.minP ?? DEFAULT_SAMPLING.minP,
    seed: request.seed,
    maxTokens: hooks.maxTokens,
    customStopTriggers: request.stop,
    repeatPenalty,
    signal: hooks.signal,
    stopOnAbortSignal: true,
  };
}

async function* generate(
  loaded: LoadedModel,
  request: SamplingOptions,
  signal: AbortSignal | undefined,
  countPrompt: () => number,
  run: Runner,
): AsyncGenerator<GenerationEvent> {
  const startedAt = performance.now();
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) abort.abort();
  let lease;
  try {
    lease = await loaded.sequences.acquire(abort.signal);
  } catch (error) {
    signal?.removeEventListener("abort", onAbort);
    throw error;
  }
  const deltas = new DeltaQueue();
  let firstTokenAt: number | undefined;
  let completionTokens = 0;
  let running: Promise<StopMetadata> | undefined;
  try {
    const promptTokens = countPrompt();
    const room = loaded.contextSize - promptTokens;
    if (room < 1) {
      throw new CoreError("invalid_request", `the prompt is ${promptTokens} tokens; the context holds ${loaded.contextSize}`, { param: "messages" });
    }
    running = run(lease.slot, {
      signal: abort.signal,
      maxTokens: Math.min(request.maxTokens ?? room, room),
      onText: (text) => deltas.push(text),
      onTokens: (count) => {
        firstTokenAt ??= performance.now();
        completionTokens += count;
      },
    });
    running.then(() => deltas.end(), (error: unknown) => deltas.fail(error));
    let text = "";
    for await (const delta of deltas) {
      text += delta;
      yield { type: "delta", text: delta };
    }
    const metadata = await running;
    const endedAt = performance.now();
    const generationMs = firstTokenAt === undefined ? 0 : endedAt - firstTokenAt;
    const stopSequence = metadata.stopReason === "customStopTrigger" ? metadata.customStopTrigger.join("") : undefined;
    yield {
      type: "done",
      model: loaded.name,
      text,
      finishReason: finishReasonOf(metadata.stopReason, abort.signal.aborted),
      ...(stopSequence === undefined ? {} : { stopSequence }),
      usage: { promptTokens, completionTokens },
      timings: {
        queueMs: lease.queueMs,
        ttftMs: (firstTokenAt ?? endedAt) - startedAt,
        totalMs: endedAt - startedAt,
        tokensPerSecond: completionTokens > 1 && generationMs > 0 ? (completionTokens - 1) / (generationMs / 1000) : 0,
      },
    };
  } catch (error) {
    throw error instanceof CoreError ? error : new CoreError("internal", "generation failed", { cause: error });
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // the consumer may have left early: stop generating, and only then free the sequence
    abort.abort();
    await running?.catch(() => undefined);
    lease.release();
  }
}

function finishReasonOf(stopReason: StopMetadata["stopReason"], aborted: boolean): FinishReason {
  switch (stopReason) {
    case "maxTokens": return "length";
    case "customStopTrigger": return "stop_sequence";
    case "abort": return "cancelled";
    default: return aborted ? "cancelled" : "stop";
  }
}

/** Text deltas from node-llama-cpp's callbacks, read as an async iterator. */
class DeltaQueue implements AsyncIterable<string> {
  private items: string[] = [];
  private done = false;
  private error: unknown;
  private wake?: () => void;

  push(text: string) { this.items.push(text); this.wake?.(); }
  end() { this.done = true; this.wake?.(); }
  fail(error: unknown) { this.error = error; this.done = true; this.wake?.(); }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      if (this.items.length > 0) {
        const batch = this.items;
        this.items = [];
        yield batch.join("");
        continue;
      }
      if (this.done) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => { this.wake = resolve; });
      this.wake = undefined;
    }
  }
}
