// The audit store on PostgreSQL against SQLite (issue 15), side by side in one run, on a
// private cluster this script starts (tests/fixtures/postgres.js) and a temp SQLite file:
//   writer ingest (goal on PostgreSQL >= 30 000 records/s), a filtered query over 1 000 000
//   rows (model + 24 h, limit 100; goal <= 20 ms median), export of those rows as JSONL
//   (goal >= 150 000 rows/s), prune of 30 days of them (goal <= 1 s: whole days dropped),
//   and the bytes a record takes with its indexes.
//   node bench/pg-audit.js [--rows 1000000]
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditStore } from "../dist/audit/store.js";
import { PgAuditStore } from "../dist/audit/pg-store.js";
import { parseFilter } from "../dist/audit/filter.js";
import { exportRows } from "../dist/audit/export.js";
import { syntheticRecord } from "../tests/fixtures/audit-records.js";
import { startPostgres } from "../tests/fixtures/postgres.js";
import { median, table, writerIngest } from "./common.js";

const args = process.argv.slice(2);
const ROWS = args.includes("--rows") ? Number(args[args.indexOf("--rows") + 1]) : 1_000_000;
const dir = mkdtempSync(join(tmpdir(), "mlxs-bench-pg-"));
const cluster = await startPostgres();
process.on("exit", () => { cluster.destroySync(); rmSync(dir, { recursive: true, force: true }); });
const log = (line) => process.stderr.write(`${line}\n`);
const now = Date.now();
const spacing = (30 * 86_400_000) / ROWS;
const stores = {
  sqlite: await AuditStore.open(join(dir, "audit.db")),
  postgres: await PgAuditStore.open(cluster.url),
};
const result = { sqlite: {}, postgres: {} };

for (const [name, store] of Object.entries(stores)) {
  log(`${name}: writer ingest`);
  const samples = [];
  for (let run = 0; run < 3; run++) samples.push(await writerIngest(store, { count: 100_000, prefix: `i${run}`, spacingMs: 10, now }));
  result[name].ingest = median(samples);
  await store.prune(now + 1);
  log(`${name}: filling ${ROWS} rows over 30 days`);
  for (let i = 0; i < ROWS; i += 5000) {
    await store.insert(Array.from({ length: Math.min(5000, ROWS - i) }, (_, k) => syntheticRecord(i + k, { now, spacingMs: spacing, prefix: "f", timeOrdered: true })));
  }
  if (name === "postgres") await store.vacuum();
  log(`${name}: query, export, prune`);
  const filter = parseFilter({ model: "beta", since: "24h", limit: "100" });
  const times = [];
  for (let i = 0; i < 50; i++) {
    const started = performance.now();
    if ((await store.query(filter)).length !== 100) throw new Error("the query found fewer than 100");
    times.push(performance.now() - started);
  }
  result[name].query = median(times);
  let exported = 0;
  const started = performance.now();
  await exportRows(store, parseFilter({ order: "asc" }, { defaultLimit: null }), "jsonl", async (text) => { exported += text.length > 0 ? 1 : 0; return true; });
  const { count } = { count: ROWS };
  result[name].export = count / ((performance.now() - started) / 1000);
  result[name].bytes = name === "sqlite"
    ? statSync(join(dir, "audit.db")).size / ROWS
    : Number((await store.pool.query("SELECT sum(pg_total_relation_size(c.oid)) AS b FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_logs'::regclass")).rows[0].b) / ROWS;
  // everything older than today's start: 29 whole days and a part
  const cutoff = Math.floor(now / 86_400_000) * 86_400_000;
  const pruneStarted = performance.now();
  const pruned = await store.prune(cutoff);
  result[name].prune = (performance.now() - pruneStarted) / 1000;
  result[name].pruned = pruned;
  await store.close();
}

const fmt = (n) => Math.round(n).toLocaleString("en");
const { sqlite: s, postgres: p } = result;
console.log(`The audit store on PostgreSQL 15 (a private cluster, fsync off) vs SQLite, ${fmt(ROWS)} generated records over 30 days, one run`);
console.log(table([
  ["measure", "postgres", "sqlite", "postgres / sqlite", "goal (postgres)", "verdict"],
  ["writer ingest, records/s (median of 3 x 100 000)", fmt(p.ingest), fmt(s.ingest), `${(p.ingest / s.ingest).toFixed(2)}x`, ">= 30 000", p.ingest >= 30_000 ? "met" : "missed"],
  ["filtered query (model + 24 h, limit 100), ms (median of 50)", p.query.toFixed(2), s.query.toFixed(2), `${(p.query / s.query).toFixed(2)}x`, "<= 20 ms", p.query <= 20 ? "met" : "missed"],
  ["export as JSONL, rows/s", fmt(p.export), fmt(s.export), `${(p.export / s.export).toFixed(2)}x`, ">= 150 000", p.export >= 150_000 ? "met" : "missed"],
  [`prune of ${fmt(p.pruned)} records (29 days and a part), s`, p.prune.toFixed(3), s.prune.toFixed(3), `${(p.prune / s.prune).toFixed(2)}x`, "<= 1 s", p.prune <= 1 ? "met" : "missed"],
  ["bytes per record with indexes", fmt(p.bytes), fmt(s.bytes), `${(p.bytes / s.bytes).toFixed(2)}x`, "", ""],
]));
