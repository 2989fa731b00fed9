/** `mlxs audit export`: records as CSV, JSON lines or JSON, to stdout or atomically to a file. */
import type { Command } from "commander";
import { open, rename, rm } from "node:fs/promises";
import { once } from "node:events";
import { writeWithBackpressure } from "./io.js";
import { dirname, basename, join } from "node:path";
import { loadConfig } from "../config.js";
import { CommandFailure } from "../errors.js";
import { exportRows, type ExportFormat } from "../audit/export.js";
import { filterFrom, openExisting } from "./audit-options.js";
import { configFlagsFrom } from "./options.js";

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const filter = filterFrom(opts, { limit: null, order: "asc" });
  const format = opts.format as ExportFormat;
  const store = await openExisting(config);
  try {
    if (!opts.output) {
      // a reader that leaves (| head) ends the export quietly
      await exportRows(store, filter, format, (text) => writeWithBackpressure(process.stdout, text));
      return;
    }
    // a temporary file renamed into place: a reader (or a cron job that dies) never
    // sees half an export
    const target = String(opts.output);
    const temp = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
    const handle = await open(temp, "wx").catch((error: NodeJS.ErrnoException) => {
      throw new CommandFailure(`cannot write ${target}: ${error.code === "ENOENT" ? "no such directory" : error.code ?? error.message}`);
    });
    const out = handle.createWriteStream();
    let failure: Error | undefined;
    out.on("error", (error) => { failure = error; });
    try {
      const { count, complete } = await exportRows(store, filter, format, (text) => writeWithBackpressure(out, text));
      if (!complete) throw failure ?? new Error("the file was closed");
      out.end();
      await once(out, "finish");
      await rename(temp, target);
      process.stderr.write(`mlxs: exported ${count} records to ${target}\n`);
    } catch (error) {
      out.destroy();
      await rm(temp, { force: true });
      throw new CommandFailure(`cannot write ${target}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
    }
  } finally {
    await store?.close();
  }
}
