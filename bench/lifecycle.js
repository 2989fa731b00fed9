// Models on demand (issue 14), through mlxs serve on generated models:
//   churn: 3 models behind --max-loaded 1, requests round-robin (every one a load): errors
//     (goal 0), answers equal to each model's own (from a daemon that keeps all three),
//     memory after the run against after the first cycle (goal within 10%);
//   cold: an unloaded ~100 MB model, request sent -> first token, against node-llama-cpp
//     loading the same model and producing one token directly (goal <= 1.2x);
//   beside: time to first token of a loaded model while another loads, against the same
//     daemon idle (goal within 10%). Idle and loading requests take turns.
//   node bench/lifecycle.js [--requests 300] [--rounds 7] [--only churn|cold|beside]
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { BENCH_MODEL, writeTinyModel } from "../dist/core/gguf-writer.js";
import { benchModel, median, startServe, table } from "./common.js";

const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const REQUESTS = option("--requests", 300);
const ROUNDS = option("--rounds", 7);
const ONLY = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
const wants = (measure) => ONLY === undefined || ONLY === measure;
const reproduce = (measure) => `node bench/lifecycle.js --requests ${REQUESTS} --rounds ${ROUNDS} --only ${measure}`;
const home = mkdtempSync(join(tmpdir(), "mlxs-bench-lifecycle-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));
const dir = join(home, "models");
const log = (line) => process.stderr.write(`${line}\n`);

// three models of different sizes and weights, so that each answers in its own words
const CHURN = [
  { name: "small", spec: { ...BENCH_MODEL, embeddingLength: 256, blockCount: 2, feedForwardLength: 512, seed: 11 } },
  { name: "medium", spec: { ...BENCH_MODEL, embeddingLength: 384, blockCount: 3, feedForwardLength: 1024, seed: 12 } },
  { name: "large", spec: { ...BENCH_MODEL, embeddingLength: 512, blockCount: 4, feedForwardLength: 1536, seed: 13 } },
];
for (const { name, spec } of CHURN) await writeTinyModel(join(dir, `${name}.gguf`), spec);
const big = await benchModel();
const COMMON = ["--gpu", "cpu", "--parallel", "1", "--ctx-size", "512"];

async function post(url, body) {
  const res = await request(url, { method: "POST", headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await res.body.json();
  return { status: res.statusCode, answer };
}
const ask = (url, model) => post(`${url}/v1/chat/completions`, { model, messages: [{ role: "user", content: "Name three rivers." }], max_tokens: 12, temperature: 0 });

/** Client-side time from sending a streamed request to its first token, ms. */
async function firstToken(url, model) {
  const started = performance.now();
  const res = await request(`${url}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "Hello" }], max_tokens: 1, temperature: 0, stream: true }),
  });
  if (res.statusCode !== 200) throw new Error(`${model}: ${res.statusCode} ${await res.body.text()}`);
  let ms;
  let text = "";
  for await (const chunk of res.body) {
    text += chunk;
    if (ms === undefined && /"content":"/.test(text)) ms = performance.now() - started;
  }
  // the server's own account: how long the request waited before its model took it
  queued.push(Number(/"queue_ms":([\d.]+)/.exec(text)?.[1] ?? NaN));
  return ms;
}
let queued = [];

/** Waits for a spare runner to finish starting (it takes about a second here). */
const settled = () => new Promise((resolve) => setTimeout(resolve, 4000));

/** Resident memory of a process and every process below it, bytes. */
function treeRss(pid) {
  const children = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch { /* gone meanwhile */ }
  }
  const rss = (p) => {
    try { return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, "utf8"))[1]) * 1024; } catch { return 0; }
  };
  const walk = (p) => rss(p) + (children.get(p) ?? []).reduce((sum, c) => sum + walk(c), 0);
  return { self: rss(pid), total: walk(pid) };
}
const mb = (bytes) => (bytes / 2 ** 20).toFixed(1);
const rows = [["measure", "mlxs", "reference", "ratio", "goal", "verdict", "reproduce"]];

if (wants("churn")) {
  // each model's own answer, from a daemon that keeps all three loaded
  const keeper = await startServe(["--models-dir", dir, "--model", "small", "--model", "medium", "--model", "large", "--max-loaded", "0", ...COMMON, "--no-audit"], join(home, "keeper"));
  const expected = {};
  for (const { name } of CHURN) expected[name] = (await ask(keeper.url, name)).answer.choices[0].message.content;
  await keeper.stop();
  if (new Set(Object.values(expected)).size !== CHURN.length) throw new Error("the three models answer alike: the check would prove nothing");

  const server = await startServe(["--models-dir", dir, "--model", "small", "--max-loaded", "1", ...COMMON], join(home, "churn"));
  let errors = 0;
  let wrong = 0;
  let afterFirstCycle;
  const started = performance.now();
  for (let i = 0; i < REQUESTS; i++) {
    const name = CHURN[i % CHURN.length].name;
    const { status, answer } = await ask(server.url, name);
    if (status !== 200) errors++;
    else if (answer.choices[0].message.content !== expected[name]) wrong++;
    // memory is compared once the spare runner a load leaves behind has started: it is
    // there at both points, whole
    if (i === CHURN.length - 1) {
      await settled();
      afterFirstCycle = treeRss(server.child.pid);
    }
    if ((i + 1) % 50 === 0) log(`churn: ${i + 1}/${REQUESTS}`);
  }
  const seconds = (performance.now() - started) / 1000;
  await settled();
  const after = treeRss(server.child.pid);
  await server.stop();
  const growth = after.total / afterFirstCycle.total - 1;
  const growthSelf = after.self / afterFirstCycle.self - 1;
  rows.push([`errors of ${REQUESTS} requests, 3 models, --max-loaded 1 (${(REQUESTS / seconds).toFixed(1)} req/s, each a load)`, `${errors}`, "", "", "0", errors === 0 ? "met" : "missed", reproduce("churn")]);
  rows.push(["answers unlike the model's own", `${wrong}`, "", "", "0", wrong === 0 ? "met" : "missed", reproduce("churn")]);
  rows.push(["RSS after the run vs after the first cycle, MB (daemon and runner)", mb(after.total), mb(afterFirstCycle.total), `${growth >= 0 ? "+" : ""}${(growth * 100).toFixed(1)}%`, "within 10%", Math.abs(growth) <= 0.1 ? "met" : "missed", reproduce("churn")]);
  rows.push(["  the daemon alone, MB", mb(after.self), mb(afterFirstCycle.self), `${growthSelf >= 0 ? "+" : ""}${(growthSelf * 100).toFixed(1)}%`, "", "", reproduce("churn")]);
}

if (wants("cold")) {
  // node-llama-cpp directly, in a process of its own with llama.cpp already started
  const direct = spawnSync(process.execPath, [fileURLToPath(new URL("./lifecycle-direct.js", import.meta.url)), big, String(ROUNDS)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (direct.status !== 0) throw new Error(`lifecycle-direct.js failed: ${direct.stdout}`);
  const { chatMs, rawMs, threads } = JSON.parse(direct.stdout);
  const bigName = "bench";
  const bigDir = join(home, "cold-models");
  spawnSync("mkdir", ["-p", bigDir]);
  spawnSync("ln", ["-s", big, join(bigDir, `${bigName}.gguf`)]);
  const server = await startServe(["--models-dir", bigDir, "--model", join(dir, "small.gguf"), "--gpu", "cpu", "--no-audit"], join(home, "cold"));
  const cold = [];
  const first = await firstToken(server.url, bigName);
  for (let i = 0; i < ROUNDS; i++) {
    await post(`${server.url}/v1/models/${bigName}/unload`);
    // as after a keep-alive: the next request comes a while later
    await new Promise((resolve) => setTimeout(resolve, 3000));
    cold.push(await firstToken(server.url, bigName));
  }
  await server.stop();
  const ratio = median(cold) / median(chatMs);
  const rawRatio = median(cold) / median(rawMs);
  rows.push([`cold start of an unloaded ~100 MB model: request -> first token vs node-llama-cpp's LlamaChatSession, ms (threads ${threads})`, median(cold).toFixed(1), median(chatMs).toFixed(1), `${ratio.toFixed(2)}x`, "<= 1.2x", ratio <= 1.2 ? "met" : "missed", reproduce("cold")]);
  rows.push(["  the same vs a bare prompt's first token (no chat template), ms", median(cold).toFixed(1), median(rawMs).toFixed(1), `${rawRatio.toFixed(2)}x`, "", "", reproduce("cold")]);
  rows.push(["  the daemon's first load of it (threads measured then), ms", first.toFixed(1), "", "", "(once)", "", reproduce("cold")]);
}

if (wants("beside")) {
  const bigDir = join(home, "beside-models");
  spawnSync("mkdir", ["-p", bigDir]);
  spawnSync("ln", ["-s", big, join(bigDir, "bench.gguf")]);
  const server = await startServe(["--models-dir", bigDir, "--model", join(dir, "medium.gguf"), "--gpu", "cpu", "--max-loaded", "2", "--no-audit"], join(home, "beside"));
  // the first load measures threads; later ones reuse them
  await post(`${server.url}/v1/models/bench/load`);
  for (let i = 0; i < 5; i++) await firstToken(server.url, "medium");
  const idle = [];
  const loading = [];
  const loadingQueue = [];
  let loads = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < 5; i++) idle.push(await firstToken(server.url, "medium"));
    await post(`${server.url}/v1/models/bench/unload`);
    let done = false;
    const load = post(`${server.url}/v1/models/bench/load`).then(() => { done = true; loads++; });
    // every request made while the load runs counts
    while (!done) {
      queued = [];
      const ms = await firstToken(server.url, "medium");
      if (!done) {
        loading.push(ms);
        loadingQueue.push(...queued);
      }
    }
    await load;
    // the spare runner the load took is replaced now: not part of the idle figures
    await new Promise((resolve) => setTimeout(resolve, 2500));
  }
  await server.stop();
  const cost = median(loading) / median(idle) - 1;
  rows.push(["  of which waiting for the model (server-side queue_ms), ms", median(loadingQueue.filter(Number.isFinite)).toFixed(2), "", "", "", "", reproduce("beside")]);
  rows.splice(rows.length - 1, 0, [`time to first token of a loaded model while another loads, ms (${loading.length} requests during ${loads} loads)`, median(loading).toFixed(2), median(idle).toFixed(2), `${cost >= 0 ? "+" : ""}${(cost * 100).toFixed(1)}%`, "within 10%", cost <= 0.1 ? "met" : "missed", reproduce("beside")]);
}

console.log(`Models on demand through mlxs serve (default threads, measured), generated models: churn on 3 models of 256x2, 384x3, 512x4; the ~100 MB 512x7 for cold starts and loads; medians of ${ROUNDS} rounds`);
console.log(table(rows));
