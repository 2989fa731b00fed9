/**
 * An export read back for `mlxs audit verify --file`: every row of a CSV, JSON lines or
 * JSON export (export.ts) as the chain encodes it (chain.ts), with its seal. Streamed:
 * JSON lines and CSV are read a chunk at a time; a JSON array is read whole.
 */
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { COLUMNS, EXPORT_COLUMNS } from "./schema.js";
import type { ChainedRow } from "./chain.js";

export class ExportFileError extends Error {}

/** a row of an export: the record's columns, its chain's, and the seal it carries (or null) */
export type ExportedRow = ChainedRow & { chain_seal: string | null };

const NUMBERS = new Set(["id", "duration_ms", "ttft_ms", "status_code", "prompt_tokens", "completion_tokens", "total_tokens", "tool_calls", "load_ms", "chain_seq"]);
const REQUIRED = ["chain_seq", "chain_prev", "chain_link"];

/** The rows of an export file, in file order; which format it is, it tells by its first character. */
export async function* readExportFile(path: string): AsyncGenerator<ExportedRow> {
  const chunks = createReadStream(path, { encoding: "utf8", highWaterMark: 1 << 20 });
  let lineNo = 0;
  try {
    const iterator = chunks[Symbol.asyncIterator]() as AsyncIterator<string>;
    const head = await iterator.next();
    if (head.done) return;
    const text = head.value as string;
    const first = text.trimStart()[0];
    const rest = (async function* () {
      yield text;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield next.value as string;
      }
    })();
    if (first === "[") {
      chunks.destroy();
      let all: unknown;
      try {
        all = JSON.parse(await readFile(path, "utf8"));
      } catch {
        throw new ExportFileError("the file is not a whole JSON array (is it cut short?)");
      }
      if (!Array.isArray(all)) throw new ExportFileError("the file is not a JSON array of records");
      for (const item of all) yield fromJson(item, ++lineNo);
    } else if (first === "{") {
      for await (const line of lines(rest)) {
        lineNo++;
        if (line.trim() === "") continue;
        let item: unknown;
        try {
          item = JSON.parse(line);
        } catch {
          throw new ExportFileError(`line ${lineNo} is not JSON`);
        }
        yield fromJson(item, lineNo);
      }
    } else {
      let header: string[] | undefined;
      for await (const fields of csvRecords(rest)) {
        lineNo++;
        if (!header) {
          header = fields.map((f) => f.value);
          for (const c of REQUIRED) if (!header.includes(c)) throw new ExportFileError(`the CSV has no ${c} column: export it again with this mlxs (older exports carry no chain)`);
          continue;
        }
        if (fields.length === 1 && fields[0]!.value === "" && !fields[0]!.quoted) continue;
        if (fields.length !== header.length) throw new ExportFileError(`record ${lineNo - 1} has ${fields.length} fields, the header ${header.length}`);
        const row: Record<string, unknown> = {};
        header.forEach((name, i) => {
          const { value, quoted } = fields[i]!;
          row[name] = !quoted && value === "" ? null : NUMBERS.has(name) ? Number(value) : value;
        });
        yield normalized(row, lineNo - 1);
      }
    }
  } finally {
    chunks.destroy();
  }
}

function fromJson(item: unknown, n: number): ExportedRow {
  if (typeof item !== "object" || item === null || Array.isArray(item)) throw new ExportFileError(`record ${n} is not an object`);
  const row = item as Record<string, unknown>;
  for (const c of REQUIRED) if (!(c in row)) throw new ExportFileError(`record ${n} has no ${c}: export it again with this mlxs (older exports carry no chain)`);
  return normalized(row, n);
}

/** A row as it was stored: the time in milliseconds, stream as 0 or 1, the columns in order. */
function normalized(row: Record<string, unknown>, n: number): ExportedRow {
  const out: Record<string, unknown> = {};
  for (const c of EXPORT_COLUMNS) out[c] = row[c] ?? null;
  const time = typeof row.timestamp === "string" ? Date.parse(row.timestamp) : NaN;
  if (!Number.isFinite(time)) throw new ExportFileError(`record ${n} has no readable timestamp`);
  out.timestamp = time;
  out.stream = row.stream === true || row.stream === 1 || row.stream === "1" || row.stream === "true" ? 1 : 0;
  for (const c of COLUMNS) if (NUMBERS.has(c) && typeof out[c] === "number" && !Number.isFinite(out[c])) throw new ExportFileError(`record ${n} has a column ${c} that is not a number`);
  if (!Number.isSafeInteger(out.id)) throw new ExportFileError(`record ${n} has no id`);
  return out as ExportedRow;
}

async function* lines(chunks: AsyncIterable<string>): AsyncGenerator<string> {
  let carry = "";
  for await (const chunk of chunks) {
    const parts = (carry + chunk).split("\n");
    carry = parts.pop()!;
    yield* parts;
  }
  if (carry !== "") yield carry;
}

/** RFC 4180 records, each field with whether it was quoted (an empty quoted field is "", an empty bare one null). */
async function* csvRecords(chunks: AsyncIterable<string>): AsyncGenerator<{ value: string; quoted: boolean }[]> {
  let fields: { value: string; quoted: boolean }[] = [];
  let value = "";
  let quoted = false;
  let inQuotes = false;
  let quoteSeen = false;
  for await (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++) {
      const ch = chunk[i]!;
      if (inQuotes) {
        if (quoteSeen) {
          quoteSeen = false;
          if (ch === '"') { value += '"'; continue; }
          inQuotes = false;
        } else if (ch === '"') {
          quoteSeen = true;
          continue;
        } else {
          value += ch;
          continue;
        }
      }
      if (ch === '"' && value === "" && !quoted) {
        inQuotes = true;
        quoted = true;
      } else if (ch === ",") {
        fields.push({ value, quoted });
        value = "";
        quoted = false;
      } else if (ch === "\n") {
        fields.push({ value, quoted });
        yield fields;
        fields = [];
        value = "";
        quoted = false;
      } else if (ch !== "\r") {
        value += ch;
      }
    }
  }
  if (quoteSeen) inQuotes = false;
  if (inQuotes) throw new ExportFileError("the file ends inside a quoted field (is it cut short?)");
  if (value !== "" || quoted || fields.length > 0) {
    fields.push({ value, quoted });
    yield fields;
  }
}
