/**
 * `mlxs ps`: what a running daemon has in memory (like `ollama ps`): each model's memory,
 * context, running and queued requests, and when it will be unloaded. `-f` then prints
 * each load, unload and eviction as it happens, until Ctrl-C.
 */
import type { Command } from "commander";
import { CommandFailure } from "../errors.js";
import { formatDuration } from "../durations.js";
import { loadConfig } from "../config.js";
import { daemonAddress, daemonGet } from "./daemon.js";
import { clientApiKey } from "./api-key.js";
import { configFlagsFrom } from "./options.js";
import { readSse } from "./sse-reader.js";
import { colours, stopSignal, writeOut } from "./io.js";

interface Loaded {
  model: string;
  state: string;
  memory_bytes: number;
  rss_bytes: number | null;
  context_size: number | null;
  running: number;
  queued: number;
  pinned: boolean;
  expires_at: string | null;
}

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const daemon = daemonAddress(opts.url, loadConfig(configFlagsFrom(opts)));
  const base = daemon.url;
  const apiKey = clientApiKey(opts);
  const json = Boolean(opts.json);
  const stop = stopSignal();
  try {
    if (!opts.follow) {
      const response = await daemonGet(daemon, "/v1/ps", { apiKey, signal: stop.signal });
      if (!response) return;
      const { data } = (await response.body.json()) as { data: Loaded[] };
      writeOut(json ? `${JSON.stringify({ models: data })}\n` : table(data));
      return;
    }
    const stream = await daemonGet(daemon, "/v1/ps/events", { apiKey, signal: stop.signal });
    if (!stream) return;
    try {
      for await (const { data } of readSse(stream.body)) {
        const event = JSON.parse(data) as { type: string; models?: Loaded[] } & Record<string, unknown>;
        if (json) writeOut(`${data}\n`);
        else writeOut(event.type === "snapshot" ? table(event.models ?? []) : line(event));
      }
    } catch (error) {
      if (!stop.signal.aborted) throw new CommandFailure(`the event stream from ${base} broke off: ${(error as Error).message}`);
    }
    if (!stop.signal.aborted) throw new CommandFailure(`${base} closed the event stream`);
  } finally {
    stop.dispose();
  }
}

function table(models: Loaded[]): string {
  const c = colours();
  const rows = [["NAME", "STATE", "MEMORY", "CONTEXT", "RUNNING", "QUEUED", "UNLOADS"], ...models.map((m) => [
    m.model, m.state, mb(m.rss_bytes ?? m.memory_bytes), m.context_size === null ? "-" : String(m.context_size), String(m.running), String(m.queued),
    m.pinned ? "never (pinned)" : m.expires_at === null ? (m.running + m.queued > 0 ? "when idle" : "never") : `in ${formatDuration(Math.max(0, Date.parse(m.expires_at) - Date.now()))}`,
  ])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((row, i) => {
    const text = row.map((cell, k) => cell.padEnd(widths[k]!)).join("  ").trimEnd();
    return `${i === 0 ? c.bold(text) : text}\n`;
  }).join("");
}

/** One event: `23:04:05 load beta (702 ms)`. */
function line(event: Record<string, unknown>): string {
  const time = typeof event.at === "string" ? event.at.slice(11, 19) : "";
  const detail = event.type === "load" ? ` (${Math.round(Number(event.load_ms))} ms)`
    : event.type === "unload" ? ` (${String(event.reason).replace("_", "-")})`
      : event.type === "evict" ? ` (for ${event.for})`
        : event.type === "load_failed" ? `: ${event.error}` : "";
  return `${time} ${event.type} ${event.model}${detail}\n`;
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
