/**
 * AuditLogFilter: which records a query, tail, export or stats covers. One parser takes
 * the raw strings of CLI flags and of HTTP query strings alike, keyed by field name, and a
 * bad value is refused with the field's name and what it accepts.
 */
import { STATUSES, type AuditStatus } from "./schema.js";
import { parseDuration } from "../durations.js";

export interface AuditLogFilter {
  model?: string;
  backend_type?: string;
  endpoint?: string;
  status?: AuditStatus;
  /** UTC milliseconds, inclusive */
  since?: number;
  /** UTC milliseconds, exclusive */
  until?: number;
  request_id?: string;
  /** the API key's label */
  client?: string;
  min_duration_ms?: number;
  /** undefined: no limit (exports) */
  limit?: number;
  offset: number;
  order: "desc" | "asc";
}

export type FilterField = keyof AuditLogFilter;
export const FILTER_FIELDS: readonly FilterField[] = [
  "model", "backend_type", "endpoint", "status", "since", "until", "request_id", "client", "min_duration_ms", "limit", "offset", "order",
];

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1_000_000;

export class FilterError extends Error {
  constructor(readonly field: string, readonly accepted: string) {
    super(`invalid ${field}: expected ${accepted}`);
    this.name = "FilterError";
  }
}

const TIME_ACCEPTED = "an ISO-8601 time (2026-11-28T10:00:00Z) or a duration ago (15m, 24h, 7d)";
// a date, optionally a time with optional seconds, fraction and zone
const ISO = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** An ISO-8601 time or a relative duration before `now`, as UTC milliseconds. */
export function parseTime(field: string, text: string, now: number): number {
  const ago = parseDuration(text);
  if (ago !== undefined && ago >= 0) return now - ago;
  const trimmed = text.trim();
  if (ISO.test(trimmed)) {
    // a date or time without a zone is UTC: the log is kept in UTC
    const zoned = /[T ]\d{2}:\d{2}/.test(trimmed) && !/(Z|[+-]\d{2}:?\d{2})$/i.test(trimmed) ? `${trimmed}Z` : trimmed;
    const ms = Date.parse(zoned.replace(" ", "T"));
    if (Number.isFinite(ms)) return ms;
  }
  throw new FilterError(field, TIME_ACCEPTED);
}

function parseInteger(field: string, text: string, min: number, max: number): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new FilterError(field, `an integer from ${min} to ${max}`);
  return n;
}

function parseText(field: string, text: string): string {
  if (text.length === 0 || text.length > 256) throw new FilterError(field, "a non-empty value of at most 256 characters");
  return text;
}

/**
 * Builds a filter from raw strings keyed by field name. Unknown fields are refused: a
 * typo must not widen a query silently. `defaultLimit` null means no limit.
 */
export function parseFilter(
  input: Record<string, string | undefined>,
  { now = Date.now(), defaultLimit = DEFAULT_LIMIT as number | null } = {},
): AuditLogFilter {
  const filter: AuditLogFilter = { offset: 0, order: "desc", limit: defaultLimit ?? undefined };
  for (const [field, raw] of Object.entries(input)) {
    if (raw === undefined) continue;
    switch (field) {
      case "model": case "backend_type": case "endpoint": case "request_id": case "client":
        filter[field] = parseText(field, raw);
        break;
      case "status":
        if (!(STATUSES as readonly string[]).includes(raw)) throw new FilterError(field, `one of ${STATUSES.join(", ")}`);
        filter.status = raw as AuditStatus;
        break;
      case "since": case "until":
        filter[field] = parseTime(field, raw, now);
        break;
      case "min_duration_ms":
        filter.min_duration_ms = parseInteger(field, raw, 0, Number.MAX_SAFE_INTEGER);
        break;
      case "limit":
        filter.limit = parseInteger(field, raw, 1, MAX_LIMIT);
        break;
      case "offset":
        filter.offset = parseInteger(field, raw, 0, Number.MAX_SAFE_INTEGER);
        break;
      case "order":
        if (raw !== "asc" && raw !== "desc") throw new FilterError(field, "asc or desc");
        filter.order = raw;
        break;
      default:
        // the unknown name is not repeated: over HTTP it is the client's text
        throw new FilterError("(unknown field)", `only the fields ${FILTER_FIELDS.join(", ")}`);
    }
  }
  if (filter.since !== undefined && filter.until !== undefined && filter.since > filter.until) {
    throw new FilterError("since", "a time before until");
  }
  return filter;
}
