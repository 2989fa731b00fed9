// CLI start-up (issues 2 and 3: "well under half a second", never loading llama.cpp):
// wall time of whole commands, median of 10 runs each.
//   node bench/startup.js [mlxs arguments: time only that command, e.g. audit tail]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AuditStore } from "../dist/audit/store.js";
import { syntheticRecords } from "../tests/fixtures/audit-records.js";
import { median, table } from "./common.js";

const CLI = fileURLToPath(new URL("../bin/mlxs.js", import.meta.url));
const home = mkdtempSync(join(tmpdir(), "mlxs-bench-startup-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));
const store = await AuditStore.open(join(home, "audit.db"));
await store.insert(syntheticRecords(10_000));
await store.close();

const time = (args) => {
  const samples = [];
  for (let i = 0; i < 11; i++) {
    const started = performance.now();
    const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, MLXS_HOME: home }, stdio: "ignore" });
    if (r.status !== 0) throw new Error(`mlxs ${args.join(" ")} exited ${r.status}`);
    if (i > 0) samples.push(performance.now() - started);
  }
  return median(samples);
};
const baseline = median(Array.from({ length: 10 }, () => { const t = performance.now(); spawnSync(process.execPath, ["-e", ""]); return performance.now() - t; }));
const rows = [["command", "median ms", "goal", "verdict", "reproduce"], ["node -e '' (Node itself)", baseline.toFixed(0), "", "", ""]];
const only = process.argv.slice(2);
for (const args of only.length ? [only] : [["--help"], ["--version"], ["audit", "tail"], ["audit", "stats"], ["audit", "export", "--format", "jsonl", "--limit", "100"], ["audit", "prune", "--dry-run"]]) {
  const ms = time(args);
  rows.push([`mlxs ${args.join(" ")}`, ms.toFixed(0), "< 500 ms", ms < 500 ? "met" : "missed", `node bench/startup.js ${args.join(" ")}`]);
}
console.log("CLI start-up, whole process wall time, median of 10 (database of 10 000 records)");
console.log(table(rows));
