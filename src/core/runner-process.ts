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
import { serializeError, type Estimate, type FromRunner, type LoadResult, type ToRunner } from "./runner-protocol.js";
import type { CoreOptions, EmbeddingResult, GenerationEvent, ModelSource } from "./types.js";

let source: ModelSource;
let options: CoreOptions;
let engine: Engine;
let loaded: Promise<LoadedModel> | undefined;
const running = new Map<number, AbortController>();

let outbox: FromRunner[] = [];
function post(message: FromRunner): void {
  outbox.push(message);
  if (outbox.length === 1) setImmediate(flush);
}
function flush(): void {
  const messages = outbox;
  outbox = [];
  if (messages.length > 0 && process.connected) process.send!(messages.length === 1 ? messages[0] : { t: "batch", messages });
}

function model(): Promise<LoadedModel> {
  loaded ??= LoadedModel.load(engine, source, options, () => void loaded?.then((m) => post({ t: "busy", busy: m.sequences.busy, waiting: m.sequences.waiting })));
  loaded.catch(() => { loaded = undefined; });
  return loaded;
}

async function stream(id: number, events: (m: LoadedModel, signal: AbortSignal) => AsyncGenerator<GenerationEvent>): Promise<void> {
  const controller = new AbortController();
  running.set(id, controller);
  try {
    for await (const event of events(await model(), controller.signal)) post({ t: "event", id, event });
  } catch (error) {
    post({ t: "error", id, error: serializeError(error) });
  } finally {
    running.delete(id);
  }
}

/** `needsModel` false: work that does not load the model (an estimate, a ping). */
async function answer(id: number, work: (m: LoadedModel, signal: AbortSignal) => Promise<number | EmbeddingResult | LoadResult | Estimate>, needsModel = true): Promise<void> {
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
    case "chat": return void stream(message.id, (m, signal) => chat(m, message.request, signal));
    case "complete": return void stream(message.id, (m, signal) => complete(m, message.request, signal));
    case "count": return void answer(message.id, async (m) => countChatTokens(m, message.request));
    case "embed": return void answer(message.id, (m, signal) => embed(m, message.request, signal));
    case "cancel": return running.get(message.id)?.abort();
    case "close": return void close();
  }
});

async function close(): Promise<void> {
  for (const controller of running.values()) controller.abort();
  await (await loaded?.catch(() => undefined))?.dispose().catch(() => undefined);
  await engine?.dispose().catch(() => undefined);
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
