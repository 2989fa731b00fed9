/**
 * What both audit stores share and no database driver needs: the stats shapes, the WHERE
 * clause of a filter, stats from each store's own queries. Apart from store.ts, so that the
 * PostgreSQL store and the server use them without loading SQLite.
 */
import type { AuditLogFilter } from "./filter.js";

export interface AuditStats {
  total: number;
  byStatus: Record<string, number>;
  byModel: Record<string, number>;
  byEndpoint: Record<string, number>;
  durationMs: { p50: number | null; p95: number | null; p99: number | null };
  tokens: { prompt: number; completion: number; total: number };
  /**
   * generated tokens per second of generation time (duration less the time to first token
   * and the model's load, as /metrics times output tokens), over records that generated
   */
  tokensPerSecond: number | null;
  errorRate: number | null;
  first: number | null;
  last: number | null;
}

/** What `stats --by` groups records by. */
export const STATS_GROUPS = ["client", "model", "endpoint", "day"] as const;
export type StatsGroup = (typeof STATS_GROUPS)[number];

/** One group of `stats --by`: its key ("(none)" where the record has none), counts, tokens, durations. */
export interface GroupStats {
  key: string;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  p50_ms: number | null;
  p95_ms: number | null;
  /** generated tokens per second of generation time, as stats() counts it; null where nothing was generated */
  tokens_per_second: number | null;
}

/**
 * A record's generation time: its duration less the time to its first token and the wait
 * for its model to load (ttft_ms no longer holds the load). Both stores and /metrics count it so.
 */
export const GENERATING_MS = "(duration_ms - coalesce(ttft_ms, 0) - coalesce(load_ms, 0))";

/**
 * stats() from what each store queries its own way: the totals row, the counts by a
 * column, and the duration at a rank (the nearest-rank percentile).
 */
export async function statsOf(
  totals: Record<string, number | null>,
  groups: (column: string) => Promise<Record<string, number>>,
  durationAt: (offset: number) => Promise<number>,
): Promise<AuditStats> {
  const total = totals.total ?? 0;
  const percentile = (p: number) => (total === 0 ? null : durationAt(Math.min(total - 1, Math.max(0, Math.ceil(p * total) - 1))));
  return {
    total,
    byStatus: await groups("status"),
    byModel: await groups("model"),
    byEndpoint: await groups("endpoint"),
    durationMs: { p50: await percentile(0.5), p95: await percentile(0.95), p99: await percentile(0.99) },
    tokens: { prompt: totals.prompt ?? 0, completion: totals.completion ?? 0, total: totals.tokens ?? 0 },
    tokensPerSecond: tokensPerSecond(totals.generated ?? null, totals.generating_ms ?? null),
    errorRate: total === 0 ? null : (totals.errors ?? 0) / total,
    first: totals.first ?? null,
    last: totals.last ?? null,
  };
}

/** Tokens per second of generation time; null where nothing was generated (or in no time). */
function tokensPerSecond(generated: number | null, generatingMs: number | null): number | null {
  return generated && generatingMs && generatingMs > 0 ? generated / (generatingMs / 1000) : null;
}

/** A group as both stores' statsBy() query it: tokens and generation time summed, not yet divided. */
export type GroupRow = Omit<GroupStats, "tokens_per_second"> & { generated: number | null; generating_ms: number | null };

export function withTokensPerSecond({ generated, generating_ms, ...group }: GroupRow): GroupStats {
  return { ...group, tokens_per_second: tokensPerSecond(generated, generating_ms) };
}

/** The WHERE clause of a filter, with `?` placeholders (the PostgreSQL store numbers them). */
export function whereOf(filter: AuditLogFilter, extra: [string, unknown][] = []) {
  const conditions: [string, unknown][] = [...extra];
  if (filter.model !== undefined) conditions.push(["model = ?", filter.model]);
  if (filter.backend_type !== undefined) conditions.push(["backend_type = ?", filter.backend_type]);
  if (filter.endpoint !== undefined) conditions.push(["endpoint = ?", filter.endpoint]);
  if (filter.status !== undefined) conditions.push(["status = ?", filter.status]);
  if (filter.since !== undefined) conditions.push(["timestamp >= ?", filter.since]);
  if (filter.until !== undefined) conditions.push(["timestamp < ?", filter.until]);
  if (filter.request_id !== undefined) conditions.push(["request_id = ?", filter.request_id]);
  if (filter.client !== undefined) conditions.push(["client = ?", filter.client]);
  if (filter.min_duration_ms !== undefined) conditions.push(["duration_ms >= ?", filter.min_duration_ms]);
  return {
    where: conditions.length ? `WHERE ${conditions.map(([sql]) => sql).join(" AND ")}` : "",
    params: conditions.map(([, value]) => value),
  };
}
