// Tokens/s of the mlxs core against node-llama-cpp called directly: the same generated
// ~100 MB model, the same threads, 256 tokens at temperature 0, runs interleaved, median
// of 5. Goal (issue 2): the core costs at most 3%. Each thread count runs in a process of
// its own, since llama.cpp's thread pool is per process.
//   node bench/core.js [--runs 5] [--tokens 256] [--threads N (only this thread count)]
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { benchModel, median, table } from "./common.js";

const args = process.argv.slice(2);
const flag = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : fallback; };
const runs = flag("--runs", 5);
const tokens = flag("--tokens", 256);
const onlyThreads = flag("--threads", undefined);

const messages = [{ role: "user", content: "Write a long story about the sea and the mountain." }];
const sampling = { temperature: 0, topK: 40, topP: 0.95, minP: 0.05 };

/** One thread count: returns tokens/s samples of both ways, interleaved. */
async function measure(threads) {
  const path = await benchModel();
  const { getLlama, LlamaChat, LlamaLogLevel } = await import("node-llama-cpp");
  const { InferenceCore } = await import("../dist/core/index.js");
  const { toChatHistory } = await import("../dist/core/generate.js");

  // direct: what a user of node-llama-cpp would write for the same job
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 4096, sequences: 1, threads });
  const sequence = context.getSequence();
  const direct = async () => {
    const chat = new LlamaChat({ contextSequence: sequence, autoDisposeSequence: false });
    let count = 0;
    const start = performance.now();
    await chat.generateResponse(toChatHistory(messages), { ...sampling, maxTokens: tokens, repeatPenalty: false, onToken: (t) => { count += t.length; } });
    const seconds = (performance.now() - start) / 1000;
    chat.dispose({ disposeSequence: false });
    return count / seconds;
  };

  const core = new InferenceCore([{ name: "bench", path }], { gpu: "cpu", threads, ctxSize: 4096, parallel: 1, queue: 1 });
  await core.load();
  const viaCore = async () => {
    let count = 0;
    const start = performance.now();
    for await (const event of core.chat({ messages, ...sampling, maxTokens: tokens })) if (event.type === "done") count = event.usage.completionTokens;
    return count / ((performance.now() - start) / 1000);
  };

  await direct();
  await viaCore();
  const samples = { direct: [], core: [] };
  for (let i = 0; i < runs; i++) {
    // alternate which goes first, so drift on a shared machine hits both alike
    const order = i % 2 ? [["core", viaCore], ["direct", direct]] : [["direct", direct], ["core", viaCore]];
    for (const [name, run] of order) samples[name].push(await run());
  }
  await core.close();
  return samples;
}

const child = args.indexOf("--child");
if (child >= 0) {
  process.stdout.write(JSON.stringify(await measure(Number(args[child + 1]))));
} else {
  await benchModel();
  const counts = onlyThreads ? [onlyThreads] : [1, 2];
  const rows = [["threads", "direct tok/s", "core tok/s", "core/direct", "overhead", "goal <= 3%", "reproduce"]];
  for (const threads of counts) {
    process.stderr.write(`measuring threads=${threads} (${runs} runs x ${tokens} tokens each way) ...\n`);
    const result = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", String(threads), "--runs", String(runs), "--tokens", String(tokens)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    if (result.status !== 0) throw new Error(`threads=${threads} failed`);
    const { direct, core } = JSON.parse(result.stdout);
    const d = median(direct);
    const c = median(core);
    const overhead = (1 - c / d) * 100;
    rows.push([threads, d.toFixed(1), c.toFixed(1), (c / d).toFixed(3), `${overhead.toFixed(1)}%`, overhead <= 3 ? "met" : "missed", `node bench/core.js --threads ${threads}`]);
  }
  console.log(`mlxs core vs node-llama-cpp direct: ${tokens} tokens, median of ${runs}, ~100 MB generated model, CPU`);
  console.log(table(rows));
}
