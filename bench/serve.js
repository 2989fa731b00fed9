// mlxs serve against the core called directly (issue 4), on the ~100 MB generated model:
//   tokens/s through HTTP vs the core at concurrency 1 and 4 (goal >= 0.97x),
//   added time to first token (goal <= 2 ms median),
//   requests/s of a 1-token completion with the audit log on and off (goal: audit <= 2%).
// Servers and the core take turns, so they never compete for the cores.
//   node bench/serve.js [--rounds 3] [--only tokens1|tokens4|ttft|audit]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { InferenceCore } from "../dist/core/index.js";
import { benchModel, median, startServe, table, requestsPerSecond } from "./common.js";

const args = process.argv.slice(2);
const ROUNDS = args.includes("--rounds") ? Number(args[args.indexOf("--rounds") + 1]) : 3;
const ONLY = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
const wants = (measure) => ONLY === undefined || ONLY === measure;
const reproduce = (measure) => `node bench/serve.js --rounds ${ROUNDS} --only ${measure}`;
const model = await benchModel();
// threads as the core measures them by default (at load), unless --threads N; the servers
// get the same count, so that only HTTP differs
const threadsFlag = args.includes("--threads") ? Number(args[args.indexOf("--threads") + 1]) : undefined;
let threads;
const home = mkdtempSync(join(tmpdir(), "mlxs-bench-serve-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));

const startServer = (extra) => startServe(["--model", model, "--threads", String(threads), "--parallel", "4", "--gpu", "cpu", ...extra], home);

const messages = (i) => [{ role: "user", content: `Tell a long story, number ${i}.` }];

async function viaHttp(url, concurrency, tokens) {
  const started = performance.now();
  const counts = await Promise.all(Array.from({ length: concurrency }, async (_, i) => {
    const res = await request(`${url}/v1/chat/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: messages(i), max_tokens: tokens, temperature: 0 }),
    });
    return (await res.body.json()).usage.completion_tokens;
  }));
  return counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000);
}

async function viaCore(core, concurrency, tokens) {
  const started = performance.now();
  const counts = await Promise.all(Array.from({ length: concurrency }, async (_, i) => {
    let n = 0;
    for await (const e of core.chat({ messages: messages(i), maxTokens: tokens, temperature: 0 })) if (e.type === "done") n = e.usage.completionTokens;
    return n;
  }));
  return counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000);
}

async function ttftHttp(url) {
  const started = performance.now();
  const res = await request(`${url}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: messages(0), max_tokens: 2, temperature: 0, stream: true }),
  });
  let first;
  for await (const chunk of res.body) if (first === undefined && /"content":"[^"]/.test(String(chunk))) first = performance.now() - started;
  return first;
}

async function ttftCore(core) {
  const started = performance.now();
  let first;
  for await (const e of core.chat({ messages: messages(0), maxTokens: 2, temperature: 0 })) if (e.type === "delta" && first === undefined) first = performance.now() - started;
  return first;
}

const core = new InferenceCore([{ name: "bench", path: model }], { gpu: "cpu", threads: threadsFlag, ctxSize: 4096, parallel: 4, queue: 64 });
await core.load();
threads = core.models()[0].threads;
const audited = await startServer([]);
const unaudited = await startServer(["--no-audit"]);
const samples = { http1: [], core1: [], http4: [], core4: [], ttftHttp: [], ttftCore: [], rpsOn: [], rpsOff: [] };
// warm-up
await viaHttp(audited.url, 1, 8); await viaCore(core, 1, 8); await requestsPerSecond(unaudited.url, 8); await requestsPerSecond(audited.url, 8);
for (let round = 0; round < ROUNDS; round++) {
  process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
  // alternate which side goes first, so drift on a shared machine hits both alike
  const pair = async (a, b) => { if (round % 2) { await b(); await a(); } else { await a(); await b(); } };
  if (wants("tokens1")) await pair(async () => samples.http1.push(await viaHttp(audited.url, 1, 128)), async () => samples.core1.push(await viaCore(core, 1, 128)));
  if (wants("tokens4")) await pair(async () => samples.http4.push(await viaHttp(audited.url, 4, 64)), async () => samples.core4.push(await viaCore(core, 4, 64)));
  for (let i = 0; i < 10 && wants("ttft"); i++) {
    await pair(async () => samples.ttftHttp.push(await ttftHttp(audited.url)), async () => samples.ttftCore.push(await ttftCore(core)));
  }
  if (!wants("audit")) continue;
  if (round % 2) { samples.rpsOn.push(await requestsPerSecond(audited.url)); samples.rpsOff.push(await requestsPerSecond(unaudited.url)); }
  else { samples.rpsOff.push(await requestsPerSecond(unaudited.url)); samples.rpsOn.push(await requestsPerSecond(audited.url)); }
}
await audited.stop();
await unaudited.stop();
await core.close();

const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
const rows = [["measure", "serve", "core / baseline", "ratio or cost", "goal", "verdict", "reproduce"]];
if (wants("tokens1")) rows.push(["tok/s, 1 client", m.http1.toFixed(1), m.core1.toFixed(1), `${(m.http1 / m.core1).toFixed(3)}x`, ">= 0.97x", m.http1 / m.core1 >= 0.97 ? "met" : "missed", reproduce("tokens1")]);
if (wants("tokens4")) rows.push(["tok/s, 4 clients", m.http4.toFixed(1), m.core4.toFixed(1), `${(m.http4 / m.core4).toFixed(3)}x`, ">= 0.97x", m.http4 / m.core4 >= 0.97 ? "met" : "missed", reproduce("tokens4")]);
if (wants("ttft")) {
  const added = m.ttftHttp - m.ttftCore;
  rows.push(["time to first token, ms", m.ttftHttp.toFixed(2), m.ttftCore.toFixed(2), `+${added.toFixed(2)} ms`, "<= 2 ms", added <= 2 ? "met" : "missed", reproduce("ttft")]);
}
if (wants("audit")) {
  const cost = (1 - m.rpsOn / m.rpsOff) * 100;
  rows.push(["1-token completions/s, audit on vs off", m.rpsOn.toFixed(1), m.rpsOff.toFixed(1), `${cost.toFixed(1)}% cost`, "<= 2%", cost <= 2 ? "met" : "missed", reproduce("audit")]);
}
console.log(`mlxs serve vs the core called directly, ~100 MB generated model, threads=${threads}${threadsFlag ? "" : " (measured)"}, parallel 4, medians of ${ROUNDS} rounds (TTFT: ${samples.ttftHttp.length} requests each)`);
console.log(table(rows));
