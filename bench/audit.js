// Audit store figures (issue 3), on a database this script fills itself:
//   ingest through the writer (goal >= 50 000 records/s), record() cost (goal < 5 us
//   median), a filtered query on 1 000 000 rows (model + 24 h, limit 100; goal <= 20 ms
//   median), export of 1 000 000 rows as JSONL (goal >= 200 000 rows/s, peak RSS < 150 MB),
//   prune of 1 000 000 rows (goal <= 3 s).
//   node bench/audit.js [--rows 1000000] [--only ingest|record|query|export|prune]
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AuditStore } from "../dist/audit/store.js";
import { AuditWriter } from "../dist/audit/writer.js";
import { parseFilter } from "../dist/audit/filter.js";
import { syntheticRecord } from "../tests/fixtures/audit-records.js";
import { median, table, writerIngest } from "./common.js";

const args = process.argv.slice(2);
const ROWS = args.includes("--rows") ? Number(args[args.indexOf("--rows") + 1]) : 1_000_000;
const ONLY = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
const wants = (measure) => ONLY === undefined || ONLY === measure;
const reproduce = (measure) => `node bench/audit.js --only ${measure}`;
const dir = mkdtempSync(join(tmpdir(), "mlxs-bench-audit-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const rows = [["measure", "median", "goal", "verdict", "reproduce"]];
const verdict = (ok) => (ok ? "met" : "missed");
const now = Date.now();
// 1 000 000 records over 30 days
const spacing = (30 * 86_400_000) / ROWS;

// --- ingest through the writer
if (wants("ingest")) {
  const store = await AuditStore.open(join(dir, "ingest.db"));
  const samples = [];
  for (let run = 0; run < 3; run++) samples.push(await writerIngest(store, { count: 200_000, prefix: `i${run}`, now }));
  await store.close();
  const m = median(samples);
  rows.push(["writer ingest", `${Math.round(m).toLocaleString("en")} records/s`, ">= 50 000 records/s", verdict(m >= 50_000), reproduce("ingest")]);
}

// --- record() cost
if (wants("record")) {
  const writer = new AuditWriter(async () => { throw new Error("never opened"); }, { flushIntervalMs: 3_600_000, batchSize: 1e9, maxBuffer: 1e9 });
  const records = Array.from({ length: 1000 }, (_, i) => syntheticRecord(i, { now }));
  const perCall = [];
  for (let round = 0; round < 200; round++) {
    const started = process.hrtime.bigint();
    for (const record of records) writer.record(record);
    perCall.push(Number(process.hrtime.bigint() - started) / records.length / 1000);
  }
  const m = median(perCall);
  rows.push(["record() cost", `${m.toFixed(3)} us`, "< 5 us", verdict(m < 5), reproduce("record")]);
}

// --- fill 1 000 000 rows
const big = join(dir, "big.db");
if (wants("query") || wants("export") || wants("prune")) {
  const store = await AuditStore.open(big);
  const started = performance.now();
  for (let i = 0; i < ROWS; i += 5000) {
    const batch = [];
    for (let j = i; j < Math.min(ROWS, i + 5000); j++) batch.push(syntheticRecord(j, { now, spacingMs: spacing, prefix: "b", timeOrdered: true }));
    await store.insert(batch);
  }
  process.stderr.write(`filled ${ROWS} rows in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);

  // --- filtered query: model + 24 h range, limit 100
  if (wants("query")) {
    const times = [];
    for (let i = 0; i < 50; i++) {
      const model = ["alpha", "beta", "gamma"][i % 3];
      const day = i % 29;
      const filter = parseFilter({ model, since: new Date(now - (day + 1) * 86_400_000).toISOString(), until: new Date(now - day * 86_400_000).toISOString(), limit: "100" });
      const started = performance.now();
      const result = await store.query(filter);
      times.push(performance.now() - started);
      if (result.length !== 100) throw new Error(`query returned ${result.length}`);
    }
    const m = median(times);
    rows.push([`query on ${ROWS.toLocaleString("en")} rows`, `${m.toFixed(2)} ms`, "<= 20 ms", verdict(m <= 20), reproduce("query")]);
  }
  await store.close();
}

// --- export as JSONL, in a process of its own so its peak RSS is its own
if (wants("export")) {
  const samples = [];
  let peakMb = 0;
  for (let run = 0; run < 3; run++) {
    const result = spawnSync(process.execPath, [fileURLToPath(new URL("./audit-export-child.js", import.meta.url)), big], { encoding: "utf8" });
    if (result.status !== 0) throw new Error(result.stderr);
    const { count, seconds, maxRssKb } = JSON.parse(result.stdout);
    if (count !== ROWS) throw new Error(`exported ${count}`);
    samples.push(count / seconds);
    peakMb = Math.max(peakMb, maxRssKb / 1024);
  }
  const m = median(samples);
  rows.push(["export JSONL", `${Math.round(m).toLocaleString("en")} rows/s`, ">= 200 000 rows/s", verdict(m >= 200_000), reproduce("export")]);
  rows.push(["export peak RSS", `${peakMb.toFixed(0)} MB (max of 3)`, "< 150 MB", verdict(peakMb < 150), reproduce("export")]);
}

// --- prune everything, on copies
if (wants("prune")) {
  const samples = [];
  for (let run = 0; run < 3; run++) {
    const copy = join(dir, `prune-${run}.db`);
    copyFileSync(big, copy);
    const store = await AuditStore.open(copy);
    const started = performance.now();
    const deleted = await store.prune(now + 1);
    samples.push((performance.now() - started) / 1000);
    await store.close();
    rmSync(copy, { force: true });
    if (deleted !== ROWS) throw new Error(`pruned ${deleted}`);
  }
  const m = median(samples);
  rows.push([`prune ${ROWS.toLocaleString("en")} rows`, `${m.toFixed(2)} s`, "<= 3 s", verdict(m <= 3), reproduce("prune")]);
}

console.log(`audit store, median of runs (ingest 3 x 200 000, record() 200 x 1000, query 50, export 3, prune 3)`);
console.log(table(rows));
