// The hash chain's cost (issue 20), side by side in one run:
//   - writer ingest with chaining (this checkout) against ingest without it (the store as it
//     was before the chain began, built from git into a temp dir), SQLite, and PostgreSQL
//     where it is installed; rounds interleaved, each a fresh process and database
//     (goal: >= 0.95x);
//   - `mlxs audit verify` of 1 000 000 records, SQLite and PostgreSQL (goals: <= 3 s and
//     <= 5 s), its peak RSS (memory bounded: it streams).
//   node bench/audit-chain.js [--rounds 5] [--rows 1000000] [--only ingest|verify] [--no-pg]
// Child mode (one measurement in a fresh process): node bench/audit-chain.js --child ingest DIST LOCATION
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { median, table } from "./common.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);

if (args[0] === "--child") await child(args[1], args[2], args[3]);
else await main();

/** One ingest of 200 000 records (after 20 000 to warm up) through the writer of the store built at `dist`. */
async function child(what, dist, location) {
  const { AuditWriter } = await import(join(dist, "audit/writer.js"));
  const { openAuditStore } = await import(join(dist, "audit/open-store.js"));
  const { syntheticRecord } = await import(join(ROOT, "tests/fixtures/audit-records.js"));
  const store = await openAuditStore(location);
  const now = Date.now();
  // records as a daemon writes them: fractional durations, an instance
  const record = (i, prefix) => ({ ...syntheticRecord(i, { now, prefix }), duration_ms: 100 + (i % 977) / 7, ttft_ms: (i % 89) / 3, instance: "bench" });
  const ingest = async (count, prefix) => {
    const writer = new AuditWriter(store, { maxBuffer: 10_000 });
    const started = performance.now();
    for (let i = 0; i < count; i += 1000) {
      for (let j = i; j < i + 1000; j++) writer.record(record(j, prefix));
      await new Promise((r) => setImmediate(r));
      while (writer.stats.pending > 8000) await new Promise((r) => setTimeout(r, 1));
    }
    await writer.flush();
    if (writer.stats.dropped) throw new Error(`ingest dropped ${writer.stats.dropped}`);
    return count / ((performance.now() - started) / 1000);
  };
  await ingest(20_000, "warm");
  const cpu = process.cpuUsage();
  const rate = await ingest(200_000, "measured");
  const used = process.cpuUsage(cpu);
  await store.close();
  process.stdout.write(`${JSON.stringify({ what, rate, cpuUsPerRow: (used.user + used.system) / 200_000 })}\n`);
}

/** The store as it was before the chain: the parent of the commit that added chain.ts, compiled into a temp dir. */
function baselineBuild(dir) {
  const first = execFileSync("git", ["log", "--format=%H", "--diff-filter=A", "--", "src/audit/chain.ts"], { cwd: ROOT, encoding: "utf8" }).trim().split("\n").pop();
  const base = execFileSync("git", ["rev-parse", `${first}^`], { cwd: ROOT, encoding: "utf8" }).trim();
  const out = join(dir, "baseline");
  execFileSync("sh", ["-c", `mkdir -p '${out}' && git archive ${base} src tsconfig.json package.json | tar -x -C '${out}'`], { cwd: ROOT });
  symlinkSync(join(ROOT, "node_modules"), join(out, "node_modules"));
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(out, "tsconfig.json")], { cwd: out, stdio: "inherit" });
  return { dist: join(out, "dist"), commit: base.slice(0, 7) };
}

function measure(dist, location) {
  const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", "ingest", dist, location], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`ingest child failed: ${run.stderr}`);
  return JSON.parse(run.stdout.trim().split("\n").pop());
}

