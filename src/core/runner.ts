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
import { deserializeError, unpackEmbeddings, type Estimate, type FromRunner, type LoadResult, type PackedEmbeddings, type ToRunner } from "./runner-protocol.js";
import {
  CoreError, type ChatRequest, type CompletionRequest, type CoreOptions, type EmbeddingRequest, type EmbeddingResult,
  type GenerationEvent, type ModelSource,
} from "./types.js";

const RUNNER = fileURLToPath(new URL("./runner-process.js", import.meta.url));

/**
 * The deadlines of the calls across the process boundary, and of the watchdog. Every call
 * has one: a runner that misses it is taken for hung and killed (SIGKILL; a stopped process
 * dies of it too), what it held ends with a `timeout` error (504, or an error event
 * mid-stream), and the owner's onStop frees its model, which the next request loads again
 * in a fresh runner. Constructor options; tests shorten them.
 */
export interface RunnerDeadlines {
  /** llama.cpp starting in a new runner */
  startMs: number;
  /** node-llama-cpp's estimate of what a load takes (it reads the file's header) */
  estimateMs: number;
  /** a load: the weights read, the contexts made (a big model from a slow disk takes minutes) */
  loadMs: number;
  /** the tokens of a conversation counted */
  countMs: number;
  /** one embedding request, however many inputs (a hung runner is found sooner, by the watchdog) */
  embedMs: number;
  /** the runner freeing its model and leaving when closed (it is killed past it) */
  closeMs: number;
  /** while work is in flight, how often the watchdog pings the runner */
  pingIntervalMs: number;
  /** a watchdog's ping unanswered this long: the runner is hung */
  pingTimeoutMs: number;
  /**
   * A generation or embedding cancelled (its client left, the request timed out): how long
   * the runner gets to show it heard (to answer a ping sent with the cancel, or to end the
   * work). Short, since a request is past its deadline: a runner's event loop answers in
   * milliseconds while llama.cpp computes on another thread.
   */
  cancelAnswerMs: number;
  /** a cancelled generation or embedding, in a runner that answers: how long it gets to end */
  cancelEndMs: number;
  /** events of one generation queued here, unread, before the runner is told to pause it (resumed at half) */
  maxQueuedEvents: number;
}

export const RUNNER_DEADLINES: Readonly<RunnerDeadlines> = {
  startMs: 120_000,
  estimateMs: 60_000,
  loadMs: 600_000,
  countMs: 60_000,
  embedMs: 600_000,
  closeMs: 10_000,
  pingIntervalMs: 1_000,
  pingTimeoutMs: 5_000,
  cancelAnswerMs: 750,
  cancelEndMs: 60_000,
  maxQueuedEvents: 256,
};

const seconds = (ms: number) => `${Number((ms / 1000).toFixed(3))} s`;

interface Pending {
  resolve(value: never): void;
  reject(error: CoreError): void;
  timer?: NodeJS.Timeout;
  /**
   * work the watchdog's pings watch over (a count, an embedding): not a ping, nor an
   * estimate or a load, which have deadlines of their own and during which the runner's
   * event loop is busy at moments (over 400 ms measured on a loaded 2-core machine)
   */
  watched: boolean;
  /** cancelled by its caller: ends as cancelled if the runner is stopped before it says so */
  cancelled?: boolean;
}

/**
 * The events of one generation, as they arrive, up to a bound: past `limit` unread, the
 * runner is told to pause the generation (`flow.pause`), and to go on once half are read.
 */
class EventStream {
  private readonly events: GenerationEvent[] = [];
  private failure?: CoreError;
  private wake?: () => void;
  private end!: () => void;
  /** resolves once the generation is over in the runner (its sequence is free again) */
  readonly over = new Promise<void>((resolve) => { this.end = resolve; });
  ended = false;
  /** its consumer cancelled it, and the runner was told */
  cancelled = false;
  private paused = false;
  // what a cancelled generation's end says if the runner can no longer say it
  private readonly startedAt = performance.now();
  private firstAt?: number;
  private opening?: Extract<GenerationEvent, { type: "start" }>;
  private text = "";
  private pieces = 0;

