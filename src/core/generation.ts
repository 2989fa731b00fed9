/**
 * One answer in the making, on one context sequence: its prompt (only the part that the
 * sequence's cache does not already hold is evaluated), its tokens as the batcher brings
 * them, how it ends (end of generation, a stop sequence, the token limit, tool calls, a
 * cancel), and the events a door reads: text deltas as they become showable, tool calls as
 * they are written, then one `done` with the finish reason, usage and timings.
 *
 * An answer goes through phases, each one evaluation on the sequence: `text` (free, or
 * JSON under the response format's grammar), `call` (a tool call's name and arguments
 * under the call grammar), `between` (after a call, whether another one follows). When the
 * text phase writes the start of a call in the model's syntax, the generation goes back to
 * just before it and writes the call again under the grammar, so that every call's
 * arguments are valid against the function's schema.
 */
import type { LlamaContextSequence, LlamaGrammar, LlamaModel, SequenceEvaluateOptions, Token } from "node-llama-cpp";
import { randomBytes } from "node:crypto";
import { AnswerText } from "./answer-text.js";
import type { Constraint } from "./grammars.js";
import { completeJson } from "./json-completion.js";
import type { Schema } from "./json-schema.js";
import type { ToolSyntax } from "./tool-syntax.js";
import { CoreError, type FinishReason, type GenerationEvent, type ToolCall } from "./types.js";

export interface ToolPlan {
  syntax: ToolSyntax;
  functions: { name: string; schema: Schema }[];
  /** the grammar of a call's body: a name and its arguments (only the arguments when forced to one function) */
  grammar: LlamaGrammar;
  /** the answer begins with a call (tool_choice required, or a named function) */
  forced?: { named?: string };
  parallel: boolean;
}

export interface GenerationPlan {
  /** the whole prompt, as tokens */
  prompt: Token[];
  /** texts that end the answer, never emitted */
  stops: string[];
  maxTokens: number;
  sampling: Pick<SequenceEvaluateOptions, "temperature" | "topK" | "topP" | "minP" | "seed">;
  /** repetition penalties over the last `lastTokens` generated tokens */
  penalty?: { penalty: number; frequencyPenalty?: number; presencePenalty?: number; lastTokens: number };
  /** the answer is JSON under a grammar: it ends when its value is whole */
  constraint?: Constraint;
  tools?: ToolPlan;
}

/** how often (in tokens) the ending a JSON value would need is measured, before the budget is near */
const ENDING_EVERY = 16;
/** calls in one answer at most */
const MAX_CALLS = 16;
/** after a call, tokens the model has to begin another one */
const BETWEEN_TOKENS = 16;
/**
 * Events a generation holds that its consumer has not taken: past this, it takes no more
 * tokens until the consumer reads (a consumer that stops reading pauses it, whoever it is).
 * A step brings one token, so at most a few events each.
 */
export const MAX_UNREAD_EVENTS = 64;

/** How many of `prompt`'s first tokens `sequence` already holds in its cache. */
export function cachedPrefix(sequence: LlamaContextSequence, prompt: Token[]): number {
  return Math.min(sequence.compareContextTokens(prompt).firstDifferentIndex, sequence.nextTokenIndex);
}

type Phase = "text" | "call" | "between";

/** A call being written. */
interface OpenCall {
  id: string;
  name?: string;
  arguments: string;
  /** of `arguments`, what has been sent as events */
  sent: number;
}

