/** What the `mlxs audit` commands share: filter flags, opening the store, colour. */
import { Option, type Command } from "commander";
import { type Config } from "../config.js";
import { UsageError } from "../errors.js";
import { FilterError, parseFilter, type AuditLogFilter } from "../audit/filter.js";
import type { AuditLogStore } from "../audit/open-store.js";
import { STATUSES } from "../audit/schema.js";
import { addAuditDbOption } from "./options.js";

/** flag attribute -> filter field */
const FILTER_FLAGS: [string, string, string, string][] = [
  ["model", "model", "--model <name>", "only this model"],
  ["backend", "backend_type", "--backend <type>", "only this backend, e.g. llama.cpp/cpu"],
  ["endpoint", "endpoint", "--endpoint <endpoint>", "only this endpoint, e.g. /v1/chat/completions or cli:chat"],
  ["status", "status", "--status <status>", `only this status: ${STATUSES.join(", ")}`],
  ["since", "since", "--since <time>", "from this time: ISO-8601, or a duration ago (15m, 24h, 7d)"],
  ["until", "until", "--until <time>", "before this time: ISO-8601, or a duration ago"],
  ["requestId", "request_id", "--request-id <id>", "only this request"],
  ["client", "client", "--client <label>", "only this API key's requests (by its label)"],
  ["minDuration", "min_duration_ms", "--min-duration <ms>", "only requests that took at least this long"],
];

export function addFilterOptions(command: Command, { paging = true } = {}): Command {
  for (const [, , flags, description] of FILTER_FLAGS) command.addOption(new Option(flags, description));
  if (paging) {
    command
      .addOption(new Option("--offset <n>", "skip this many records"))
      .addOption(new Option("--order <order>", "asc or desc"));
  }
  return addAuditDbOption(command);
}

/** The filter the flags describe; a bad value is a usage error naming the flag. */
export function filterFrom(
  opts: Record<string, unknown>,
  defaults: { limit: number | null; order: "asc" | "desc" },
): AuditLogFilter {
  const input: Record<string, string | undefined> = {};
  for (const [attribute, field] of FILTER_FLAGS) input[field] = opts[attribute] as string | undefined;
  input.limit = opts.limit as string | undefined;
  input.offset = opts.offset as string | undefined;
  input.order = (opts.order as string | undefined) ?? defaults.order;
  try {
    return parseFilter(input, { defaultLimit: defaults.limit });
  } catch (error) {
    if (error instanceof FilterError) {
      const flag = FILTER_FLAGS.find(([, field]) => field === error.field)?.[2].split(" ")[0] ?? `--${error.field}`;
      throw new UsageError(`invalid ${flag}: expected ${error.accepted}`);
    }
    throw error;
  }
}

/** The store if the database exists; undefined (and a note on stderr) if not. */
export async function openExisting(config: Config, quiet = false): Promise<AuditLogStore | undefined> {
  // imported here, not above: the database driver loads only when a command reads the log
  const { openAuditStore, shownAuditLocation } = await import("../audit/open-store.js");
  const store = await openAuditStore(config.auditDb, { create: false });
  if (!store && !quiet) process.stderr.write(`mlxs: no audit database yet at ${await shownAuditLocation(config.auditDb)}\n`);
  return store;
}


