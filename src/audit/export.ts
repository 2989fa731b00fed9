/**
 * Audit rows as CSV (RFC 4180, header row), JSON lines or one JSON array, written page by
 * page with backpressure: a million rows never sit in memory at once.
 */
import { once } from "node:events";
import type { Writable } from "node:stream";
import type { AuditLogFilter } from "./filter.js";
import { COLUMNS, type AuditRow } from "./schema.js";
import type { AuditStore } from "./store.js";

export type ExportFormat = "csv" | "jsonl" | "json";
export const EXPORT_FORMATS: readonly ExportFormat[] = ["csv", "jsonl", "json"];

/** A row as people and scripts read it: the time in ISO-8601, UTC. */
export function presentRow(row: AuditRow) {
  return { ...row, timestamp: new Date(row.timestamp).toISOString() };
}

function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

const formats: Record<ExportFormat, { head: string; row: (row: AuditRow, index: number) => string; tail: string }> = {
  csv: {
    head: COLUMNS.join(",") + "\r\n",
    row: (row) => {
      const shown = presentRow(row);
      return COLUMNS.map((c) => csvField(c === "stream" ? (row.stream ? 1 : 0) : shown[c])).join(",") + "\r\n";
    },
    tail: "",
  },
  jsonl: { head: "", row: (row) => JSON.stringify(presentRow(row)) + "\n", tail: "" },
  json: { head: "[", row: (row, index) => (index === 0 ? "\n" : ",\n") + JSON.stringify(presentRow(row)), tail: "\n]\n" },
};

/** Writes every row the filter selects to `out`; returns how many. Leaves `out` open. */
export async function exportRows(store: AuditStore | undefined, filter: AuditLogFilter, format: ExportFormat, out: Writable): Promise<number> {
  const shape = formats[format];
  let count = 0;
  const write = async (text: string) => {
    if (text && !out.write(text)) await once(out, "drain");
  };
  await write(shape.head);
  if (store) {
    for await (const page of store.pages(filter)) {
      let chunk = "";
      for (const row of page) chunk += shape.row(row, count++);
      await write(chunk);
    }
  }
  await write(format === "json" && count === 0 ? "]\n" : shape.tail);
  return count;
}
