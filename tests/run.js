// Runs every tests/*.test.js in its own process (each loads its own llama.cpp), two at a
// time, and ends with the one line CI reads: "N passed, N failed". Most of a test's time
// is spent waiting (for a daemon to start, a deadline to pass, a child to exit), so two
// files at once take little more than one each, and the suite holds under that load as it
// must under any. Each file's output is printed whole when it ends. A file that overruns
// its deadline is killed with everything it started, reported by name, and counted as
// failed: the suite can fail, but never hang.
//   node tests/run.js [NAME ...]      only the files whose names contain a NAME
//   MLXS_TEST_JOBS=N                  files at once (default 2)
//   MLXS_TEST_FILE_TIMEOUT=SECONDS    the deadline of each file (default 600)
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(dir).filter((f) => f.endsWith(".test.js") && (only.length === 0 || only.some((o) => f.includes(o)))).sort();
const deadlineMs = Number(process.env.MLXS_TEST_FILE_TIMEOUT || 600) * 1000;

const jobs = Math.max(1, Number(process.env.MLXS_TEST_JOBS || 2));

let passed = 0;
let failed = 0;
let skipped = 0;
const overran = [];

function runFile(file) {
  const started = Date.now();
  return new Promise((resolve) => {
    // its own process group, so that the servers and CLIs it started die with it
    const child = spawn(process.execPath, [join(dir, file)], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, FORCE_COLOR: "0" }, detached: true });
    let text = "";
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
    }, deadlineMs);
    child.stdout.on("data", (chunk) => { text += chunk; });
    child.on("close", (code) => {
      clearTimeout(timer);
      // whatever it left running goes too
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* nothing left */ }
      resolve({ text, code, timedOut, seconds: ((Date.now() - started) / 1000).toFixed(1) });
    });
  });
}

function report(file, output) {
  process.stdout.write(output.text);
  const plain = output.text.replace(/\x1b\[[0-9;]*m/g, "");
  const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  passed += ok;
  skipped += skip;
  // a file that crashed or overran before uvu's summary counts as one failure
  const fileFailed = Math.max(total - ok - skip, output.code === 0 && !output.timedOut ? 0 : 1);
  failed += fileFailed;
  if (output.timedOut) {
    overran.push(file);
    console.log(`# ${file}: OVERRAN its deadline of ${deadlineMs / 1000} s and was killed (${ok} passed before)`);
  } else {
    console.log(`# ${file}: ${ok} passed, ${fileFailed} failed (${output.seconds} s)`);
  }
}

const queue = [...files];
const started = Date.now();
await Promise.all(Array.from({ length: Math.min(jobs, files.length) }, async () => {
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) report(file, await runFile(file));
}));
console.log(`# ${files.length} files in ${((Date.now() - started) / 1000).toFixed(1)} s, ${jobs} at a time`);
if (overran.length) console.log(`# overran: ${overran.join(", ")}`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exitCode = failed > 0 || files.length === 0 ? 1 : 0;
