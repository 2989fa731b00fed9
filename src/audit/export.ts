/**
 * Audit rows as CSV (RFC 4180, header row), JSON lines or one JSON array, written page by
 * page with backpressure: a million rows never sit in memory at once.
 */
import type { AuditLogFilter } from "./filter.js";
import { EXPORT_COLUMNS, type AuditRow } from "./schema.js";
import type { LineFormat } from "./store.js";
import type { AuditLogStore } from "./open-store.js";

export type ExportFormat = "csv" | "jsonl" | "json";
export const EXPORT_FORMATS: readonly ExportFormat[] = ["csv", "jsonl", "json"];

/** A row as people and scripts read it: the time in ISO-8601, UTC. */
export function presentRow(row: AuditRow) {
  return { ...row, timestamp: new Date(row.timestamp).toISOString() };
}

const shapes: Record<ExportFormat, { line: LineFormat; separator: string; head: string; tail: string }> = {
  csv: { line: "csv", separator: "\r\n", head: EXPORT_COLUMNS.join(",") + "\r\n", tail: "\r\n" },
  jsonl: { line: "json", separator: "\n", head: "", tail: "\n" },
  json: { line: "json", separator: ",\n", head: "[", tail: "" },
};

/**
 * Where an export goes: resolves once it can take more (backpressure), or false when it
 * can take nothing more (its reader went away): the export then stops.
 */
export type ExportSink = (text: string) => Promise<boolean>;

/**
 * Writes every row the filter selects to `sink`: how many, and whether the export is
 * complete (false when the sink stopped taking it).
 */
export async function exportRows(store: AuditLogStore | undefined, filter: AuditLogFilter, format: ExportFormat, sink: ExportSink): Promise<{ count: number; complete: boolean }> {
  const shape = shapes[format];
  let count = 0;
  const write = (text: string) => (text ? sink(text) : Promise.resolve(true));
  if (!(await write(shape.head))) return { count, complete: false };
  if (store) {
    for await (const page of store.exportPages(filter, shape.line, shape.separator)) {
      // pages join like lines: a JSON array needs its comma between pages too
      const lead = format === "json" ? (count === 0 ? "\n" : ",\n") : "";
      count += page.count;
      // leaving the loop ends the generator, and with it the read
      if (!(await write(lead + page.text + shape.tail))) return { count, complete: false };
    }
  }
  const complete = await write(format === "json" ? (count === 0 ? "]\n" : "\n]\n") : "");
  return { count, complete };
}
