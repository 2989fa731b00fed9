// mlxs serve against llama.cpp's own llama-server, side by side in one run, on the same
// llama.cpp (built from the source node-llama-cpp ships, see llama-cpp.js) and the ~100 MB
// benchmark model: decode tokens/s at 1 and 2 threads with 1 and 4 clients (4 slots
// each), mlxs with no tuning flags against llama-server at its best thread count, time to
// first token, the next turn of a 2 000-token conversation (prompt prefix reuse), and
// llama-bench's figure as the ceiling. The servers take turns: never two measured at once.
//   node bench/vs-llama-server.js [--rounds 5] [--tokens 256] [--threads 1,2] [--only decode|ttft|prefix]
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { benchModel, median, startServe, table } from "./common.js";
import { llamaCppTools, loadedCpuBackend } from "./llama-cpp.js";

const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const ROUNDS = Number(option("--rounds", 5));
const TOKENS = Number(option("--tokens", 256));
const THREADS = option("--threads", "1,2").split(",").map(Number);
const ONLY = option("--only", undefined);
const wants = (part) => ONLY === undefined || ONLY === part;
const SLOTS = 4;
const CTX_PER_SLOT = 4096;

const freePort = () => new Promise((resolve) => {
  const server = createServer();
  server.listen(0, "127.0.0.1", () => { const { port } = server.address(); server.close(() => resolve(port)); });
});

async function waitHealthy(url, child, what) {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode})`);
    const ok = await request(`${url}/health`).then(async (r) => { await r.body.dump(); return r.statusCode === 200; }, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not become healthy`);
}

async function startLlamaServer(tools, model, threads) {
  const port = await freePort();
  const child = spawn(tools.server, ["-m", model, "-t", String(threads), "-tb", String(threads), "-np", String(SLOTS), "-c", String(SLOTS * CTX_PER_SLOT),
    "--host", "127.0.0.1", "--port", String(port), "--no-webui"], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (c) => { log = (log + c).slice(-4000); });
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, child, `llama-server -t ${threads}`).catch((e) => { throw new Error(`${e.message}\n${log}`); });
  return { name: "llama-server", url, child, stop: () => stop(child) };
}

const startMlxs = (model, flags, home) => startServe(["--model", model, "--gpu", "cpu", "--no-audit", ...flags], home);

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.on("close", resolve);
    child.kill("SIGTERM");
  });
}

const chatBody = (i, extra) => JSON.stringify({ messages: [{ role: "user", content: `Tell a long story, number ${i}.` }], temperature: 0, ...extra });

/** Tokens per second of `clients` concurrent chats of TOKENS tokens each. */
async function decodeRate(server, clients) {
  const started = performance.now();
  const counts = await Promise.all(Array.from({ length: clients }, async (_, i) => {
    const res = await request(`${server.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: chatBody(i, { max_tokens: TOKENS }) });
    const body = await res.body.json();
    if (res.statusCode !== 200) throw new Error(`${server.name}: ${res.statusCode} ${JSON.stringify(body)}`);
    return body.usage.completion_tokens;
  }));
  return counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000);
}

/** Milliseconds from sending a streamed chat to its first content. */
async function firstToken(server, messages) {
  const started = performance.now();
  const res = await request(`${server.url}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages, temperature: 0, max_tokens: 2, stream: true }),
  });
  let first;
  for await (const chunk of res.body) if (first === undefined && /"content":"[^"]/.test(String(chunk))) first = performance.now() - started;
  return first;
}

const WORDS = "the sea and the mountain tell a long story of water light and stone".split(" ");
/** A conversation of about `tokens` tokens, different for each `seed`. */
function conversation(seed, tokens) {
  const turns = [];
  let words = 0;
  for (let t = 0; words < tokens * 0.9; t++) {
    const text = Array.from({ length: 60 }, (_, i) => WORDS[(seed * 7 + t * 13 + i * 3) % WORDS.length]).join(" ");
    turns.push({ role: t % 2 ? "assistant" : "user", content: `${seed} ${text}` });
    words += 62;
  }
  if (turns.at(-1).role === "user") turns.pop();
  return turns;
}

/** Time to first token of a conversation's next turn: cold (never seen), then warm (its prefix seen). */
async function prefixReuse(server, seed) {
  const history = conversation(seed, 2000);
  const cold = await firstToken(server, [...history, { role: "user", content: "and then?" }]);
  // the same conversation, one turn on: everything before the new turn was evaluated before
  const warm = await firstToken(server, [...history, { role: "user", content: "and then?" }, { role: "assistant", content: "the sea" }, { role: "user", content: "go on" }]);
  return { cold, warm };
}