async function main() {
  const rounds = Number(option("--rounds", 5));
  const ROWS = Number(option("--rows", 1_000_000));
  const only = option("--only");
  const dir = mkdtempSync(join(tmpdir(), "mlxs-bench-chain-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const rows = [["measure", "median", "goal", "verdict", "detail"]];
  const verdict = (ok) => (ok ? "met" : "missed");
  let pg;
  if (!args.includes("--no-pg") && ["/usr/lib/postgresql/15/bin/initdb", "/usr/local/bin/initdb"].some(existsSync)) {
    const { startPostgres } = await import(join(ROOT, "tests/fixtures/postgres.js"));
    pg = await startPostgres();
    process.on("exit", () => pg.destroySync());
  }
  let databases = 0;
  const pgDatabase = async () => {
    const { default: pgLib } = await import("pg");
    const client = new pgLib.Client({ connectionString: pg.url });
    await client.connect();
    const name = `bench${++databases}`;
    await client.query(`CREATE DATABASE ${name}`);
    await client.end();
    return pg.url.replace(/\/postgres$/, `/${name}`);
  };

  if (only === undefined || only === "ingest") {
    const baseline = baselineBuild(dir);
    const current = join(ROOT, "dist");
    for (const store of ["sqlite", ...(pg ? ["postgres"] : [])]) {
      const samples = { baseline: [], chained: [] };
      const cpu = { baseline: [], chained: [] };
      for (let round = 0; round < rounds; round++) {
        // interleaved, the order swapped each round: the machine's drift falls on both
        for (const which of round % 2 ? ["chained", "baseline"] : ["baseline", "chained"]) {
          const location = store === "sqlite" ? join(dir, `${which}-${round}.db`) : await pgDatabase();
          const result = measure(which === "baseline" ? baseline.dist : current, location);
          samples[which].push(result.rate);
          cpu[which].push(result.cpuUsPerRow);
          process.stderr.write(`${store} round ${round + 1}: ${which} ${Math.round(result.rate)} records/s\n`);
        }
      }
      const ratio = median(samples.chained) / median(samples.baseline);
      rows.push([`${store} ingest, chained / not (${baseline.commit})`, `${ratio.toFixed(2)}x`, ">= 0.95x", verdict(ratio >= 0.95),
        `${Math.round(median(samples.chained)).toLocaleString("en")} vs ${Math.round(median(samples.baseline)).toLocaleString("en")} records/s; CPU ${median(cpu.chained).toFixed(1)} vs ${median(cpu.baseline).toFixed(1)} us/row`]);
    }
  }

  if (only === undefined || only === "verify") {
    const { verifyStore } = await import(join(ROOT, "dist/audit/verify.js"));
    const { openAuditStore } = await import(join(ROOT, "dist/audit/open-store.js"));
    const { syntheticRecord } = await import(join(ROOT, "tests/fixtures/audit-records.js"));
    for (const [store, goal] of [["sqlite", 3], ...(pg ? [["postgres", 5]] : [])]) {
      const location = store === "sqlite" ? join(dir, "verify.db") : await pgDatabase();
      const db = await openAuditStore(location);
      const now = Date.now();
      const started = performance.now();
      for (let i = 0; i < ROWS; i += 5000) {
        const batch = [];
        for (let j = i; j < Math.min(ROWS, i + 5000); j++) batch.push({ ...syntheticRecord(j, { now, spacingMs: 2_000, prefix: "v", timeOrdered: true }), duration_ms: 100 + (j % 977) / 7, instance: j % 5 === 0 ? "west" : "east" });
        await db.insert(batch);
      }
      process.stderr.write(`${store}: filled ${ROWS} rows in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
      const times = [];
      let peak = 0;
      for (let run = 0; run < 3; run++) {
        const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
        const t = performance.now();
        const result = await verifyStore(db, []);
        times.push((performance.now() - t) / 1000);
        clearInterval(sampler);
        if (!result.whole || result.rows !== ROWS) throw new Error(`verify: ${JSON.stringify(result.chains)}`);
      }
      await db.close();
      const m = median(times);
      rows.push([`${store} verify of ${ROWS.toLocaleString("en")} records`, `${m.toFixed(2)} s`, `<= ${goal} s`, verdict(m <= goal), `${(ROWS / m / 1000).toFixed(0)}k rows/s; peak RSS ${Math.round(peak / 1048576)} MB`]);
    }
  }
  process.stdout.write(`audit chain, medians (ingest: ${rounds} interleaved rounds of 200 000 records; verify: 3 runs)\n${table(rows)}\n`);
  process.exit(0);
}
