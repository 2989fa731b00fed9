/**
 * The text of an answer as its tokens come: detokenized as soon as the tokens make whole
 * characters (a character split across tokens, as UTF-8 allows, is never cut in two), and
 * held back while it may be the beginning of a stop sequence, which is never emitted.
 * It remembers where each token's text ends, so that the generation can be taken back to
 * just before a stop sequence began (a tool call's prefix, which the model then writes
 * again under a grammar).
 */
import type { LlamaModel, Token } from "node-llama-cpp";

/** tokens waited for at most to complete a character */
const MAX_PENDING = 8;
/** tokens before the new ones that the detokenizer looks at (leading spaces) */
const CONTEXT_TOKENS = 8;

export class AnswerText {
  /** the text emitted so far */
  text = "";
  /** the stop sequence that ended the text, once one did */
  stopSequence?: string;
  /** where the stop sequence began in `raw` */
  stopAt?: number;
  /** every token's text so far, emitted, held back or stopped at */
  private raw = "";
  /** after how many tokens the raw text was how long */
  private readonly boundaries: { tokens: number; length: number }[] = [{ tokens: 0, length: 0 }];
  private tokens = 0;
  private pending: Token[] = [];
  private context: Token[] = [];
  private held = "";

  /** `special`: special tokens become their text (a call prefix may be one); else nothing */
  constructor(private readonly model: LlamaModel, private readonly stops: readonly string[], private readonly special = false) {}

  /** Adds a token; returns the text that may be shown now, "" when there is none yet. */
  push(token: Token): string {
    this.pending.push(token);
    this.tokens++;
    const piece = this.model.detokenize(this.pending, this.special, this.context);
    if (piece.endsWith("\uFFFD") && this.pending.length < MAX_PENDING) return "";
    this.context = [...this.context, ...this.pending].slice(-CONTEXT_TOKENS);
    this.pending = [];
    this.raw += piece;
    this.boundaries.push({ tokens: this.tokens, length: this.raw.length });
    return this.release(piece);
  }

  /** The answer is over: what was held back, as far as it did not become a stop sequence. */
  end(): string {
    const rest = this.pending.length > 0 ? this.model.detokenize(this.pending, this.special, this.context) : "";
    this.pending = [];
    const out = this.stopSequence === undefined ? this.held + rest : "";
    this.held = "";
    this.text += out;
    return out;
  }

  /**
   * Where to take the generation back to, to undo the stop sequence: how many tokens lie
   * wholly before it, and the text between them and the stop (part of the token the stop
   * began in), to be fed again with what replaces the stop.
   */
  beforeStop(): { tokens: number; leftover: string } {
    const at = this.stopAt ?? this.raw.length;
    let boundary = this.boundaries[0]!;
    for (const b of this.boundaries) if (b.length <= at) boundary = b;
    return { tokens: boundary.tokens, leftover: this.raw.slice(boundary.length, at) };
  }

  private release(piece: string): string {
    if (this.stopSequence !== undefined) return "";
    this.held += piece;
    let first = -1;
    for (const stop of this.stops) {
      const at = this.held.indexOf(stop);
      if (at >= 0 && (first < 0 || at < first)) {
        first = at;
        this.stopSequence = stop;
      }
    }
    let out: string;
    if (first >= 0) {
      this.stopAt = this.raw.length - this.held.length + first;
      out = this.held.slice(0, first);
      this.held = "";
    } else {
      // keep the longest end that a stop sequence could still begin with
      const keep = this.partialStopLength();
      out = this.held.slice(0, this.held.length - keep);
      this.held = this.held.slice(this.held.length - keep);
    }
    this.text += out;
    return out;
  }

  private partialStopLength(): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.held.length); n > longest; n--) {
        if (this.held.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}
