/**
 * Limits per API key, from the keys file: `rpm=N` (requests in any 60 s, a sliding
 * window), `concurrency=N` (requests running or queued at once) and `tpm=N` (prompt and
 * completion tokens in any 60 s, counted as each answer ends: a key over it is refused
 * new requests until its oldest tokens leave the window). They live in this process's
 * memory: a restart resets them, and each daemon of a fleet applies them on its own.
 */
import type { ApiKey } from "./http.js";
import { HttpProblem } from "./problem.js";

const WINDOW_MS = 60_000;

interface Usage {
  /** when each request of the last minute was admitted */
  starts: number[];
  running: number;
  /** tokens of the answers of the last minute, and when each ended */
  tokens: { at: number; count: number }[];
}

export class KeyLimits {
  private readonly limits: Map<string, ApiKey>;
  private readonly usage = new Map<string, Usage>();

  constructor(keys: readonly ApiKey[]) {
    this.limits = new Map(keys.filter((k) => k.rpm || k.concurrency || k.tpm).map((k) => [k.label, k]));
    this.countsTokens = keys.some((k) => k.tpm !== undefined);
  }

  /** Whether some key has a tokens-per-minute limit (so answers' tokens must be counted). */
  readonly countsTokens: boolean;

  /** Admits a request of the key labelled `label`, or throws 429 with Retry-After. Call the result once the request has ended. */
  admit(label: string, now = Date.now()): () => void {
    const limit = this.limits.get(label);
    if (!limit) return () => undefined;
    const usage = this.current(label, now);
    if (limit.concurrency && usage.running >= limit.concurrency) {
      throw refused(1, `This key may run ${limit.concurrency} requests at once; wait for one to end.`);
    }
    if (limit.rpm && usage.starts.length >= limit.rpm) {
      throw refused(usage.starts[0]! + WINDOW_MS - now, `This key may make ${limit.rpm} requests a minute.`);
    }
    if (limit.tpm && usage.tokens.reduce((sum, t) => sum + t.count, 0) >= limit.tpm) {
      throw refused(usage.tokens[0]!.at + WINDOW_MS - now, `This key may use ${limit.tpm} tokens a minute.`);
    }
    usage.starts.push(now);
    usage.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      usage.running--;
    };
  }

  /** Counts an answer's tokens against its key's tokens per minute. */
  used(label: string | null, tokens: number, now = Date.now()): void {
    if (label === null || tokens <= 0 || !this.limits.get(label)?.tpm) return;
    this.current(label, now).tokens.push({ at: now, count: tokens });
  }

  /** The key's usage, less what has left the window. */
  private current(label: string, now: number): Usage {
    let usage = this.usage.get(label);
    if (!usage) this.usage.set(label, (usage = { starts: [], running: 0, tokens: [] }));
    while (usage.starts.length && usage.starts[0]! <= now - WINDOW_MS) usage.starts.shift();
    while (usage.tokens.length && usage.tokens[0]!.at <= now - WINDOW_MS) usage.tokens.shift();
    return usage;
  }
}

function refused(waitMs: number, message: string): HttpProblem {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new HttpProblem(429, "rate_limit_exceeded", `${message} Try again in ${seconds} s.`, { headers: { "Retry-After": String(seconds) } });
}
