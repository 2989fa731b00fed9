// The references of bench/lifecycle.js's cold start: node-llama-cpp itself, llama.cpp
// already started, loading MODEL with the context mlxs makes by default (4096 tokens x 4
// sequences) and producing one token, ROUNDS times, two ways:
//   chat: a chat message's first token the way node-llama-cpp's docs do it (a
//         LlamaChatSession, which finds the model's chat template, as mlxs must);
//   raw:  the first token of a bare prompt (no chat template: the floor).
// Prints {chatMs: [...], rawMs: [...], threads}.
//   node bench/lifecycle-direct.js MODEL ROUNDS
import { availableParallelism } from "node:os";
import { getLlama, LlamaChatSession } from "node-llama-cpp";

const [path, rounds] = [process.argv[2], Number(process.argv[3] ?? 5)];
const threads = availableParallelism();
const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, progressLogs: false, logLevel: "error" });

async function firstToken(chat) {
  const started = performance.now();
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: Math.min(4096, model.trainContextSize), sequences: 4, threads });
  const sequence = context.getSequence();
  let ms;
  if (chat) {
    const session = new LlamaChatSession({ contextSequence: sequence });
    await session.prompt("Hello", { maxTokens: 1, temperature: 0, onTextChunk: () => { ms ??= performance.now() - started; } });
    session.dispose();
  } else {
    const iterator = sequence.evaluate(model.tokenize("Hello"), { temperature: 0 })[Symbol.asyncIterator]();
    await iterator.next();
    ms = performance.now() - started;
    await iterator.return?.();
  }
  await context.dispose();
  await model.dispose();
  return ms;
}

const chatMs = [];
const rawMs = [];
// a first round unmeasured: it reads the file from disk into the page cache
await firstToken(true);
for (let i = 0; i < rounds; i++) {
  chatMs.push(await firstToken(true));
  rawMs.push(await firstToken(false));
}
console.log(JSON.stringify({ chatMs, rawMs, threads }));
await llama.dispose();
