/**
 * How many threads llama.cpp gets, when nobody said: measured on the model just loaded.
 *
 * No fixed rule holds. On a 2-core machine, bench/vs-llama-server.js: the ~100 MB model
 * decodes a token in 3.1 ms with 2 threads and 5.0 ms with 1, so 2 threads give 1.5x the
 * throughput; the 1 MB demo model takes 0.35 ms with 2 threads and 0.25 ms with 1 (llama.cpp
 * starts its compute threads anew for every decode, and a small model cannot pay for
 * that), and under load 1 thread served 4184 tok/s against 1794. The same holds for
 * physical cores against SMT siblings: which count wins depends on the machine and the
 * model. So each candidate decodes a few tokens, and the fastest count wins; within 10%
 * of it, the smaller count wins (it leaves a core to HTTP and the audit log).
 */
import { availableParallelism } from "node:os";
import type { Llama, LlamaContextSequence, Token } from "node-llama-cpp";

/** decodes first, to fault the model's pages in (it is memory-mapped) before anything is timed */
const WARM_UP = 3;
/** rounds over the candidates (interleaved, so that a noisy moment hits them alike), and decodes each */
const ROUNDS = 3;
const DECODES = 2;
/** a decode this slow means a model big enough that every core pays: no need to measure more */
const COMPUTE_BOUND_MS = 150;
const WITHIN = 1.1;

/** The counts worth trying on this machine: all logical cores, one fewer, and half (the physical cores under SMT). */
export function threadCandidates(cores = availableParallelism()): number[] {
  return [...new Set([cores, cores - 1, Math.ceil(cores / 2)])].filter((n) => n >= 1).sort((a, b) => b - a);
}

/**
 * Sets `llama.maxThreads` to the fastest candidate for decoding one token on `sequence`
 * (left empty afterwards), and returns it.
 */
export async function chooseThreads(llama: Llama, sequence: LlamaContextSequence, prompt: Token[]): Promise<number> {
  const candidates = threadCandidates();
  const times = new Map<number, number[]>(candidates.map((n) => [n, []]));
  const iterator = sequence.evaluate(prompt, { temperature: 0 })[Symbol.asyncIterator]();
  const decode = async () => {
    const started = performance.now();
    const { done } = await iterator.next();
    return done ? undefined : performance.now() - started;
  };
  let chosen = candidates[0]!;
  try {
    llama.maxThreads = chosen;
    await iterator.next();
    for (let i = 0; i < WARM_UP; i++) {
      const ms = await decode();
      // a model this big keeps every core busy: all of them
      if (ms === undefined || ms >= COMPUTE_BOUND_MS) return chosen;
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const threads of candidates) {
        llama.maxThreads = threads;
        for (let i = 0; i < DECODES; i++) {
          const ms = await decode();
          if (ms === undefined) return chosen;
          times.get(threads)!.push(ms);
        }
      }
    }
    const medians = candidates.map((threads) => [threads, median(times.get(threads)!)] as const);
    const fastest = Math.min(...medians.map(([, ms]) => ms));
    chosen = Math.min(...medians.filter(([, ms]) => ms <= fastest * WITHIN).map(([threads]) => threads));
    return chosen;
  } finally {
    llama.maxThreads = chosen;
    await iterator.return?.();
    await sequence.clearHistory();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Infinity;
}
