// Output closed early (`mlxs ... | head -c 1`, a reader that exits): every command stops at
// once and exits quietly with 0, without a stack trace or an "unexpected error". The race
// between a write and the reader leaving is intermittent, so each command runs many times.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { AuditStore } from "../dist/audit/store.js";
import { syntheticRecords } from "./fixtures/audit-records.js";
import { CLI, ENDLESS_CONTEXT, STACK, auditRows, tempDir, testModel } from "./helpers.js";

/**
 * Runs mlxs with `stream` (stdout or stderr) read by a reader that takes one chunk and
 * leaves, as `head -c 1` does; resolves with the exit and what the other stream said.
 */
function readerLeaves(args, { stream = "stdout", home = tempDir(), timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, MLXS_HOME: home, MLXS_THREADS: "1", MLXS_GPU: "cpu", MLXS_CTX_SIZE: "1024", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const other = stream === "stdout" ? "stderr" : "stdout";
    let said = "";
    let got = 0;
    child[other].on("data", (c) => { said += c; });
    child[stream].once("data", (c) => { got = c.length; child[stream].destroy(); });
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`mlxs ${args.join(" ")} did not stop after its ${stream} closed:\n${said}`)); }, timeoutMs);
    child.on("close", (code, signal) => { clearTimeout(timer); resolve({ code, signal, said, got, home }); });
  });
}

/** Runs it `times` times: every run exits 0 and says nothing of the closed pipe. */
async function quietEveryTime(args, times, options) {
  const runs = [];
  for (let i = 0; i < times; i++) {
    const run = await readerLeaves(args, options);
    assert.ok(run.got > 0, `mlxs ${args.join(" ")} wrote something first`);
    assert.is(run.code, 0, `mlxs ${args.join(" ")} (run ${i + 1}): exit ${run.code} ${run.signal ?? ""}\n${run.said}`);
    assert.not.match(run.said, STACK);
    assert.not.match(run.said, /EPIPE|unexpected error/);
    runs.push(run);
  }
  return runs;
}

async function seededHome(count) {
  const home = tempDir();
  const store = await AuditStore.open(join(home, "audit.db"));
  await store.insert(syntheticRecords(count, { spacingMs: 10 }));
  await store.close();
  return home;
}

const pipes = suite("output closed early");

pipes("help and version, of the program and of each command", async () => {
  await quietEveryTime(["--help"], 15);
  for (const command of ["chat", "embed", "serve", "audit", "audit tail", "audit export", "audit prune", "audit stats"]) {
    await quietEveryTime([...command.split(" "), "--help"], 2);
  }
  await quietEveryTime(["--version"], 3);
});

pipes("audit export, tail, stats and prune", async () => {
  const home = await seededHome(50_000);
  await quietEveryTime(["audit", "export", "--format", "jsonl"], 8, { home });
  await quietEveryTime(["audit", "export", "--format", "csv"], 4, { home });
  await quietEveryTime(["audit", "export", "--format", "json"], 4, { home });
  await quietEveryTime(["audit", "tail", "-n", "2000", "--json"], 5, { home });
  await quietEveryTime(["audit", "tail", "-n", "2000"], 3, { home });
  await quietEveryTime(["audit", "tail", "-f", "-n", "500", "--json"], 3, { home });
  await quietEveryTime(["audit", "stats"], 3, { home });
  await quietEveryTime(["audit", "prune", "--dry-run"], 2, { home });
});

pipes("chat stops generating, and its record says cancelled; embed stops too", async () => {
  const model = await testModel({ endless: true });
  const runs = await quietEveryTime(["chat", "--model", model, "--temperature", "1", "--ctx-size", String(ENDLESS_CONTEXT), "-n", "60000", "go on"], 4);
  for (const run of runs) {
    const rows = await auditRows(join(run.home, "audit.db"));
    assert.equal(rows.map((r) => [r.endpoint, r.status, r.status_code, r.error_type]), [["cli:chat", "cancelled", 0, "output_closed"]]);
    assert.ok(rows[0].completion_tokens < 60_000, `${rows[0].completion_tokens} tokens: the generation stopped`);
  }
  const texts = Array.from({ length: 300 }, (_, i) => `text number ${i}`);
  await quietEveryTime(["embed", "--model", await testModel(), "--format", "jsonl", ...texts], 3);
});

pipes("serve whose log reader leaves (mlxs serve 2>&1 | head): it drains and exits 0", async () => {
  await quietEveryTime(["serve", "--port", "0", "--model", await testModel()], 3, { stream: "stderr" });
});

pipes("a real shell pipeline into head -c 1", async () => {
  const home = await seededHome(20_000);
  for (const command of ["--help", "audit export --format jsonl", "audit tail -n 1000"]) {
    for (let i = 0; i < 5; i++) {
      const result = await new Promise((resolve) => {
        const child = spawn("bash", ["-o", "pipefail", "-c", `"${process.execPath}" "${CLI}" ${command} | head -c 1 >/dev/null`], { env: { ...process.env, MLXS_HOME: home } });
        let stderr = "";
        child.stderr.on("data", (c) => { stderr += c; });
        child.on("close", (code) => resolve({ code, stderr }));
      });
      assert.is(result.code, 0, `${command}: ${result.stderr}`);
      assert.is(result.stderr, "", command);
    }
  }
});

pipes.run();
