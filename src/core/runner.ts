/**
 * A served model, running in a child process of its own (its runner, runner-process.ts):
 * the owner's side, with the same API as the model would have in this process.
 *
 * Why a process per model, as Ollama runs its models: node-llama-cpp runs each decode on
 * whichever libuv threadpool thread is free, and llama.cpp makes that thread one of its
 * compute threads. On some CPUs (an AMD EPYC, measured) successive decodes hopping between
 * threads cost half the speed; a threadpool of one thread (UV_THREADPOOL_SIZE=1) gives it
 * back, but in the serving process that single thread would also be SQLite's and the file
 * system's, and a long prompt would starve the audit log. In its own process the model
 * keeps one thread for all its decodes, HTTP and the audit writer never wait on it, and a
 * llama.cpp abort ends the runner, not the daemon: its requests fail, the next one starts
 * a new runner.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { deserializeError, type Estimate, type FromRunner, type LoadResult, type ToRunner } from "./runner-protocol.js";
import {
  CoreError, type ChatMessage, type ChatRequest, type CompletionRequest, type CoreOptions, type EmbeddingRequest, type EmbeddingResult,
  type GenerationEvent, type ModelSource,
} from "./types.js";

const RUNNER = fileURLToPath(new URL("./runner-process.js", import.meta.url));
/** how long a runner may take to free its model and leave when closed */
const CLOSE_TIMEOUT_MS = 10_000;

interface Pending {
  resolve(value: never): void;
  reject(error: CoreError): void;
}

/** The events of one generation, as they arrive. */
class EventStream {
  private readonly events: GenerationEvent[] = [];
  private failure?: CoreError;
  private wake?: () => void;
  private end!: () => void;
  /** resolves once the generation is over in the runner (its sequence is free again) */
  readonly over = new Promise<void>((resolve) => { this.end = resolve; });
  ended = false;

  push(event: GenerationEvent): void {
    this.events.push(event);
    if (event.type === "done") this.finish();
    this.wake?.();
  }

  fail(error: CoreError): void {
    this.failure = error;
    this.finish();
    this.wake?.();
  }

  private finish(): void {
    this.ended = true;
    this.end();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<GenerationEvent> {
    for (;;) {
      const event = this.events.shift();
      if (event) {
        yield event;
        if (event.type === "done") return;
        continue;
      }
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => { this.wake = resolve; });
      this.wake = undefined;
    }
  }
}

export class RunnerModel {
  private child?: ChildProcess;
  private started?: Promise<string>;
  private loading?: Promise<LoadResult>;
  private loaded?: LoadResult;
  private nextId = 1;
  private readonly calls = new Map<number, Pending>();
  private readonly streams = new Map<number, EventStream>();
  private busy = 0;
  private waiting = 0;
  /** the error that what is still running gets when close() stops the runner */
  private closing?: CoreError;

  /**
   * `onStop`: the runner ended, by close() or by a crash (its model is no longer loaded).
   * `spare`: a runner already started (SpareRunner) to take, rather than starting one.
   */
  constructor(readonly source: ModelSource, private readonly options: CoreOptions, private readonly onStop?: () => void, private spare?: StartedRunner) {}

  get name(): string { return this.source.name; }

  /** Its sequences generating now, and the requests waiting for one (as the runner last said). */
  queue(): { busy: number; waiting: number } {
    return { busy: this.busy, waiting: this.waiting };
  }

  /** The backend llama.cpp runs on (`llama.cpp/cpu` ...), starting the runner if need be. */
  backend(): Promise<string> {
    return this.start();
  }

  /** The process id of the runner, while it runs (for its memory). */
  get pid(): number | undefined { return this.child?.pid; }

  /** What loading the model will take in memory, asked of the runner before it loads. */
  async estimate(): Promise<Estimate> {
    await this.start();
    return this.call<Estimate>({ t: "estimate", id: this.nextId++ });
  }