export class Generation {
  private readonly queue: GenerationEvent[] = [];
  private wake?: () => void;
  private failure?: CoreError;
  private ended = false;
  private closed = false;
  private iterator?: AsyncIterator<Token, void, void>;
  private phase: Phase = "text";
  /** where the current phase's first generated token lands in the sequence */
  private phaseBase = 0;
  /** tokens generated in the current phase */
  private phaseTokens = 0;
  private readonly generated: Token[] = [];
  /** the answer's text (the content of an answer that calls tools) */
  private readonly text: AnswerText;
  /** the current phase's text when it is not the answer's: a call, or what follows one */
  private phaseText?: AnswerText;
  private call?: OpenCall;
  private readonly calls: ToolCall[] = [];
  private cancelled = false;
  private firstTokenAt?: number;
  /** tokens of the prompt found in the cache, not evaluated again */
  reused = 0;
  /** tokens the ending of a JSON value, cut short now, would take (json-completion.ts) */
  private endingTokens = 0;
  /** tokens of endings appended rather than generated */
  private appended = 0;
  /** its consumer said pause (and has not said resume yet) */
  private pausedByConsumer = false;
  /** told when it may take tokens again (the batcher waits on it when all it drives are paused) */
  private onGo?: () => void;

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
    const tools = plan.tools;
    this.text = new AnswerText(model, [...plan.stops, ...(tools ? tools.syntax.prefixes : [])], tools !== undefined);
  }

  /** Evaluates the prompt (what the cache lacks of it) and takes the first token; false when that already ended it. */
  async first(): Promise<boolean> {
    try {
      const { prompt, tools } = this.plan;
      // at least the last prompt token is evaluated again: its logits give the first token
      this.reused = Math.min(cachedPrefix(this.sequence, prompt), prompt.length - 1);
      this.push({ type: "start", promptTokens: prompt.length, cachedPromptTokens: this.reused });
      if (this.sequence.nextTokenIndex > this.reused) {
        await this.sequence.eraseContextTokenRanges([{ start: this.reused, end: this.sequence.nextTokenIndex }]);
      }
      const input = prompt.slice(this.reused);
      if (tools?.forced) await this.beginCall([...input, ...(await this.tokenize([tools.syntax.prefix]))], tools.forced.named);
      else await this.begin("text", input, this.plan.constraint?.grammar);
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
    try {
      const outcome = await result;
      if (this.cancelled) return await this.finish("cancelled");
      // the model ended its turn, or its grammar is complete
      if (outcome.done) return await this.phaseEnded();
      this.firstTokenAt ??= performance.now();
      this.generated.push(outcome.value);
      this.phaseTokens++;
      switch (this.phase) {
        case "text": return await this.textToken(outcome.value);
        case "call": return await this.callToken(outcome.value);
        case "between": return await this.betweenToken(outcome.value);
      }
    } catch (error) {
      await this.fail(error);
      return false;
    }
  }

  /** Stops at the next token; the `done` event still reports what was generated. A paused generation ends now. */
  cancel(): void {
    this.cancelled = true;
    this.going();
  }

  /**
   * Takes no more tokens until `resume()` (the consumer cannot take its events now): the
   * batcher skips it, the others it drives go on. It keeps its sequence; a cancel still ends it.
   */
  pause(): void {
    this.pausedByConsumer = true;
  }

  resume(): void {
    this.pausedByConsumer = false;
    this.going();
  }

  /**
   * Paused: by its consumer, or because the consumer has not taken its last
   * MAX_UNREAD_EVENTS events. A cancelled or ended generation is never paused.
   */
  get isPaused(): boolean {
    return !this.cancelled && !this.ended && (this.pausedByConsumer || this.queue.length >= MAX_UNREAD_EVENTS);
  }

  /** `listener` is called whenever the generation may have stopped being paused (the batcher's wake-up). */
  whenGoing(listener: () => void): void {
    this.onGo = listener;
  }

  private going(): void {
    if (!this.isPaused) this.onGo?.();
  }

  get isCancelled(): boolean {
    return this.cancelled;
  }

  private get left(): number {
    return this.plan.maxTokens - this.generated.length;
  }

  private async textToken(token: Token): Promise<boolean> {
    const delta = this.text.push(token);
    if (delta) this.push({ type: "delta", text: delta });
    const stop = this.text.stopSequence;
    if (stop !== undefined) {
      if (this.plan.tools?.syntax.prefixes.includes(stop)) return this.callBegun(this.text);
      return this.finish("stop_sequence");
    }
    const { constraint } = this.plan;
    if (constraint) {
      const whole = this.json(constraint.schema, this.text.text, delta, (ending) => {
        this.text.text += ending;
        this.push({ type: "delta", text: ending });
      });
      if (whole !== undefined) return this.finish(whole ? "stop" : "length");
      return true;
    }
    if (this.left <= 0) return this.finish("length");
    return true;
  }

  private async callToken(token: Token): Promise<boolean> {
    const call = this.call!;
    const written = this.phaseText!;
    const piece = written.push(token);
    const { syntax, functions } = this.plan.tools!;
    if (call.name === undefined) {
      const at = syntax.paramsPrefix ? written.text.indexOf(syntax.paramsPrefix) : -1;
      if (at >= 0) {
        this.named(written.text.slice(0, at).trim());
        call.arguments = written.text.slice(at + syntax.paramsPrefix.length);
      } else if (this.left <= 1) {
        // out of tokens before the name was whole: the function it began, with the least arguments
        const partial = written.text.trim();
        this.named((functions.find((f) => f.name.startsWith(partial)) ?? functions[0]!).name);
        return this.endCall({ ending: completeJson(this.schemaOf(call.name!), "") ?? "{}", last: true });
      } else return true;
    } else call.arguments += piece;
    this.sendArguments();
    const whole = this.json(this.schemaOf(call.name!), call.arguments, piece, (ending) => { call.arguments += ending; });
    if (whole === undefined) return true;
    // the token that made the call whole was not evaluated yet: it is fed before what follows
    return this.endCall({ last: !whole, pending: token });
  }

  private async betweenToken(token: Token): Promise<boolean> {
    const written = this.phaseText!;
    written.push(token);
    if (written.stopSequence !== undefined) return this.callBegun(written);
    // the model writes something else than a call: the answer is its calls
    if (this.phaseTokens >= BETWEEN_TOKENS || this.left <= 0) return this.finish("tool_calls");
    return true;
  }

  /** The phase's evaluation ended by itself: the model's end of turn, or a complete grammar. */
  private async phaseEnded(): Promise<boolean> {
    if (this.phase === "call") return this.endCall({});
    return this.finish(this.calls.length > 0 ? "tool_calls" : "stop");
  }

  /**
   * A JSON value's progress after `delta`: true when it is whole, false when the budget is
   * out and `append` was given the shortest ending that makes it whole, undefined while
   * it goes on.
   */
  private json(schema: Schema, text: string, delta: string, append: (ending: string) => void): boolean | undefined {
    const closing = /[}\]"el]/.test(delta);
    const measure = closing || this.left <= this.endingTokens + ENDING_EVERY || this.generated.length % ENDING_EVERY === 0;
    if (!measure) return undefined;
    const ending = completeJson(schema, text);
    if (ending === "" && closing) return true;
    this.endingTokens = ending === undefined ? 0 : this.model.tokenize(ending).length;
    if (this.left > this.endingTokens + 1) return undefined;
    if (ending) {
      append(ending);
      this.appended += this.endingTokens;
    }
    return false;
  }

  /** The text phase (or the one after a call) wrote the start of a call: back to before it, and the call again under its grammar. */
  private async callBegun(written: AnswerText): Promise<boolean> {
    const { tokens, leftover } = written.beforeStop();
    const keep = this.phaseBase + tokens;
    await this.iterator?.return?.();
    if (this.sequence.nextTokenIndex > keep) await this.sequence.eraseContextTokenRanges([{ start: keep, end: this.sequence.nextTokenIndex }]);
    if (this.calls.length >= MAX_CALLS) return this.finish("tool_calls");
    await this.beginCall(await this.tokenize([leftover, this.plan.tools!.syntax.prefix]));
    return true;
  }

  /**
   * Begins a call: `input` fed (the rest of the prompt or of the text, and the call's
   * prefix), then the call's body under its grammar. Forced to one function, its name and
   * the params prefix are fed too, and only the arguments are the grammar's.
   */
  private async beginCall(input: Token[], named?: string): Promise<void> {
    const { syntax, grammar } = this.plan.tools!;
    this.call = { id: `call_${randomBytes(12).toString("hex")}`, arguments: "", sent: 0 };
    if (named !== undefined) {
      this.named(named);
      input = [...input, ...(await this.tokenize([named, syntax.paramsPrefix]))];
    }
    await this.begin("call", input, grammar);
  }

  /** Text (and special tokens, as node-llama-cpp's LlamaText holds them) as tokens. */
  private async tokenize(parts: unknown[]): Promise<Token[]> {
    const { LlamaText } = await import("node-llama-cpp");
    return LlamaText(parts as never).tokenize(this.model.tokenizer, "trimLeadingSpace");
  }

  /** Names the open call, and says so. */
  private named(name: string): void {
    const call = this.call!;
    call.name = name;
    this.push({ type: "tool_call", index: this.calls.length, id: call.id, name });
  }

  private sendArguments(): void {
    const call = this.call!;
    if (call.arguments.length <= call.sent) return;
    this.push({ type: "tool_arguments", index: this.calls.length, text: call.arguments.slice(call.sent) });
    call.sent = call.arguments.length;
  }

  /**
   * The open call is whole (with `ending` appended): another may follow, unless `last`.
   * `pending`: the call's last token, generated but not yet evaluated.
   */
  private async endCall({ ending = "", last = false, pending }: { ending?: string; last?: boolean; pending?: Token }): Promise<boolean> {
    const call = this.call!;
    call.arguments += ending;
    this.sendArguments();
    this.calls.push({ id: call.id, name: call.name!, arguments: call.arguments.trim() || "{}" });
    this.call = undefined;
    const { tools } = this.plan;
    if (last || !tools!.parallel || this.calls.length >= MAX_CALLS || this.left <= 2) return this.finish("tool_calls");
    // what the model says after a call: the syntax's end of it, and between calls
    await this.iterator?.return?.();
    const input = [...(pending === undefined ? [] : [pending]), ...(await this.tokenize([tools!.syntax.suffix, tools!.syntax.betweenCalls]))];
    this.phaseText = new AnswerText(this.model, tools!.syntax.prefixes, true);
    await this.begin("between", input);
    return true;
  }

  private schemaOf(name: string): Schema {
    return this.plan.tools!.functions.find((f) => f.name === name)?.schema ?? {};
  }

  /** A new evaluation on the sequence: `input` fed, then tokens sampled (under `grammar`, if any). */
  private async begin(phase: Phase, input: Token[], grammar?: LlamaGrammar): Promise<void> {
    const { penalty } = this.plan;
    const { LlamaGrammarEvaluationState } = await import("node-llama-cpp");
    if (phase === "call") this.phaseText = new AnswerText(this.model, []);
    this.phase = phase;
    this.phaseTokens = 0;
    this.phaseBase = this.sequence.nextTokenIndex + input.length;
    this.iterator = this.sequence.evaluate(input, {
      ...this.plan.sampling,
      grammarEvaluationState: grammar && new LlamaGrammarEvaluationState({ model: this.model, grammar }),
      repeatPenalty: penalty && {
        penalty: penalty.penalty,
        frequencyPenalty: penalty.frequencyPenalty,
        presencePenalty: penalty.presencePenalty,
        punishTokens: () => this.punishable(penalty.lastTokens),
      },
    })[Symbol.asyncIterator]();
  }

  /** Ends the generation: frees the sequence, then reports. */
  async finish(reason: FinishReason): Promise<false> {
    if (this.ended) return false;
    this.ended = true;
    const rest = this.text.end();
    if (rest) this.push({ type: "delta", text: rest });
    await this.release();
    const endedAt = performance.now();
    const completionTokens = this.generated.length + this.appended;
    const generationMs = this.firstTokenAt === undefined ? 0 : endedAt - this.firstTokenAt;
    // an answer that calls tools has the calls as its substance; what it said besides, if only space, is nothing
    const text = this.calls.length > 0 && this.text.text.trim() === "" ? "" : this.text.text;
    this.push({
      type: "done",
      model: this.name,
      text,
      finishReason: reason === "cancelled" || this.calls.length === 0 ? reason : "tool_calls",
      ...(this.text.stopSequence === undefined || this.calls.length > 0 ? {} : { stopSequence: this.text.stopSequence }),
      ...(this.calls.length > 0 ? { toolCalls: this.calls } : {}),
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
        // taken: a generation its unread events held may go on
        if (this.queue.length === MAX_UNREAD_EVENTS - 1) this.going();
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

/**
 * A consumer's say over its generation's pace, given before the generation exists (it
 * waits for a sequence first) and holding for it once it does: paused, the generation
 * takes no tokens until resumed (see Generation.pause()).
 */
export class Pace {
  private paused = false;
  private generation?: Generation;

  pause(): void {
    this.paused = true;
    this.generation?.pause();
  }

  resume(): void {
    this.paused = false;
    this.generation?.resume();
  }

  /** The generation this pace is now for. */
  attach(generation: Generation): void {
    this.generation = generation;
    if (this.paused) generation.pause();
  }
}
