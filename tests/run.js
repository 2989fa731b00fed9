// Runs every tests/*.test.js in its own process (each loads its own llama.cpp) and ends
// with the one line CI reads: "N passed, N failed". A file that overruns its deadline is
// killed with everything it started, reported by name, and counted as failed: the suite
// can fail, but never hang.
//   node tests/run.js [NAME ...]      only the files whose names contain a NAME
//   MLXS_TEST_FILE_TIMEOUT=SECONDS    the deadline of each file (default 420)
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(dir).filter((f) => f.endsWith(".test.js") && (only.length === 0 || only.some((o) => f.includes(o)))).sort();
const deadlineMs = Number(process.env.MLXS_TEST_FILE_TIMEOUT || 420) * 1000;

let passed = 0;
let failed = 0;
let skipped = 0;
const overran = [];
for (const file of files) {
  const started = Date.now();
  const output = await new Promise((resolve) => {
    // its own process group, so that the servers and CLIs it started die with it
    const child = spawn(process.execPath, [join(dir, file)], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, FORCE_COLOR: "0" }, detached: true });
    let text = "";
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
    }, deadlineMs);
    child.stdout.on("data", (chunk) => { text += chunk; process.stdout.write(chunk); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // whatever it left running goes too
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* nothing left */ }
      resolve({ text, code, signal, timedOut });
    });
  });
  const plain = output.text.replace(/\x1b\[[0-9;]*m/g, "");
  const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  passed += ok;
  skipped += skip;
  // a file that crashed or overran before uvu's summary counts as one failure
  const fileFailed = Math.max(total - ok - skip, output.code === 0 && !output.timedOut ? 0 : 1);
  failed += fileFailed;
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (output.timedOut) {
    overran.push(file);
    console.log(`# ${file}: OVERRAN its deadline of ${deadlineMs / 1000} s and was killed (${ok} passed before)`);
  } else {
    console.log(`# ${file}: ${ok} passed, ${fileFailed} failed (${seconds} s)`);
  }
}
if (overran.length) console.log(`# overran: ${overran.join(", ")}`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exitCode = failed > 0 || files.length === 0 ? 1 : 0;
