/**
 * One answer in the making, on one context sequence: its prompt (only the part that the
 * sequence's cache does not already hold is evaluated), its tokens as the batcher brings
 * them, how it ends (end of generation, a stop sequence, the token limit, a cancel), and
 * the events a door reads: text deltas as they become showable, then one `done` with the
 * finish reason, usage and timings.
 */
import type { LlamaContextSequence, LlamaModel, SequenceEvaluateOptions, Token } from "node-llama-cpp";
import { AnswerText } from "./answer-text.js";
import { CoreError, type FinishReason, type GenerationEvent } from "./types.js";

export interface GenerationPlan {
  /** the whole prompt, as tokens */
  prompt: Token[];
  /** texts that end the answer, never emitted */
  stops: string[];
  maxTokens: number;
  sampling: Pick<SequenceEvaluateOptions, "temperature" | "topK" | "topP" | "minP" | "seed">;
  /** repetition penalties over the last `lastTokens` generated tokens */
  penalty?: { penalty: number; frequencyPenalty?: number; presencePenalty?: number; lastTokens: number };
}

/** How many of `prompt`'s first tokens `sequence` already holds in its cache. */
export function cachedPrefix(sequence: LlamaContextSequence, prompt: Token[]): number {
  return Math.min(sequence.compareContextTokens(prompt).firstDifferentIndex, sequence.nextTokenIndex);
}

export class Generation {
  /** the events, in order, for whoever reads them (see `events()`) */
  private readonly queue: GenerationEvent[] = [];
  private wake?: () => void;
  private failure?: CoreError;
  private ended = false;
  /** no event will follow */
  private closed = false;
  private iterator?: AsyncIterator<Token, void, void>;
  private readonly generated: Token[] = [];
  private readonly text: AnswerText;
  private cancelled = false;
  private firstTokenAt?: number;
  /** tokens of the prompt found in the cache, not evaluated again */
  reused = 0;

  constructor(
    /** the model's served name, for the `done` event */
    private readonly name: string,
    private readonly model: LlamaModel,
    private readonly sequence: LlamaContextSequence,
    private readonly plan: GenerationPlan,
    private readonly timing: { startedAt: number; queueMs: number },
    /** the sequence's place in its context: the batcher asks in this order (see batcher.ts) */
    readonly order: number,
    /** called once the generation has ended and no longer uses its sequence */
    private readonly onEnd: () => void,
  ) {
    this.text = new AnswerText(model, plan.stops);
  }

  /** Evaluates the prompt (what the cache lacks of it) and takes the first token; false when that already ended it. */
  async first(): Promise<boolean> {
    try {
      const { prompt } = this.plan;
      // at least the last prompt token is evaluated again: its logits give the first token
      this.reused = Math.min(cachedPrefix(this.sequence, prompt), prompt.length - 1);
      this.push({ type: "start", promptTokens: prompt.length, cachedPromptTokens: this.reused });
      if (this.sequence.nextTokenIndex > this.reused) {
        await this.sequence.eraseContextTokenRanges([{ start: this.reused, end: this.sequence.nextTokenIndex }]);
      }
      const { penalty } = this.plan;
      this.iterator = this.sequence.evaluate(prompt.slice(this.reused), {
        ...this.plan.sampling,
        repeatPenalty: penalty && {
          penalty: penalty.penalty,
          frequencyPenalty: penalty.frequencyPenalty,
          presencePenalty: penalty.presencePenalty,
          punishTokens: () => this.punishable(penalty.lastTokens),
        },
      })[Symbol.asyncIterator]();
    } catch (error) {
      await this.fail(error);
      return false;
    }
    return this.take(this.next());
  }

  /** Asks for the next token (the batcher asks every running generation at once). */
  next(): Promise<IteratorResult<Token, void>> {
    return this.iterator!.next();
  }

  /** Takes what `next()` gave; false once the generation has ended. */
  async take(result: Promise<IteratorResult<Token, void>>): Promise<boolean> {
    let outcome: IteratorResult<Token, void>;
    try {
      outcome = await result;
    } catch (error) {
      await this.fail(error);
      return false;
    }
    if (this.cancelled) return this.finish("cancelled");
    // the model ended its turn (node-llama-cpp stops at an end-of-generation token)
    if (outcome.done) return this.finish("stop");
    const token = outcome.value;
    this.firstTokenAt ??= performance.now();
    this.generated.push(token);
    const delta = this.text.push(token);
    if (delta) this.push({ type: "delta", text: delta });
    if (this.text.stopSequence !== undefined) return this.finish("stop_sequence");
    if (this.generated.length >= this.plan.maxTokens) return this.finish("length");
    return true;
  }

  /** Stops at the next token; the `done` event still reports what was generated. */
  cancel(): void {
    this.cancelled = true;
  }

  get isCancelled(): boolean {
    return this.cancelled;
  }

  /** Ends the generation: frees the sequence, then reports. */
  async finish(reason: FinishReason): Promise<false> {
    if (this.ended) return false;
    this.ended = true;
    const rest = this.text.end();
    if (rest) this.push({ type: "delta", text: rest });
    await this.release();
    const endedAt = performance.now();
    const completionTokens = this.generated.length;
    const generationMs = this.firstTokenAt === undefined ? 0 : endedAt - this.firstTokenAt;
    this.push({
      type: "done",
      model: this.name,
      text: this.text.text,
      finishReason: reason,
      ...(this.text.stopSequence === undefined ? {} : { stopSequence: this.text.stopSequence }),
      usage: { promptTokens: this.plan.prompt.length, completionTokens, cachedPromptTokens: this.reused },
      timings: {
        queueMs: this.timing.queueMs,
        ttftMs: (this.firstTokenAt ?? endedAt) - this.timing.startedAt,
        totalMs: endedAt - this.timing.startedAt,
        tokensPerSecond: completionTokens > 1 && generationMs > 0 ? (completionTokens - 1) / (generationMs / 1000) : 0,
      },
    });
    this.close();
    return false;
  }

  /** The events: deltas, then `done`; throws the error that ended the generation, if one did. */
  async *events(): AsyncGenerator<GenerationEvent> {
    for (;;) {
      const event = this.queue.shift();
      if (event) {
        yield event;
        continue;
      }
      if (this.failure) throw this.failure;
      if (this.closed) return;
      await new Promise<void>((resolve) => { this.wake = resolve; });
      this.wake = undefined;
    }
  }

  private async fail(error: unknown): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.release();
    this.failure = error instanceof CoreError ? error : new CoreError("internal", "generation failed", { cause: error });
    this.close();
  }

  private async release(): Promise<void> {
    // the evaluation must be over before another request may use the sequence
    await this.iterator?.return?.().catch(() => undefined);
    this.onEnd();
  }

  private punishable(lastTokens: number): Token[] {
    // as node-llama-cpp's LlamaChat does: the last generated tokens, new lines spared
    const nl = this.model.tokens.nl;
    return this.generated.slice(-lastTokens).filter((token) => token !== nl);
  }

  private push(event: GenerationEvent): void {
    this.queue.push(event);
    this.wake?.();
  }

  private close(): void {
    this.closed = true;
    this.wake?.();
  }
}
