/** `mlxs audit tail`: the last records as a table or JSON lines; --follow keeps printing. */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { presentRow } from "../audit/export.js";
import type { AuditRow } from "../audit/schema.js";
import type { AuditLogFilter } from "../audit/filter.js";
import { CommandFailure } from "../errors.js";
import { readSse } from "./sse-reader.js";
import { daemonAddress, daemonGet, type DaemonAddress } from "./daemon.js";
import { clientApiKey } from "./api-key.js";
import { filterFrom, openExisting } from "./audit-options.js";
import { shownAuditLocation } from "../audit/open-store.js";
import { configFlagsFrom } from "./options.js";
import { colours, stopSignal, writeOut } from "./io.js";

const POLL_MS = 250;

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const lines = (opts.lines as number | undefined) ?? 20;
  // -n 0: nothing old, only what comes next (tail -n 0 -f)
  const filter = filterFrom({ ...opts, limit: String(Math.max(lines, 1)) }, { limit: null, order: "desc" });
  const print = opts.json ? (rows: AuditRow[]) => rows.forEach((r) => writeOut(JSON.stringify(presentRow(r)) + "\n")) : tablePrinter();
  // with --url, the daemon's log over HTTP rather than a local database

  if (opts.url) return followRemote(daemonAddress(opts.url, config), clientApiKey(opts), opts, filter, lines, print);
  let store = await openExisting(config, Boolean(opts.follow));
  if (!store && !opts.follow) return;
  const stop = stopSignal();
  try {
    if (!store) {
      process.stderr.write(`mlxs: no audit database yet at ${await shownAuditLocation(config.auditDb)}; waiting for one\n`);
      while (!store && !stop.signal.aborted) {
        await sleep(POLL_MS, stop.signal);
        store = await openExisting(config, true);
      }
      if (!store) return;
    }
    // the newest N, printed oldest first as tail does
    const last = lines > 0 ? await store.query(filter) : [];
    let cursor = last.length ? Math.max(...last.map((r) => r.id)) : await store.lastId();
    if (last.length > 0) print(last.reverse());
    else if (!opts.follow && lines > 0) process.stderr.write("mlxs: no matching audit records\n");
    if (!opts.follow) return;
    const follow = { ...filter, limit: undefined, offset: 0 };
    let follower = store.follower();
    while (!stop.signal.aborted) {
      // PostgreSQL tells when a writer stored records (LISTEN/NOTIFY); an SQLite file is polled
      await follower.waitForChange(POLL_MS, stop.signal);
      // like tail -F: when the file is moved or deleted, follow the one begun in its place
      if (store.isDetached()) {
        const next = await openExisting(config, true).catch(() => undefined);
        if (next) {
          await store.close();
          process.stderr.write(`mlxs: ${config.auditDb} was moved or deleted; following the new file\n`);
          [store, follower, cursor] = [next, next.follower(), 0];
        }
      }
      const rows = await follower.after(cursor, follow);
      if (rows.length === 0) continue;
      cursor = rows[rows.length - 1]!.id;
      print(rows);
    }
  } finally {
    stop.dispose();
    await store?.close();
  }
}

/**
 * The same, from a running `mlxs serve`: the last records from /v1/audit/logs, then (with
 * --follow) each new one from the /v1/audit/stream event stream.
 */
async function followRemote(daemon: DaemonAddress, apiKey: string | undefined, opts: Record<string, unknown>, filter: AuditLogFilter, lines: number, print: (rows: AuditRow[]) => void): Promise<void> {
  const query = new URLSearchParams();
  for (const field of ["model", "backend_type", "endpoint", "status", "request_id"] as const) {
    if (filter[field] !== undefined) query.set(field, String(filter[field]));
  }
  for (const field of ["since", "until"] as const) if (filter[field] !== undefined) query.set(field, new Date(filter[field]!).toISOString());
  if (filter.min_duration_ms !== undefined) query.set("min_duration_ms", String(filter.min_duration_ms));
  const stop = stopSignal();
  const base = daemon.url;
  const get = (path: string, params: URLSearchParams) => daemonGet(daemon, path, { apiKey, signal: stop.signal, query: params });
  try {
    if (lines > 0) {
      const recent = new URLSearchParams(query);
      recent.set("limit", String(lines));
      const logs = await get("/v1/audit/logs", recent);
      if (!logs) return;
      const { data } = (await logs.body.json()) as { data: AuditRow[] };
      // the server's rows carry ISO times; the printers want milliseconds
      const rows = data.map((r) => ({ ...r, timestamp: Date.parse(String(r.timestamp)) })).reverse();
      if (rows.length > 0) print(rows);
    }
    if (!opts.follow) return;
    const stream = await get("/v1/audit/stream", query);
    if (!stream) return;
    try {
      for await (const { data } of readSse(stream.body)) {
        const row = JSON.parse(data) as AuditRow;
        print([{ ...row, timestamp: Date.parse(String(row.timestamp)) }]);
      }
    } catch (error) {
      if (!stop.signal.aborted) throw new CommandFailure(`the audit stream from ${base} broke off: ${(error as Error).message}`);
    }
    if (!stop.signal.aborted) throw new CommandFailure(`${base} closed the audit stream`);
  } finally {
    stop.dispose();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() { clearTimeout(timer); signal.removeEventListener("abort", done); resolve(); }
    signal.addEventListener("abort", done, { once: true });
  });
}

const COLUMNS: [string, number, (r: AuditRow) => string][] = [
  ["TIME (UTC)", 24, (r) => new Date(r.timestamp).toISOString()],
  ["REQUEST ID", 28, (r) => r.request_id],
  ["ENDPOINT", 22, (r) => r.endpoint],
  ["MODEL", 18, (r) => r.model ?? "-"],
  ["STATUS", 9, (r) => r.status],
  ["CODE", 4, (r) => r.status_code === null ? "-" : String(r.status_code)],
  ["MS", 8, (r) => r.duration_ms.toFixed(0)],
  ["TTFT", 6, (r) => r.ttft_ms === null ? "-" : r.ttft_ms.toFixed(0)],
  ["IN", 6, (r) => r.prompt_tokens === null ? "-" : String(r.prompt_tokens)],
  ["OUT", 6, (r) => r.completion_tokens === null ? "-" : String(r.completion_tokens)],
  ["ERROR", 0, (r) => r.error_type ?? ""],
];
const NUMERIC = new Set(["CODE", "MS", "TTFT", "IN", "OUT"]);

/** Fixed-width columns, so rows printed later by --follow line up with the first ones. */
function tablePrinter() {
  const c = colours();
  const cell = (name: string, width: number, text: string) => {
    if (width === 0) return text;
    const fitted = text.length > width ? text.slice(0, width - 1) + "…" : text;
    return NUMERIC.has(name) ? fitted.padStart(width) : fitted.padEnd(width);
  };
  const paintStatus = (status: string, text: string) =>
    status === "success" ? c.green(text) : status === "error" ? c.red(text) : c.yellow(text);
  let headerShown = false;
  return (rows: AuditRow[]) => {
    if (!headerShown) {
      headerShown = true;
      writeOut(c.bold(COLUMNS.map(([name, width]) => cell(name, width, name)).join("  ").trimEnd()) + "\n");
    }
    for (const row of rows) {
      const line = COLUMNS.map(([name, width, value]) => {
        const text = cell(name, width, value(row));
        return name === "STATUS" ? paintStatus(row.status, text) : text;
      }).join("  ").trimEnd();
      writeOut(line + "\n");
    }
  };
}
