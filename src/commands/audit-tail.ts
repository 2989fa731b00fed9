/** `mlxs audit tail`: the last records as a table or JSON lines; --follow keeps printing. */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { presentRow } from "../audit/export.js";
import type { AuditRow } from "../audit/schema.js";
import { AuditStore } from "../audit/store.js";
import { colours, filterFrom, openExisting } from "./audit-options.js";
import { configFlagsFrom } from "./options.js";
import { writeOut } from "./io.js";

const POLL_MS = 250;

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const filter = filterFrom({ ...opts, limit: opts.lines }, { limit: 20, order: "desc" });
  const print = opts.json ? (rows: AuditRow[]) => rows.forEach((r) => writeOut(JSON.stringify(presentRow(r)) + "\n")) : tablePrinter();

  let store = await openExisting(config, Boolean(opts.follow));
  if (!store && !opts.follow) return;
  const stop = stopSignal();
  try {
    if (!store) {
      process.stderr.write(`mlxs: no audit database yet at ${config.auditDb}; waiting for one\n`);
      while (!store && !stop.signal.aborted) {
        await sleep(POLL_MS, stop.signal);
        store = await AuditStore.open(config.auditDb, { create: false });
      }
      if (!store) return;
    }
    // the newest N, printed oldest first as tail does
    const last = await store.query(filter);
    let cursor = last.length ? Math.max(...last.map((r) => r.id)) : await store.lastId();
    if (last.length > 0) print(last.reverse());
    else if (!opts.follow) process.stderr.write("mlxs: no matching audit records\n");
    if (!opts.follow) return;
    const follow = { ...filter, limit: undefined, offset: 0 };
    while (!stop.signal.aborted) {
      await sleep(POLL_MS, stop.signal);
      const rows = await store.after(cursor, follow);
      if (rows.length === 0) continue;
      cursor = rows[rows.length - 1]!.id;
      print(rows);
    }
  } finally {
    stop.dispose();
    await store?.close();
  }
}

/** Ctrl-C ends --follow normally: exit 0. */
function stopSignal() {
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    signal: controller.signal,
    dispose: () => { process.off("SIGINT", onSignal); process.off("SIGTERM", onSignal); },
  };
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
