// Shared fixtures: temp dirs, the test model (written by mlxs's own GGUF writer), and the
// real CLI run as a child process.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeTinyModel } from "../dist/core/gguf-writer.js";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const CLI = join(ROOT, "bin", "mlxs.js");

// Tests must not read the developer's own settings: an MLXS_AUDIT_DB or MLXS_CONFIG left in
// the shell would send the CLI's records to another database than the test looks in.
for (const name of Object.keys(process.env)) if (name.startsWith("MLXS_")) delete process.env[name];

const temps = [];
process.on("exit", () => { for (const dir of temps) rmSync(dir, { recursive: true, force: true }); });

export function tempDir(prefix = "mlxs-test-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

/** Small and quick: 64 wide, 2 blocks, a 1024-token context. */
export const TEST_MODEL = {
  name: "mlxs-test", embeddingLength: 64, blockCount: 2, headCount: 4, feedForwardLength: 128,
  contextLength: 1024, wordCount: 300, seed: 42,
};

/** The context the endless model was trained on. */
export const ENDLESS_CONTEXT = 65_536;

const models = new Map();
/**
 * Path of the test model, written once per test process. `endless`: one that never ends
 * its answer by itself, for tests that must interrupt a running generation; trained on a
 * long context (a server gives it 4096 tokens a sequence, unless told otherwise), so that
 * an answer still runs when a test acts on it, however fast the machine.
 */
export async function testModel({ endless = false } = {}) {
  if (!models.has(endless)) {
    const path = join(tempDir("mlxs-model-"), endless ? "endless.gguf" : "tiny.gguf");
    await writeTinyModel(path, { ...TEST_MODEL, canEnd: !endless, ...(endless ? { contextLength: ENDLESS_CONTEXT } : {}) });
    models.set(endless, path);
  }
  return models.get(endless);
}

/** Core options for tests: one thread (see NOTES.md), small contexts. */
export const CORE = { gpu: "cpu", threads: 1, ctxSize: 1024, parallel: 1, queue: 8 };

/**
 * Runs the real CLI. MLXS_HOME is a fresh temp dir unless the env gives one, so no test
 * reads or writes the user's config or data.
 */
export function runCli(args, { env = {}, input, timeoutMs = 60_000 } = {}) {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, MLXS_HOME: tempDir(), MLXS_THREADS: "1", MLXS_GPU: "cpu", NO_COLOR: "1", ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => { stdout += c; });
    child.stderr.on("data", (c) => { stderr += c; });
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`mlxs ${args.join(" ")} timed out`)); }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/**
 * Every command's help, subcommands included, as `mlxs --help` lists them:
 * [{ path: ["audit", "tail"], code, stdout, stderr }].
 */
export async function helpTexts(path = []) {
  const run = await runCli([...path, "--help"]);
  const texts = [{ path, ...run }];
  const section = run.stdout.split("Commands:")[1]?.split("\n\n")[0] ?? "";
  for (const [, name] of section.matchAll(/^  (\w+) /gm)) {
    if (name !== "help") texts.push(...(await helpTexts([...path, name])));
  }
  return texts;
}

/** Collects a core generation: its opening event, the deltas and the final event. */
export async function collect(stream) {
  const deltas = [];
  let start;
  let done;
  for await (const event of stream) {
    if (event.type === "delta") deltas.push(event.text);
    else if (event.type === "start") start = event;
    else done = event;
  }
  return { start, deltas, text: deltas.join(""), done };
}

/** A stack trace in CLI output: "    at fn (file:line)". */
export const STACK = /^\s+at .+:\d+/m;

/**
 * Starts the real `mlxs serve` on 127.0.0.1 port 0 and resolves once it says where it
 * listens. `stop()` sends SIGTERM and resolves with the exit code.
 */
