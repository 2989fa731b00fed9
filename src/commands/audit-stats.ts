/** `mlxs audit stats`: counts, latency percentiles, tokens and error rate. */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import type { AuditStats, GroupStats, StatsGroup } from "../audit/store.js";
import { filterFrom, openExisting } from "./audit-options.js";
import { configFlagsFrom } from "./options.js";
import { colours, writeOut } from "./io.js";

const EMPTY: AuditStats = {
  total: 0, byStatus: {}, byModel: {}, byEndpoint: {}, durationMs: { p50: null, p95: null, p99: null },
  tokens: { prompt: 0, completion: 0, total: 0 }, tokensPerSecond: null, errorRate: null, first: null, last: null,
};

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const filter = filterFrom(opts, { limit: null, order: "desc" });
  const store = await openExisting(config);
  let stats = EMPTY;
  let groups: GroupStats[] = [];
  const by = opts.by as StatsGroup | undefined;
  try {
    if (store && by) groups = await store.statsBy(filter, by);
    else if (store) stats = await store.stats(filter);
  } finally {
    await store?.close();
  }
  if (by) return printGroups(by, groups, opts.json === true);
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  if (opts.json) {
    writeOut(JSON.stringify({ ...stats, first: iso(stats.first), last: iso(stats.last) }) + "\n");
    return;
  }
  const c = colours();
  const list = (counts: Record<string, number>) => Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(", ") || "-";
  const num = (n: number | null, digits = 0) => (n === null ? "-" : n.toFixed(digits));
  const lines: [string, string][] = [
    ["records", stats.total === 0 ? "0" : `${stats.total} (${iso(stats.first)} to ${iso(stats.last)})`],
    ["by status", list(stats.byStatus)],
    ["error rate", stats.errorRate === null ? "-" : `${(stats.errorRate * 100).toFixed(1)}%`],
    ["duration ms", `p50 ${num(stats.durationMs.p50)}  p95 ${num(stats.durationMs.p95)}  p99 ${num(stats.durationMs.p99)}`],
    ["tokens", `in ${stats.tokens.prompt}  out ${stats.tokens.completion}  total ${stats.tokens.total}`],
    ["tokens/s", num(stats.tokensPerSecond, 1)],
    ["by model", list(stats.byModel)],
    ["by endpoint", list(stats.byEndpoint)],
  ];
  for (const [label, value] of lines) writeOut(`${c.bold(label.padEnd(12))} ${value}\n`);
}

/** `--by`: one row per group (a table, or with --json one object). */
function printGroups(by: StatsGroup, groups: GroupStats[], json: boolean): void {
  if (json) {
    writeOut(`${JSON.stringify({ by, data: groups })}\n`);
    return;
  }
  const c = colours();
  const num = (n: number | null, digits = 0) => (n === null ? "-" : n.toFixed(digits));
  const rows = [[by, "requests", "errors", "tokens in", "tokens out", "p50 ms", "p95 ms", "tokens/s"],
    ...groups.map((g) => [g.key, String(g.requests), String(g.errors), String(g.prompt_tokens), String(g.completion_tokens), num(g.p50_ms), num(g.p95_ms), num(g.tokens_per_second, 1)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  rows.forEach((row, i) => {
    const line = row.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join("  ");
    writeOut(`${i === 0 ? c.bold(line) : line}\n`);
  });
}
