/**
 * The seam between the model residency (residency.ts) and a loaded model: what the residency (and the core's
 * doors through a lease) need of a model's runner, and the two things the residency takes
 * from outside so that its residency rules can be tested without processes or wall time:
 * the factory that makes runners and the clock. In a daemon they are runner.ts's
 * RunnerModel (a child process per model) and the real clock; in tests/residency.test.js,
 * a fake runner and a fake clock (as Ollama's sched.go takes `newServerFn` and mocks it).
 */
import type { Estimate, LoadResult } from "./runner-protocol.js";
import type { ChatRequest, CompletionRequest, CoreError, EmbeddingRequest, EmbeddingResult, GenerationEvent, ModelSource } from "./types.js";

/**
 * One model's runner. RunnerModel implements it (structurally: nothing to declare there).
 * It tells that it stopped (a crash, a kill, or close()) through the `onStop` its factory
 * was given.
 */
export interface ModelRunner {
  /** the model's public name */
  readonly name: string;
  /** the runner's process id while it runs (for its memory in `mlxs ps`), if it is a process */
  readonly pid: number | undefined;
  /** its sequences generating now, and the requests waiting for one */
  queue(): { busy: number; waiting: number };
  /** the backend llama.cpp runs on (`llama.cpp/cpu` ...), starting the runner if need be */
  backend(): Promise<string>;
  /**
   * What loading the model will take, before it is loaded: RAM, and VRAM (`vramBytes`) on a
   * GPU, as node-llama-cpp estimates them. The residency's budgets count these.
   */
  estimate(): Promise<Estimate>;
  /** Loads the model (once; later calls share that load); `threads` as measured at an earlier load. */
  load(threads?: number): Promise<LoadResult>;
  /** Resolves when the runner answers; rejects past `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>;
  chat(request: ChatRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent>;
  complete(request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent>;
  countTokens(request: ChatRequest): Promise<number>;
  embed(request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult>;
  /** Frees the model and stops the runner; what still runs ends with `reason`. */
  close(reason?: CoreError): Promise<void>;
}

/**
 * Makes the runner of a model (started lazily: nothing runs before its first call).
 * `onStop`: to be called when the runner has stopped, whether by close() or by itself.
 */
export type RunnerFactory<R extends ModelRunner = ModelRunner> = (source: ModelSource, onStop: () => void) => R;

/** A timer of a Clock: whatever its setTimeout returned, for its clearTimeout. */
export type ClockTimer = unknown;

/** Time, as the residency reads it and waits for it. */
export interface Clock {
  /** epoch milliseconds: for what is shown (when a model loaded, when it will expire) */
  now(): number;
  /** milliseconds on a clock that never jumps: for durations, deadlines and least-recently-used order */
  monotonic(): number;
  /**
   * Calls `callback` once, `ms` from now. `unref`: the timer alone does not keep the
   * process alive (a keep-alive expiry must not hold a CLI open).
   */
  setTimeout(callback: () => void, ms: number, options?: { unref?: boolean }): ClockTimer;
  clearTimeout(timer: ClockTimer): void;
}

/** the longest delay Node's setTimeout takes as given (longer fires at once) */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock: Date.now, performance.now and Node's timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (callback, ms, { unref = false } = {}) => {
    const timer = setTimeout(callback, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
    if (unref) timer.unref();
    return timer;
  },
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};

/**
 * A runner kept started ahead of the next load (runner.ts's SpareRunner): what the
 * residency tells it. Started only when the residency says it is quiet (no load or unload
 * under way), so that it never slows a load.
 */
export interface SparePolicy {
  /** models come and go: from now on keep one */
  want(): void;
  /** a load ended (and may have taken it): start the next one at a quiet moment */
  refill(): void;
  /** the backend, from the spare (started now if none is up) */
  backend(): Promise<string>;
  close(): void;
}
