/**
 * Durations, one grammar for all of mlxs (flags, the environment, the config file, requests,
 * the audit log's --since): a number of seconds, or text such as "300", "30s", "5m", "1h30m",
 * "250ms", "7d", "2w", as Ollama's clients send keep-alives and operators write them; any
 * negative value means "forever" (-1), where a caller allows it. A leaf that the core and
 * the audit log both use (neither imports the other).
 */
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Milliseconds, -1 for "forever", or undefined when `value` is not a duration. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? (value < 0 ? -1 : Math.round(value * 1000)) : undefined;
  if (typeof value !== "string") return undefined;
  const text = value.trim().toLowerCase();
  if (/^-\d+(\.\d+)?[a-z]*$/.test(text)) return -1;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== text) return undefined;
  return Math.round(parts.reduce((sum, [, n, unit]) => sum + Number(n) * UNITS[unit!]!, 0));
}

/** "5m", "forever", "at once": a duration for people. */
export function formatDuration(ms: number): string {
  if (ms < 0) return "forever";
  if (ms === 0) return "at once";
  const units: [string, number][] = [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]];
  let rest = ms;
  let text = "";
  for (const [unit, size] of units) {
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return text || `${ms}ms`;
}