export async function startServer(args = [], { env = {}, home = tempDir(), timeoutMs = 30_000 } = {}) {
  const child = spawn(process.execPath, [CLI, "serve", "--port", "0", ...args], {
    env: { ...process.env, MLXS_HOME: home, MLXS_THREADS: "1", MLXS_GPU: "cpu", MLXS_CTX_SIZE: "1024", NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on("close", (code) => resolve(code)));
  const url = await new Promise((resolve, reject) => {
    // a daemon that never says it listens is killed: left running, it would keep the test file alive
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`server did not start:\n${stderr}`)); }, timeoutMs);
    const onData = () => {
      const match = /listening on (http:\/\/[^\s]+)/.exec(stderr);
      if (match) { clearTimeout(timer); child.stderr.off("data", onData); resolve(match[1]); }
    };
    child.stderr.on("data", onData);
    exited.then((code) => { clearTimeout(timer); reject(new Error(`server exited ${code}:\n${stderr}`)); });
  });
  return {
    url, child, home, db: join(home, "audit.db"),
    stderr: () => stderr,
    exited,
    // a stop that outlasts its deadline (the longest drain a test asks for, and more) fails the test, and kills the daemon
    stop: async (signal = "SIGTERM", timeoutMs = 90_000) => {
      child.kill(signal);
      let timer;
      const late = new Promise((_, reject) => { timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`the server did not stop within ${timeoutMs} ms:\n${stderr.slice(-2000)}`)); }, timeoutMs); });
      try { return await Promise.race([exited, late]); } finally { clearTimeout(timer); }
    },
  };
}

/** Options for a JSON POST with undici. */
export const jsonRequest = (body, headers = {}) => ({ method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

/** An HTTP call through undici: status, headers, the parsed body (or the text), and the text. */
export async function httpCall(url, options = {}) {
  const { request } = await import("undici");
  const res = await request(url, options);
  const text = await res.body.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.statusCode, headers: res.headers, body, text };
}

/** Every record of an audit database, oldest first, as it is now. */
export async function auditRows(db) {
  const { AuditStore } = await import("../dist/audit/store.js");
  const { parseFilter } = await import("../dist/audit/filter.js");
  const store = await AuditStore.open(db, { create: false });
  const rows = store ? await store.query(parseFilter({ order: "asc" }, { defaultLimit: null })) : [];
  await store?.close();
  return rows;
}

/**
 * Polls `check` until it returns something truthy, and resolves with that; fails after
 * `timeoutMs` saying what was awaited (and, from `describe`, what was seen instead).
 */
export async function waitFor(check, { timeoutMs = 20_000, intervalMs = 25, what = "a condition", describe } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe ? `; ${await describe()}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The records of `db` once `ready(rows)` holds: a background writer flushes when it will. */
export async function waitForRows(db, ready = (rows) => rows.length > 0, { what = "audit records", timeoutMs } = {}) {
  let rows = [];
  let locked = "";
  // a poll that finds the file locked by the daemon (a batch, its first migration) on a loaded machine looks again
  const look = async () => {
    try {
      rows = await auditRows(db);
      return ready(rows);
    } catch (error) {
      if (!/locked/.test(error.message)) throw error;
      locked = ` (the last look found it locked: ${error.message})`;
      return false;
    }
  };
  await waitFor(look, {
    what, timeoutMs, intervalMs: 100, describe: () => `${rows.length} records: ${rows.map((r) => r.request_id).join(", ").slice(0, 500)}${locked}`,
  });
  return rows;
}

/** Resolves once `text()` matches `pattern` (a server's stderr, a follower's output ...). */
export function waitForText(text, pattern, options = {}) {
  return waitFor(() => pattern.exec(text()), { what: `${pattern}`, describe: () => `got: ${JSON.stringify(text().slice(-800))}`, ...options });
}

/** Resident memory of a process and its children (a daemon and its model runners), in kB. */
export function rssKb(pid) {
  const own = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);
  const children = readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim().split(/\s+/).filter(Boolean));
  return own + children.reduce((sum, child) => { try { return sum + rssKb(Number(child)); } catch { return sum; } }, 0);
}

/** Fails if any byte of any file under `dir` holds `marker`. */
export function assertNoMarker(dir, marker) {
  const needle = Buffer.from(marker);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) assertNoMarker(path, marker);
    else if (readFileSync(path).includes(needle)) throw new Error(`${path} holds the marker`);
  }
}

/** The lifecycle events of a daemon, collected from /v1/ps/events as they come. */
export async function followLifecycle(server) {
  const res = await (await import("undici")).request(`${server.url}/v1/ps/events`);
  const events = [];
  let buffer = "";
  const done = (async () => {
    for await (const chunk of res.body) {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (data) events.push(JSON.parse(data));
      }
    }
  })().catch(() => undefined);
  await waitFor(() => events.length > 0, { what: "the snapshot event" });
  return { events, stop: async () => { res.body.destroy(); await done; } };
}
