// The test suite under load: `npm test` three times in a row while two processes burn the
// CPU (both cores of the machines mlxs is tested on), to prove that no test leans on
// timing. Prints each run's totals and time; exits 1 if any run failed.
//   node bench/stress-tests.js [--runs 3] [--burners 2]
import { spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { table } from "./common.js";

const args = process.argv.slice(2);
const flag = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : fallback; };
const runs = flag("--runs", 3);
const burnerCount = flag("--burners", 2);
const root = join(dirname(fileURLToPath(import.meta.url)), "..");

const burners = Array.from({ length: burnerCount }, () => spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
const stopBurners = () => { for (const b of burners) b.kill("SIGKILL"); };
process.on("exit", stopBurners);
process.stderr.write(`${burnerCount} CPU burners running on ${availableParallelism()} cores\n`);

const rows = [["run", "passed", "failed", "minutes", "overran"]];
let anyFailed = false;
for (let run = 1; run <= runs; run++) {
  const started = Date.now();
  process.stderr.write(`npm test, run ${run} of ${runs} ...\n`);
  const output = await new Promise((resolve) => {
    const child = spawn("npm", ["test"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    child.stdout.on("data", (c) => { text += c; });
    child.stderr.on("data", (c) => { text += c; });
    child.on("close", (code) => resolve({ code, text }));
  });
  const totals = /^(\d+) passed, (\d+) failed/m.exec(output.text.split("\n").filter(Boolean).at(-1) ?? "");
  const passed = totals ? Number(totals[1]) : 0;
  const failed = totals ? Number(totals[2]) : 1;
  const overran = /^# overran: (.*)$/m.exec(output.text)?.[1] ?? "-";
  if (failed > 0 || output.code !== 0) {
    anyFailed = true;
    process.stderr.write(output.text.split("\n").filter((l) => /FAIL|OVERRAN|failed \(/.test(l)).join("\n") + "\n");
  }
  rows.push([run, passed, failed, ((Date.now() - started) / 60_000).toFixed(1), overran]);
}
stopBurners();
console.log(`npm test under load: ${burnerCount} CPU burners, ${availableParallelism()} cores, ${runs} runs in a row`);
console.log(table(rows));
console.log(anyFailed ? "verdict: failed" : `verdict: ${runs}/${runs} green`);
process.exitCode = anyFailed ? 1 : 0;
