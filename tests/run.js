// Runs every tests/*.test.js in its own process (each loads its own llama.cpp) and ends
// with the one line CI reads: "N passed, N failed".
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(dir).filter((f) => f.endsWith(".test.js") && (only.length === 0 || only.some((o) => f.includes(o)))).sort();

let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of files) {
  const started = Date.now();
  const output = await new Promise((resolve) => {
    const child = spawn(process.execPath, [join(dir, file)], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, FORCE_COLOR: "0" } });
    let text = "";
    child.stdout.on("data", (chunk) => { text += chunk; process.stdout.write(chunk); });
    child.on("close", (code, signal) => resolve({ text, code, signal }));
  });
  const plain = output.text.replace(/\x1b\[[0-9;]*m/g, "");
  const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  passed += ok;
  skipped += skip;
  // a file that crashed before uvu's summary counts as one failure
  const fileFailed = Math.max(total - ok - skip, output.code === 0 ? 0 : 1);
  failed += fileFailed;
  console.log(`# ${file}: ${ok} passed, ${fileFailed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exitCode = failed > 0 || files.length === 0 ? 1 : 0;
