// Shared by the benchmarks: the generated benchmark model, medians, and a plain table.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_MODEL, writeTinyModel } from "../dist/core/gguf-writer.js";
import { AuditWriter } from "../dist/audit/writer.js";
import { syntheticRecord } from "../tests/fixtures/audit-records.js";

/** The ~100 MB benchmark model, written once into the temp dir and reused by later runs. */
export async function benchModel() {
  const path = join(tmpdir(), `mlxs-bench-${BENCH_MODEL.seed}-${BENCH_MODEL.embeddingLength}x${BENCH_MODEL.blockCount}.gguf`);
  if (!existsSync(path)) {
    process.stderr.write(`writing the benchmark model to ${path} ...\n`);
    await writeTinyModel(path, BENCH_MODEL);
  }
  return path;
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((cell, i) => String(cell).padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

const CLI = fileURLToPath(new URL("../bin/mlxs.js", import.meta.url));

/**
 * `mlxs serve --port 0 ARGS` with MLXS_HOME at `home`, once it listens: its url, its
 * stderr so far, and stop() (SIGTERM; resolves when it has exited).
 */
export async function startServe(args, home) {
  const child = spawn(process.execPath, [CLI, "serve", "--port", "0", ...args], { env: { ...process.env, MLXS_HOME: home }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  const url = await new Promise((resolve, reject) => {
    child.stderr.on("data", (c) => {
      stderr += c;
      const m = /listening on (\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    child.on("close", (code) => reject(new Error(`mlxs serve exited ${code}: ${stderr}`)));
  });
  const exited = new Promise((resolve) => { if (child.exitCode !== null) resolve(); else child.on("close", resolve); });
  return { name: "mlxs", url, child, stderr: () => stderr, stop: () => { child.kill("SIGTERM"); return exited; } };
}

/** 1-token completions per second through `url`: `count` requests from `concurrency` clients. */
export async function requestsPerSecond(url, count = 120, concurrency = 4) {
  const { request } = await import("undici");
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < count) {
      const res = await request(`${url}/v1/completions`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "the", max_tokens: 1, temperature: 0 }),
      });
      await res.body.dump();
    }
  }));
  return count / ((performance.now() - started) / 1000);
}

/**
 * Records per second that an AuditWriter takes into `store`: `count` generated records fed
 * 1000 at a time, with the event loop let run between (as a daemon's would) and the feed
 * held back while 8000 wait. Throws if the writer dropped any.
 */
export async function writerIngest(store, { count, prefix, spacingMs, now = Date.now() }) {
  const writer = new AuditWriter(store, { maxBuffer: 10_000 });
  const started = performance.now();
  for (let i = 0; i < count; i += 1000) {
    for (let j = i; j < i + 1000; j++) writer.record(syntheticRecord(j, { now, prefix, spacingMs }));
    await new Promise((r) => setImmediate(r));
    while (writer.stats.pending > 8000) await new Promise((r) => setTimeout(r, 1));
  }
  await writer.flush();
  if (writer.stats.dropped) throw new Error(`ingest dropped ${writer.stats.dropped}`);
  return count / ((performance.now() - started) / 1000);
}