  constructor(private readonly model: string, private readonly limit: number, private readonly flow: { pause(): void; resume(): void }) {}

  push(event: GenerationEvent): void {
    if (this.ended) return;
    this.note(event);
    this.events.push(event);
    if (event.type === "done") this.finish();
    else if (!this.paused && !this.cancelled && this.events.length >= this.limit) {
      this.paused = true;
      this.flow.pause();
    }
    this.wake?.();
  }

  fail(error: CoreError): void {
    if (this.ended) return;
    this.failure = error;
    this.finish();
    this.wake?.();
  }

  /**
   * The runner is gone (killed, crashed): a generation its consumer had cancelled ends as a
   * cancelled one would have, with what it had sent (its completion tokens counted as the
   * pieces of text that came, a lower bound); any other fails with `error`.
   */
  stopped(error: CoreError): void {
    if (!this.cancelled) return this.fail(error);
    const now = performance.now();
    this.push({
      type: "done",
      model: this.model,
      text: this.text,
      finishReason: "cancelled",
      usage: { promptTokens: this.opening?.promptTokens ?? 0, completionTokens: this.pieces, cachedPromptTokens: this.opening?.cachedPromptTokens ?? 0 },
      timings: { queueMs: 0, ttftMs: (this.firstAt ?? now) - this.startedAt, totalMs: now - this.startedAt, tokensPerSecond: 0 },
    });
  }

  private note(event: GenerationEvent): void {
    if (event.type === "start") this.opening = event;
    else if (event.type === "delta" || event.type === "tool_arguments") {
      this.firstAt ??= performance.now();
      this.pieces++;
      if (event.type === "delta") this.text += event.text;
    }
  }