  /** Resolves when the runner answers; rejects past `timeoutMs` (a stuck runner). */
  async ping(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new CoreError("timeout", "the runner did not answer")), timeoutMs); });
    try {
      await Promise.race([this.call<number>({ t: "ping", id: this.nextId++ }), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Loads the model now rather than at its first request; `threads` as measured at an earlier load. */
  load(threads?: number): Promise<LoadResult> {
    if (!this.loading) {
      this.loading = this.start().then(() => this.call<LoadResult>({ t: "load", id: this.nextId++, threads }));
      this.loading.then((result) => { this.loaded = result; }, () => { this.loading = undefined; });
    }
    return this.loading;
  }

  async *chat(request: ChatRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    yield* this.stream((id) => ({ t: "chat", id, request }), signal);
  }

  async *complete(request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    yield* this.stream((id) => ({ t: "complete", id, request }), signal);
  }

  async countTokens(request: ChatRequest): Promise<number> {
    await this.load();
    return this.call<number>({ t: "count", id: this.nextId++, request });
  }

  async embed(request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult> {
    await this.load();
    const id = this.nextId++;
    const onAbort = () => void this.send({ t: "cancel", id });
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await this.call<EmbeddingResult>({ t: "embed", id, request });
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Frees the model: the runner disposes of it and exits (or is killed if it will not).
   * What is still running ends with `reason` (by default, that the model was unloaded).
   */
  async close(reason = new CoreError("unloaded", "the model was unloaded while the request ran")): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.closing = reason;
    // what runs ends now, with the reason, not with the runner's own orderly cancel
    for (const stream of this.streams.values()) stream.fail(reason);
    for (const [id, call] of this.calls) if (id !== 0) call.reject(reason);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    if (!this.send({ t: "close" })) child.kill("SIGKILL");
    const timer = setTimeout(() => child.kill("SIGKILL"), CLOSE_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  private async *stream(message: (id: number) => ToRunner, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    await this.load();
    const id = this.nextId++;
    const events = new EventStream();
    this.streams.set(id, events);
    const cancel = () => void this.send({ t: "cancel", id });
    signal?.addEventListener("abort", cancel, { once: true });
    if (!this.send(message(id))) events.fail(new CoreError("internal", "the model's runner is not running"));
    if (signal?.aborted) cancel();
    try {
      yield* events;
    } finally {
      signal?.removeEventListener("abort", cancel);
      // a consumer that left early: the generation stops, and has freed its sequence
      // before this generator finishes
      if (!events.ended) {
        cancel();
        await events.over;
      }
      this.streams.delete(id);
    }
  }

  private start(): Promise<string> {
    if (!this.started) {
      const { child, ready } = this.spare ?? startRunner(this.options);
      this.spare = undefined;
      this.child = child;
      child.ref();
      child.channel?.ref();
      child.on("message", (message: FromRunner) => this.receive(message));
      child.on("exit", (code, signal) => this.exited(child, code, signal));
      this.started = ready;
      this.send({ t: "model", source: this.source });
    }
    return this.started;
  }

  private receive(message: FromRunner): void {
    switch (message.t) {
      case "batch": return message.messages.forEach((m) => this.receive(m));
      // startRunner() hears that one
      case "ready": return;
      case "busy":
        this.busy = message.busy;
        this.waiting = message.waiting;
        return;
      case "event": return this.streams.get(message.id)?.push(message.event);
      case "result": return this.settle(message.id, message.value);
      case "error": {
        const error = deserializeError(message.error);
        const stream = this.streams.get(message.id);
        if (stream) return stream.fail(error);
        const call = this.calls.get(message.id);
        this.calls.delete(message.id);
        return call?.reject(error);
      }
    }
  }

  private settle(id: number, value: unknown): void {
    const call = this.calls.get(id);
    this.calls.delete(id);
    call?.resolve(value as never);
  }

  /** The runner ended: by close(), or not (a crash): what it was doing fails, the next request starts a new one. */
  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.started = undefined;
    this.loading = undefined;
    this.loaded = undefined;
    this.busy = this.waiting = 0;
    const closing = this.closing;
    this.closing = undefined;
    const how = signal ?? `exit status ${code}`;
    if (!closing) process.stderr.write(`mlxs: the runner of model ${this.name} stopped (${how}); it starts again at the next request\n`);
    const error = closing ?? new CoreError("internal", `the model's runner stopped (${how})`);
    for (const call of this.calls.values()) call.reject(error);
    this.calls.clear();
    for (const stream of this.streams.values()) stream.fail(error);
    this.streams.clear();
    this.onStop?.();
  }

  private call<T>(message: ToRunner & { id: number }): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.calls.set(message.id, { resolve: resolve as (value: never) => void, reject });
      if (!this.send(message)) {
        this.calls.delete(message.id);
        reject(new CoreError("internal", "the model's runner is not running"));
      }
    });
  }

  /** False when there is no runner to send to (it just stopped). */
  private send(message: ToRunner): boolean {
    if (!this.child?.connected) return false;
    this.child.send(message);
    return true;
  }
}

/** A runner process with llama.cpp started in it and no model yet. */
export interface StartedRunner {
  child: ChildProcess;
  /** the backend (`llama.cpp/cpu` ...), once llama.cpp is up in it */
  ready: Promise<string>;
}

/** Forks a runner and starts llama.cpp in it; the model comes later (RunnerModel). */
export function startRunner(options: CoreOptions): StartedRunner {
  const child = fork(RUNNER, [], {
    // one libuv thread: every decode on the same thread (see above)
    env: { ...process.env, UV_THREADPOOL_SIZE: "1" },
    execArgv: [],
    serialization: "advanced",
    // stdout is the owner's (results); the runner never writes there
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  child.on("error", () => undefined);
  const ready = new Promise<string>((resolve, reject) => {
    const hear = (message: FromRunner): void => {
      if (message.t === "batch") return message.messages.forEach(hear);
      if (message.t === "ready") done(() => resolve(message.backend));
      else if (message.t === "error" && message.id === 0) done(() => reject(deserializeError(message.error)));
    };
    const exited = (code: number | null, signal: NodeJS.Signals | null) => done(() => reject(new CoreError("internal", `the model's runner stopped (${signal ?? `exit status ${code}`})`)));
    const done = (settle: () => void) => {
      child.off("message", hear);
      child.off("exit", exited);
      settle();
    };
    child.on("message", hear);
    child.on("exit", exited);
  });
  ready.catch(() => undefined);
  child.send({ t: "init", options } satisfies ToRunner);
  return { child, ready };
}

/** how often a wanted spare checks whether it may start (no load under way) */
const SPARE_CHECK_MS = 250;

/**
 * One runner kept started, with no model, so that the next load skips starting a process
 * and llama.cpp in it (about a second on a 2-core machine; bench/lifecycle.js). Wanted from
 * the first unload on (the daemon's models come and go: more loads will come), and started
 * only when no model is loading or unloading, so that it never slows a load. It costs one
 * idle process (about 80 MB resident, most of it llama.cpp's shared libraries) while it waits.
 */
export class SpareRunner {
  private spare?: StartedRunner;
  private timer?: NodeJS.Timeout;
  private wanted = false;
  private closed = false;

  /** `quiet`: whether it may start now */
  constructor(private readonly options: CoreOptions, private readonly quiet: () => boolean) {}

  /** The spare, if one is up (or starting). */
  take(): StartedRunner | undefined {
    const spare = this.spare;
    this.spare = undefined;
    return spare?.child.connected ? spare : undefined;
  }

  /** From now on, keep a spare. */
  want(): void {
    this.wanted = true;
    this.refill();
  }

  /** The backend, from the spare (started now if none is up); from now on a spare is kept. */
  backend(): Promise<string> {
    this.wanted = true;
    if (!this.spare) this.start();
    const { child, ready } = this.spare!;
    // awaited: held like a runner in use until it answers (a waiting spare holds nothing open)
    child.ref();
    child.channel?.ref();
    return ready.finally(() => {
      // still waiting as the spare (not taken by a load meanwhile)
      if (this.spare?.child !== child) return;
      child.unref();
      child.channel?.unref();
    });
  }

  /** If a spare is wanted and none is up, start one: now if it may, else at the next quiet moment. */
  refill(): void {
    if (!this.wanted || this.closed || this.spare) return;
    if (this.quiet()) return this.start();
    this.timer ??= setInterval(() => { if (this.quiet()) this.start(); }, SPARE_CHECK_MS);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    // a runner leaves when its owner disconnects
    if (this.spare?.child.connected) this.spare.child.disconnect();
    this.spare = undefined;
  }

  private start(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    const spare = startRunner(this.options);
    // while it waits it holds nothing open: the daemon may exit without it
    spare.child.unref();
    spare.child.channel?.unref();
    spare.child.once("exit", () => { if (this.spare === spare) this.spare = undefined; });
    this.spare = spare;
  }
}
