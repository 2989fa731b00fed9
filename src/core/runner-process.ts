/**
 * A model's runner: the child process in which one model lives and generates (see
 * runner.ts for why). It takes requests from its owner over IPC and answers with events;
 * the events of one moment (a batcher step) travel together as one message.
 */
import { chat, complete, countChatTokens } from "./generate.js";
import { embed } from "./embed.js";
import { Engine } from "./engine.js";
import { LoadedModel } from "./loaded-model.js";
import { estimate } from "./estimate.js";
import { Pace } from "./generation.js";
import { packEmbeddings, serializeError, type Estimate, type FromRunner, type LoadResult, type PackedEmbeddings, type ToRunner } from "./runner-protocol.js";
import type { CoreOptions, GenerationEvent, ModelSource } from "./types.js";

let source: ModelSource;
let options: CoreOptions;
let engine: Engine;
let loaded: Promise<LoadedModel> | undefined;
const running = new Map<number, AbortController>();

let outbox: FromRunner[] = [];
/**
 * The channel holds more than it should (process.send said so): nothing more is sent until
 * it has taken the last message, and generations wait (see flowing()) rather than pile their
 * events up here while the owner does not read.
 */
let backedUp = false;
/** generations waiting for the channel to take what it holds */
let drained: (() => void)[] = [];
function post(message: FromRunner): void {
  outbox.push(message);
  if (outbox.length === 1 && !backedUp) setImmediate(flush);
}
function flush(): void {
  if (backedUp || outbox.length === 0 || !process.connected) return;
  const messages = outbox;
  outbox = [];
  const ok = process.send!(messages.length === 1 ? messages[0] : { t: "batch", messages }, undefined, undefined, () => {
    // the channel took it (or is gone): what waited goes
    if (!backedUp) return;
    backedUp = false;
    const waiting = drained;
    drained = [];
    for (const go of waiting) go();
    flush();
  });
  if (!ok) backedUp = true;
}

/** Generations the owner paused (its queue of their events is full), until it resumes them or they are cancelled. */
const paused = new Map<number, { resumed: Promise<void>; resume: () => void }>();
/** each running generation's pace: paused here, it takes no tokens in the batcher either */
const paces = new Map<number, Pace>();
function pause(id: number): void {
  if (!running.has(id) || paused.has(id)) return;
  let resume!: () => void;
  const resumed = new Promise<void>((resolve) => { resume = resolve; });
  paused.set(id, { resumed, resume });
  paces.get(id)?.pause();
}
function resume(id: number): void {
  paces.get(id)?.resume();
  paused.get(id)?.resume();
  paused.delete(id);
}

/** Resolves when generation `id` may post its next event: not paused, and the channel not backed up. */
async function flowing(id: number): Promise<void> {
  for (;;) {
    const gate = paused.get(id);
    if (gate) await gate.resumed;
    else if (backedUp) await new Promise<void>((resolve) => drained.push(resolve));
    else return;
  }
}

function model(): Promise<LoadedModel> {
  loaded ??= LoadedModel.load(engine, source, options, () => void loaded?.then((m) => post({ t: "busy", busy: m.sequences.busy, waiting: m.sequences.waiting })));
  loaded.catch(() => { loaded = undefined; });
  return loaded;
}

/**
 * A generation's events, as the owner can take them: when it pauses the generation, or the
 * channel backs up, no more events are taken from it until it may go on. Paused by the
 * owner, the generation takes no tokens in the batcher (its pace); when the channel backs
 * up, it stops once it holds MAX_UNREAD_EVENTS events nobody took.
 */
async function stream(id: number, events: (m: LoadedModel, signal: AbortSignal, pace: Pace) => AsyncGenerator<GenerationEvent>): Promise<void> {
  const controller = new AbortController();
  const pace = new Pace();
  running.set(id, controller);
  paces.set(id, pace);
  try {
    for await (const event of events(await model(), controller.signal, pace)) {
      post({ t: "event", id, event });
      if (event.type !== "done" && (backedUp || paused.has(id))) await flowing(id);
    }
  } catch (error) {
    post({ t: "error", id, error: serializeError(error) });
  } finally {
    resume(id);
    running.delete(id);
    paces.delete(id);
  }
}

/** `needsModel` false: work that does not load the model (an estimate, a ping). */
async function answer(id: number, work: (m: LoadedModel, signal: AbortSignal) => Promise<number | PackedEmbeddings | LoadResult | Estimate>, needsModel = true): Promise<void> {
  const controller = new AbortController();
  running.set(id, controller);
  try {
    post({ t: "result", id, value: await work(needsModel ? await model() : (undefined as never), controller.signal) });
  } catch (error) {
    post({ t: "error", id, error: serializeError(error) });
  } finally {
    running.delete(id);
  }
}

/** llama.cpp is started before any model is known: a spare runner waits like this. */
async function init(message: Extract<ToRunner, { t: "init" }>): Promise<void> {
  ({ options } = message);
  engine = new Engine(options.gpu, options.threads, options.debug);
  try {
    post({ t: "ready", backend: await engine.backend() });
  } catch (error) {
    post({ t: "error", id: 0, error: serializeError(error) });
  }
}

process.on("message", (message: ToRunner) => {
  switch (message.t) {
    case "init": return void init(message);
    case "model":
      source = message.source;
      return;
    case "estimate": return void answer(message.id, async () => estimate(await engine.get(), source, options), false);
    case "load":
      if (message.threads !== undefined) options = { ...options, threads: message.threads };
      return void answer(message.id, async (m) => ({ contextSize: m.contextSize, threads: m.threads }));
    case "ping": return void answer(message.id, async () => 0, false);
    case "chat": return void stream(message.id, (m, signal, pace) => chat(m, message.request, signal, pace));
    case "complete": return void stream(message.id, (m, signal, pace) => complete(m, message.request, signal, pace));
    case "count": return void answer(message.id, async (m) => countChatTokens(m, message.request));
    case "embed": return void answer(message.id, async (m, signal) => packEmbeddings(await embed(m, message.request, signal)));
    case "cancel":
      running.get(message.id)?.abort();
      // a paused generation goes on to its end
      return resume(message.id);
    case "pause": return pause(message.id);
    case "resume": return resume(message.id);
    case "close": return void close();
  }
});

async function close(): Promise<void> {
  for (const controller of running.values()) controller.abort();
  for (const id of [...paused.keys()]) resume(id);
  await (await loaded?.catch(() => undefined))?.dispose().catch(() => undefined);
  await engine?.dispose().catch(() => undefined);
  // the last word goes whatever the channel holds
  backedUp = false;
  flush();
  process.disconnect();
}

// the owner coordinates every stop: Ctrl-C reaches the whole process group, and a runner
// dying on it would turn the owner's orderly cancel into an error
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => undefined);
// an owner gone without a word (killed): nothing is left to run for
process.on("disconnect", () => process.exit(0));
// its stderr is the owner's: a closed pipe there is no reason to die
process.stderr.on("error", () => undefined);
// a bug: say which kind (never the message, which may quote a request) and stop; the owner
// answers what was running with an error and starts a new runner when it is needed again
const fatal = (error: unknown) => {
  process.stderr.write(`mlxs: the runner of model ${source?.name ?? "?"} failed (${error instanceof Error ? error.name : typeof error}); it stops\n`);
  process.exit(70);
};
process.on("uncaughtException", fatal);
process.on("unhandledRejection", fatal);
