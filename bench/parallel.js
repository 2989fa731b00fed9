// How many sequences should run at once per model (--parallel)? Sends 4 concurrent chat
// requests of 64 tokens to the core with --parallel 1, 2 and 4 on the ~100 MB generated
// model and prints aggregate tokens/s and the median time to first token, median of 3.
//   node bench/parallel.js [--runs 3]
import { benchModel, median, table } from "./common.js";
import { InferenceCore } from "../dist/core/index.js";

const args = process.argv.slice(2);
const runs = args.includes("--runs") ? Number(args[args.indexOf("--runs") + 1]) : 3;
const clients = 4;
const tokens = 64;
const path = await benchModel();

async function burst(core) {
  const start = performance.now();
  const results = await Promise.all(Array.from({ length: clients }, async (_, i) => {
    let done;
    for await (const e of core.chat({ messages: [{ role: "user", content: `story number ${i}` }], temperature: 0, maxTokens: tokens })) if (e.type === "done") done = e;
    return done;
  }));
  const seconds = (performance.now() - start) / 1000;
  const generated = results.reduce((n, r) => n + r.usage.completionTokens, 0);
  return { tokensPerSecond: generated / seconds, ttftMs: median(results.map((r) => r.timings.ttftMs)) };
}

const rows = [["parallel", "aggregate tok/s", "vs parallel 1", "median ttft ms"]];
let base;
let threads;
for (const parallel of [1, 2, 4]) {
  // threads as mlxs chooses them by default: measured when the model loads
  const core = new InferenceCore([{ name: "bench", path }], { gpu: "cpu", ctxSize: 4096, parallel, queue: 16 });
  await core.load();
  threads = core.models()[0].threads;
  await burst(core);
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(await burst(core));
  await core.close();
  const tps = median(samples.map((s) => s.tokensPerSecond));
  base ??= tps;
  rows.push([parallel, tps.toFixed(1), (tps / base).toFixed(2), median(samples.map((s) => s.ttftMs)).toFixed(0)]);
}
console.log(`${clients} concurrent requests x ${tokens} tokens, threads=${threads} (measured), median of ${runs}`);
console.log(table(rows));
