// Soak (issue 7; a script, not part of npm test): a real mlxs serve at full concurrency
// with a mix of every endpoint for --seconds (default 600). Reports requests, errors by
// status (nothing but 503, a full queue, is expected), p50/p95/p99 latency, tokens/s, the server's RSS
// after warm-up and at the end (growth goal < 10%), and audit records == requests.
//   node bench/soak.js [--seconds 600] [--clients 8]
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Agent, request } from "undici";
import { AuditStore } from "../dist/audit/store.js";
import { parseFilter } from "../dist/audit/filter.js";
import { median, table } from "./common.js";

const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const SECONDS = flag("--seconds", 600);
const CLIENTS = flag("--clients", 8);
const CLI = fileURLToPath(new URL("../bin/mlxs.js", import.meta.url));
const home = mkdtempSync(join(tmpdir(), "mlxs-soak-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));

const child = spawn(process.execPath, [CLI, "serve", "--port", "0", "--parallel", "4", "--queue", "4", ...(process.env.SOAK_THREADS ? ["--threads", process.env.SOAK_THREADS] : [])], { env: { ...process.env, MLXS_HOME: home }, stdio: ["ignore", "ignore", "pipe"] });
let stderr = "";
const url = await new Promise((resolve, reject) => {
  child.stderr.on("data", (c) => { stderr += c; const m = /listening on (\S+)/.exec(stderr); if (m) resolve(m[1]); });
  child.on("close", (code) => reject(new Error(`server exited ${code}: ${stderr}`)));
});
// the daemon and its model runner together
const rssOf = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024;
const children = (pid) => readdirSync(`/proc/${pid}/task`).flatMap((t) => readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number));
const rss = () => rssOf(child.pid) + children(child.pid).reduce((sum, pid) => sum + rssOf(pid), 0);
const dispatcher = new Agent({ connections: CLIENTS * 2 });

const post = (path, body) => ({ path, body });
const MIX = [
  () => post("/v1/chat/completions", { messages: [{ role: "user", content: "hello" }], max_tokens: 32 }),
  () => post("/v1/chat/completions", { messages: [{ role: "user", content: "stream" }], max_tokens: 32, stream: true, stream_options: { include_usage: true } }),
  () => post("/v1/completions", { prompt: "the sea", max_tokens: 16 }),
  () => post("/v1/embeddings", { input: ["one", "two", "three"] }),
  () => post("/v1/messages", { max_tokens: 24, messages: [{ role: "user", content: "hi" }] }),
  () => post("/v1/messages", { max_tokens: 24, stream: true, messages: [{ role: "user", content: "hi" }] }),
  () => post("/v1/messages/count_tokens", { messages: [{ role: "user", content: "count me" }] }),
  () => ({ path: "/v1/models" }),
];

const latencies = [];
const statuses = {};
let requests = 0;
let tokens = 0;
let rssAfterWarmup;
const started = Date.now();
const deadline = started + SECONDS * 1000;
setTimeout(() => { rssAfterWarmup = rss(); }, Math.min(30_000, SECONDS * 100)).unref();
// a line a minute on stderr, so a 10-minute run shows it is alive
const progress = setInterval(() => {
  process.stderr.write(`soak: ${((Date.now() - started) / 1000).toFixed(0)}/${SECONDS} s, ${requests} requests, server + runner RSS ${rss().toFixed(0)} MB\n`);
}, 60_000);
progress.unref();
await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
  let i = c;
  while (Date.now() < deadline) {
    const { path, body } = MIX[i++ % MIX.length]();
    const t = performance.now();
    const res = await request(`${url}${path}`, body
      ? { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), dispatcher }
      : { dispatcher });
    const text = await res.body.text();
    requests++;
    statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
    latencies.push(performance.now() - t);
    const usage = /"(completion_tokens|output_tokens)":(\d+)/g;
    let m, last = 0;
    while ((m = usage.exec(text))) last = Number(m[2]);
    tokens += last;
    if (res.statusCode === 503) await new Promise((r) => setTimeout(r, 20));
  }
}));
clearInterval(progress);
const seconds = (Date.now() - started) / 1000;
const rssEnd = rss();
await new Promise((resolve) => { child.on("close", resolve); child.kill("SIGTERM"); });
await dispatcher.close();
const store = await AuditStore.open(join(home, "audit.db"), { create: false });
const records = (await store.stats(parseFilter({}, { defaultLimit: null }))).total;
await store.close();

const sorted = [...latencies].sort((a, b) => a - b);
const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
const growth = (rssEnd / rssAfterWarmup - 1) * 100;
const unexpected = Object.keys(statuses).filter((s) => s !== "200" && s !== "503");
console.log(`soak: ${seconds.toFixed(0)} s, ${CLIENTS} clients, demo model, parallel 4, queue 4`);
console.log(table([
  ["measure", "value", "goal", "verdict"],
  ["requests", String(requests), "", ""],
  ["by status", Object.entries(statuses).map(([s, n]) => `${s}: ${n}`).join(", "), "only 200 and 503", unexpected.length ? "missed" : "met"],
  ["latency p50 / p95 / p99 ms", `${median(latencies).toFixed(1)} / ${pct(0.95).toFixed(1)} / ${pct(0.99).toFixed(1)}`, "", ""],
  ["generated tokens/s", (tokens / seconds).toFixed(1), "", ""],
  ["server + runner RSS after warm-up -> end", `${rssAfterWarmup.toFixed(0)} -> ${rssEnd.toFixed(0)} MB (${growth.toFixed(1)}%)`, "< 10% growth", growth < 10 ? "met" : "missed"],
  ["audit records vs requests", `${records} / ${requests}`, "equal", records === requests ? "met" : "missed"],
]));