  private finish(): void {
    this.ended = true;
    this.end();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<GenerationEvent> {
    for (;;) {
      const event = this.events.shift();
      if (event) {
        if (this.paused && !this.ended && this.events.length <= this.limit / 2) {
          this.paused = false;
          this.flow.resume();
        }
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
  private nextId = 1;
  private readonly calls = new Map<number, Pending>();
  private readonly streams = new Map<number, EventStream>();
  private busy = 0;
  private waiting = 0;
  /** the error that what is still running gets when close() stops the runner */
  private closing?: CoreError;
  private readonly deadlines: RunnerDeadlines;
  /** pings the runner while work is in flight */
  private watchdog?: NodeJS.Timeout;
  /** the watchdog's ping is out */
  private pinging = false;

  /**
   * `onStop`: the runner ended, by close(), by a crash, or killed as hung (its model is no longer loaded).
   * `spare`: a runner already started (SpareRunner) to take, rather than starting one.
   * `deadlines`: any of RUNNER_DEADLINES, shortened or lengthened.
   */
  constructor(
    readonly source: ModelSource,
    private readonly options: CoreOptions,
    private readonly onStop?: () => void,
    private spare?: StartedRunner,
    deadlines: Partial<RunnerDeadlines> = {},
  ) {
    this.deadlines = { ...RUNNER_DEADLINES, ...deadlines };
  }

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
    return this.call<Estimate>({ t: "estimate", id: this.nextId++ }, this.deadlines.estimateMs, "its estimate of the load", false);
  }

  /** Resolves when the runner answers; rejects past `timeoutMs` (a stuck runner). Only says: the caller decides. */
  async ping(timeoutMs: number): Promise<void> {
    await this.call<number>({ t: "ping", id: this.nextId++ }, timeoutMs);
  }

  /** Loads the model now rather than at its first request; `threads` as measured at an earlier load. */
  load(threads?: number): Promise<LoadResult> {
    if (!this.loading) {
      this.loading = this.start().then(() => this.call<LoadResult>({ t: "load", id: this.nextId++, threads }, this.deadlines.loadMs, "the load of its model", false));
      this.loading.catch(() => { this.loading = undefined; });
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
    return this.call<number>({ t: "count", id: this.nextId++, request }, this.deadlines.countMs, "a count of tokens");
  }

  async embed(request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult> {
    await this.load();
    const id = this.nextId++;
    const answered = this.call<PackedEmbeddings>({ t: "embed", id, request }, this.deadlines.embedMs, "an embedding request");
    const onAbort = () => {
      const call = this.calls.get(id);
      if (!call || call.cancelled) return;
      call.cancelled = true;
      this.send({ t: "cancel", id });
      this.expectEnd(() => !this.calls.has(id), answered, "a cancelled embedding request");
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    try {
      return unpackEmbeddings(await answered);
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
    for (const call of this.calls.values()) {
      clearTimeout(call.timer);
      call.reject(reason);
    }
    this.calls.clear();
    const exited = new Promise((resolve) => child.once("exit", resolve));
    if (!this.send({ t: "close" })) child.kill("SIGKILL");
    const timer = setTimeout(() => child.kill("SIGKILL"), this.deadlines.closeMs);
    await exited;
    clearTimeout(timer);
  }

  private async *stream(message: (id: number) => ToRunner, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    await this.load();
    const id = this.nextId++;
    const events = new EventStream(this.name, this.deadlines.maxQueuedEvents, {
      pause: () => void this.send({ t: "pause", id }),
      resume: () => void this.send({ t: "resume", id }),
    });
    this.streams.set(id, events);
    const cancel = () => {
      if (events.ended || events.cancelled) return;
      events.cancelled = true;
      this.send({ t: "cancel", id });
      this.expectEnd(() => events.ended, events.over, "a cancelled generation");
    };
    signal?.addEventListener("abort", cancel, { once: true });
    if (!this.send(message(id))) events.fail(new CoreError("internal", "the model's runner is not running"));
    else this.watch();
    if (signal?.aborted) cancel();
    try {
      yield* events;
    } finally {
      signal?.removeEventListener("abort", cancel);
      // a consumer that left early: the generation stops, and has freed its sequence
      // before this generator finishes (or the runner, hung, is killed: expectEnd)
      if (!events.ended) {
        cancel();
        await events.over;
      }
      this.streams.delete(id);
    }
  }

  /**
   * After a cancel: the runner must show within cancelAnswerMs that it heard (a ping sent
   * behind the cancel comes back, or the work ends), and end the work within cancelEndMs;
   * a runner that does neither is killed, and the work ends with it.
   */
  private expectEnd(over: () => boolean, ended: Promise<unknown>, what: string): void {
    const child = this.child;
    if (!child) return;
    const { cancelAnswerMs, cancelEndMs } = this.deadlines;
    let timer: NodeJS.Timeout | undefined;
    void ended.catch(() => undefined).finally(() => clearTimeout(timer));
    this.call<number>({ t: "ping", id: this.nextId++ }, cancelAnswerMs).then(() => {
      if (over() || this.child !== child) return;
      timer = setTimeout(() => { if (!over()) this.kill(child, `did not end ${what} within ${seconds(cancelEndMs)}`); }, Math.max(0, cancelEndMs - cancelAnswerMs));
      timer.unref();
    }, () => {
      if (!over()) this.kill(child, `did not answer within ${seconds(cancelAnswerMs)} of a cancel`);
    });
  }

  /** While work is in flight, the watchdog pings the runner: one that misses a ping is killed. */
  private watch(): void {
    if (this.watchdog || !this.child) return;
    this.watchdog = setInterval(() => {
      const child = this.child;
      if (!child || !this.working()) {
        clearInterval(this.watchdog);
        this.watchdog = undefined;
        return;
      }
      if (this.pinging) return;
      this.pinging = true;
      const { pingTimeoutMs } = this.deadlines;
      this.call<number>({ t: "ping", id: this.nextId++ }, pingTimeoutMs)
        .catch(() => this.kill(child, `did not answer a ping within ${seconds(pingTimeoutMs)}`))
        .finally(() => { this.pinging = false; });
    }, this.deadlines.pingIntervalMs);
    this.watchdog.unref();
  }

  /** Work in flight: a count, an embedding, or a generation not over. */
  private working(): boolean {
    for (const call of this.calls.values()) if (call.watched) return true;
    for (const stream of this.streams.values()) if (!stream.ended) return true;
    return false;
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
      const { startMs } = this.deadlines;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          this.kill(child, `did not start llama.cpp within ${seconds(startMs)}`);
          reject(new CoreError("timeout", `the model's runner did not start within ${seconds(startMs)}`));
        }, startMs);
        timer.unref();
      });
      late.catch(() => undefined);
      this.started = Promise.race([ready, late]).finally(() => clearTimeout(timer));
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
      case "result": return this.take(message.id)?.resolve(message.value as never);
      case "error": {
        const error = deserializeError(message.error);
        const stream = this.streams.get(message.id);
        if (stream) return stream.fail(error);
        return this.take(message.id)?.reject(error);
      }
    }
  }

  /** The call `id`, no longer pending. */
  private take(id: number): Pending | undefined {
    const call = this.calls.get(id);
    this.calls.delete(id);
    clearTimeout(call?.timer);
    return call;
  }

  /** The runner ended: by close(), or not (a crash): what it was doing fails, the next request starts a new one. */
  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    const closing = this.closing;
    const how = signal ?? `exit status ${code}`;
    if (!closing) process.stderr.write(`mlxs: the runner of model ${this.name} stopped (${how}); it starts again at the next request\n`);
    this.detach(closing ?? new CoreError("internal", `the model's runner stopped (${how})`));
  }

  /** A runner that missed a deadline: killed, and taken for stopped now (a process in uninterruptible sleep may take its time to die). */
  private kill(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    process.stderr.write(`mlxs: the runner of model ${this.name} ${why}; it is killed, and starts again at the next request\n`);
    this.detach(new CoreError("timeout", `the model's runner ${why}; it was stopped, and starts again at the next request`));
    child.kill("SIGKILL");
  }

  /** The runner is gone: what it held ends with `error` (what was cancelled, as cancelled), the owner hears of it. */
  private detach(error: CoreError): void {
    this.child = undefined;
    this.started = undefined;
    this.loading = undefined;
    this.busy = this.waiting = 0;
    this.closing = undefined;
    clearInterval(this.watchdog);
    this.watchdog = undefined;
    this.pinging = false;
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const call of calls) {
      clearTimeout(call.timer);
      call.reject(call.cancelled ? new CoreError("cancelled", "the request was cancelled") : error);
    }
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const stream of streams) stream.stopped(error);
    this.onStop?.();
  }

  /**
   * Sends a call and waits for its answer, for up to `timeoutMs`. Past it, a call that says
   * `what` it is (work) finds the runner hung: it is killed, and the call fails with what it
   * held; a ping just fails, and leaves nothing behind. `watched`: the watchdog pings the
   * runner while it runs.
   */
  private call<T>(message: ToRunner & { id: number }, timeoutMs: number, what?: string, watched = what !== undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const { id } = message;
      const call: Pending = { resolve: resolve as (value: never) => void, reject, watched };
      this.calls.set(id, call);
      if (!this.send(message)) {
        this.calls.delete(id);
        return reject(new CoreError("internal", "the model's runner is not running"));
      }
      const child = this.child!;
      call.timer = setTimeout(() => {
        // an answer may be waiting, unread, behind a busy moment of this process: it is
        // read (the poll phase) before setImmediate's callback runs
        setImmediate(() => {
          if (this.calls.get(id) !== call) return;
          if (what !== undefined) return this.kill(child, `did not answer ${what} within ${seconds(timeoutMs)}`);
          this.take(id);
          reject(new CoreError("timeout", "the runner did not answer"));
        });
      }, timeoutMs);
      call.timer.unref();
      if (watched) this.watch();
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