function llamaBench(tools, model, threads) {
  const r = spawnSync(tools.bench, ["-m", model, "-t", String(threads), "-p", "0", "-n", String(TOKENS), "-r", "3", "-o", "json"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`llama-bench failed: ${r.stderr}`);
  return JSON.parse(r.stdout).find((row) => row.n_gen > 0).avg_ts;
}

const model = await benchModel();
const tools = await llamaCppTools();
const home = mkdtempSync(join(tmpdir(), "mlxs-bench-vs-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));

const rows = [["measure", "threads", "clients", "llama-server", "mlxs", "mlxs / llama-server", "goal", "verdict"]];
const peerBest = { 1: 0, [SLOTS]: 0 };
let backends = {};

/** Runs `measure` on both servers ROUNDS times, taking turns and alternating who goes first. */
async function sideBySide(peer, ours, measure) {
  const samples = { peer: [], ours: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? [["ours", ours], ["peer", peer]] : [["peer", peer], ["ours", ours]];
    for (const [side, server] of order) samples[side].push(await measure(server));
  }
  return { peer: median(samples.peer), ours: median(samples.ours) };
}

for (const threads of THREADS) {
  process.stderr.write(`threads ${threads}: starting llama-server and mlxs serve ...\n`);
  const peer = await startLlamaServer(tools, model, threads);
  const ours = await startMlxs(model, ["--threads", String(threads), "--parallel", String(SLOTS)], home);
  backends = { peer: loadedCpuBackend(peer.child.pid), ours: loadedCpuBackend(ours.child.pid) };
  try {
    await decodeRate(peer, 1);
    await decodeRate(ours, 1);
    if (wants("decode")) {
      for (const clients of [1, SLOTS]) {
        process.stderr.write(`  ${clients} client(s), ${ROUNDS} rounds of ${TOKENS} tokens ...\n`);
        const m = await sideBySide(peer, ours, (server) => decodeRate(server, clients));
        peerBest[clients] = Math.max(peerBest[clients], m.peer);
        rows.push(["decode tok/s", threads, clients, m.peer.toFixed(1), m.ours.toFixed(1), `${(m.ours / m.peer).toFixed(2)}x`, "", ""]);
      }
    }
    if (wants("ttft")) {
      process.stderr.write("  time to first token ...\n");
      const m = await sideBySide(peer, ours, async (server) => {
        const samples = [];
        for (let i = 0; i < 10; i++) samples.push(await firstToken(server, [{ role: "user", content: "Hello there" }]));
        return median(samples);
      });
      rows.push(["first token ms", threads, 1, m.peer.toFixed(1), m.ours.toFixed(1), `+${(m.ours - m.peer).toFixed(1)} ms`, "<= +3 ms", m.ours - m.peer <= 3 ? "met" : "missed"]);
    }
    if (wants("prefix")) {
      process.stderr.write("  next turn of a 2 000-token conversation ...\n");
      const samples = { peer: [], ours: [] };
      for (let round = 0; round < ROUNDS; round++) {
        for (const [side, server] of round % 2 ? [["ours", ours], ["peer", peer]] : [["peer", peer], ["ours", ours]]) samples[side].push(await prefixReuse(server, round * 10 + threads));
      }
      for (const side of ["peer", "ours"]) {
        const cold = median(samples[side].map((s) => s.cold));
        const warm = median(samples[side].map((s) => s.warm));
        rows.push([`2 000-token turn, ${side === "peer" ? "llama-server" : "mlxs"}: cold / next turn ms`, threads, 1, side === "peer" ? `${cold.toFixed(0)} / ${warm.toFixed(0)}` : "", side === "ours" ? `${cold.toFixed(0)} / ${warm.toFixed(0)}` : "",
          `${(cold / warm).toFixed(1)}x faster`, side === "ours" ? ">= 5x" : "", side === "ours" ? (cold / warm >= 5 ? "met" : "missed") : ""]);
      }
    }
  } finally {
    await ours.stop();
    await peer.stop();
  }
  rows.push(["llama-bench tg (the ceiling)", threads, 1, llamaBench(tools, model, threads).toFixed(1), "", "", "", ""]);
}

if (wants("decode")) {
  process.stderr.write("mlxs serve with no tuning flags ...\n");
  const ours = await startMlxs(model, [], home);
  const measured = /threads: (\d+) \(measured\)/.exec(ours.stderr())?.[1] ?? "?";
  try {
    await decodeRate(ours, 1);
    for (const clients of [1, SLOTS]) {
      const samples = [];
      for (let round = 0; round < ROUNDS; round++) samples.push(await decodeRate(ours, clients));
      const m = median(samples);
      const goal = clients === 1 ? 1.0 : 0.95;
      rows.push(["decode tok/s, mlxs defaults vs llama-server's best", `default (${measured})`, clients, peerBest[clients].toFixed(1), m.toFixed(1), `${(m / peerBest[clients]).toFixed(2)}x`, `>= ${goal.toFixed(2)}x`, m / peerBest[clients] >= goal ? "met" : "missed"]);
    }
  } finally {
    await ours.stop();
  }
}

console.log(`mlxs serve vs llama-server (llama.cpp ${tools.release}, the same source), ~100 MB generated model, ${TOKENS} tokens per request at temperature 0, ${SLOTS} slots, medians of ${ROUNDS}`);
console.log(`machine: ${availableParallelism()} cores, ${cpus()[0]?.model ?? "unknown CPU"}; CPU backend loaded: llama-server ${backends.peer}, mlxs ${backends.ours}`);
console.log(table(rows));
