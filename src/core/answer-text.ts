/**
 * The text of an answer as its tokens come: detokenized as soon as the tokens make whole
 * characters (a character split across tokens, as UTF-8 allows, is never cut in two), and
 * held back while it may be the beginning of a stop sequence, which is never emitted.
 */
import type { LlamaModel, Token } from "node-llama-cpp";

/** tokens waited for at most to complete a character */
const MAX_PENDING = 8;
/** tokens before the new ones that the detokenizer looks at (leading spaces) */
const CONTEXT_TOKENS = 8;

export class AnswerText {
  /** the text emitted so far */
  text = "";
  /** the stop sequence that ended the answer, once one did */
  stopSequence?: string;
  private pending: Token[] = [];
  private context: Token[] = [];
  private held = "";

  constructor(private readonly model: LlamaModel, private readonly stops: readonly string[]) {}

  /** Adds a token; returns the text that may be shown now, "" when there is none yet. */
  push(token: Token): string {
    this.pending.push(token);
    const piece = this.model.detokenize(this.pending, false, this.context);
    if (piece.endsWith("\uFFFD") && this.pending.length < MAX_PENDING) return "";
    this.context = [...this.context, ...this.pending].slice(-CONTEXT_TOKENS);
    this.pending = [];
    return this.release(piece);
  }

  /** The answer is over: what was held back, as far as it did not become a stop sequence. */
  end(): string {
    const rest = this.pending.length > 0 ? this.model.detokenize(this.pending, false, this.context) : "";
    this.pending = [];
    const out = this.stopSequence === undefined ? this.held + rest : "";
    this.held = "";
    this.text += out;
    return out;
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
