/**
 * The mlxs program: declares every command and imports each one only when it runs, so
 * that `mlxs --help` never loads llama.cpp.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { readFileSync } from "node:fs";
import { integer, parseFlag } from "./config.js";
import { CommandFailure, UsageError } from "./errors.js";
import { AuditStoreError } from "./audit/errors.js";
import { EXPORT_FORMATS } from "./audit/export.js";
import { CoreError } from "./core/types.js";
import { addAuditDbOption, addCoreOptions, addDaemonOptions, addSamplingOptions } from "./commands/options.js";
import { addFilterOptions } from "./commands/audit-options.js";
import { guardOutput, outputClosed } from "./commands/io.js";
import { MlxsCommand } from "./commands/suggest.js";
import { EXIT_SOFTWARE, installLastResort } from "./commands/last-resort.js";

const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };

/** Exit statuses, as the manual page documents them. */
export const EXIT = { ok: 0, failure: 1, usage: 2, software: EXIT_SOFTWARE, interrupted: 130 } as const;

type Action = (...args: unknown[]) => Promise<void>;
const lazy = (module: string): Action => async (...args) => {
  const { run } = (await import(module)) as { run: Action };
  await run(...args);
};

function buildProgram(): Command {
  const program = new MlxsCommand("mlxs")
    .description("Run local LLMs (GGUF) from one program: an OpenAI- and Anthropic-compatible server, a terminal chat, embeddings, and a privacy-first audit log.")
    .version(version, "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .addOption(new Option("--config <file>", "config file (default: $XDG_CONFIG_HOME/mlxs/config.json, or $MLXS_HOME/config.json)"))
    .showSuggestionAfterError()
    .exitOverride()
    .addHelpText("after", `
Environment:
  MLXS_HOME        put config and data under one directory
  MLXS_MODEL, MLXS_GPU, MLXS_THREADS, MLXS_CTX_SIZE, MLXS_PARALLEL, MLXS_QUEUE,
  MLXS_MODELS_DIR, MLXS_KEEP_ALIVE, MLXS_MAX_KEEP_ALIVE, MLXS_MAX_LOADED,
  MLXS_MEMORY_BUDGET, MLXS_LOAD_WAIT, MLXS_PIN (comma-separated)
                   defaults for the flags of the same name
  MLXS_API_KEYS    admin API keys for mlxs serve, comma-separated
  MLXS_HOST, MLXS_PORT
                   where mlxs serve listens (default: 127.0.0.1, 10242)
  MLXS_URL         where ps, chat --url and audit tail --url find the daemon
                   (default: the serve address above)
  MLXS_API_KEY     the API key they send it
  MLXS_DEBUG       1: stack traces and llama.cpp's own log on stderr
  MLXS_AUDIT_DB    the audit database: a file, or a postgres:// URL (default: <data dir>/audit.db)
  MLXS_AUDIT_RETENTION_DAYS
                   how long audit records are kept (default: 30, 0 = forever)
  MLXS_SEAL_KEY    the audit log's sealing key (default: <db>.seal-key beside an SQLite db)
  NO_COLOR         no colour in any output

Files:
  config           $MLXS_HOME/config.json, else $XDG_CONFIG_HOME/mlxs/config.json (~/.config/mlxs)
  data             $MLXS_HOME, else $XDG_DATA_HOME/mlxs (~/.local/share/mlxs): audit.db, models/

Exit status: 0 ok (also when the reader of the output went away, as with | head),
1 failure, 2 usage error, 70 internal error (a bug: restart), 130 interrupted.
Manual: man mlxs (in a clone of the source: man ./man/mlxs.1).`);

  const chat = program.command("chat")
    .description("chat in the terminal; with a prompt (or piped), one answer streamed to stdout")
    .argument("[prompt]", "what to ask; read from stdin when piped; none on a terminal opens the interactive chat")
    .option("-s, --system <text>", "system prompt")
    .option("--json", "print one JSON object with text, usage and timings instead of streaming")
    .option("--json-schema <file>", "answer in JSON valid against the JSON schema in this file (generated under its grammar)");
  addDaemonOptions(chat, "talk to a running mlxs serve (or any OpenAI-compatible server) instead of loading a model", { optional: true });
  addSamplingOptions(addCoreOptions(chat)).action(lazy("./commands/chat.js"));

  const embed = program.command("embed")
    .description("print embeddings of texts: one input per argument, or one per stdin line")
    .argument("[text...]", "texts to embed; read from stdin, one per line, when absent")
    .addOption(new Option("-f, --format <format>", "json (one document) or jsonl (one line per input)").choices(["json", "jsonl"]).default("json"));
  addAuditDbOption(addCoreOptions(embed)).action(lazy("./commands/embed.js"));
  addAuditDbOption(chat);

  const serve = program.command("serve")
    .description("serve the OpenAI and Anthropic APIs over HTTP, auditing every request")
    .addOption(new Option("--host <host>", "address to listen on (default: 127.0.0.1)").argParser(parseFlag("host", "--host")))
    .addOption(new Option("-p, --port <port>", "port to listen on, 0 for any free one (default: 10242)").argParser(parseFlag("port", "--port")))
    .addOption(new Option("--api-key <key>", "require this API key, with every right (repeatable; visible to other users in ps: prefer MLXS_API_KEYS, comma-separated, or --api-keys-file)").argParser(collect))
    .option("--api-keys-file <file>", "API keys with labels, one \"LABEL KEY [scope=inference|audit|admin] [rpm=N] [concurrency=N] [tpm=N]\" per line")
    .option("--allow-unauthenticated", "listen on a non-loopback address without API keys")
    .option("--no-audit", "keep no audit log (the log is on by default)")
    .addOption(new Option("--cors-origin <origin>", "allow browser requests from this origin (repeatable); requests from any other web page get 403").argParser(collect))
    .addOption(new Option("--allowed-host <name>", "answer requests for this Host name too (repeatable); on loopback only loopback names are answered otherwise, elsewhere any (DNS-rebinding protection)").argParser(collect))
    .addOption(new Option("--instance <name>", "the name this daemon's audit records carry, for a fleet sharing one log (default: the host name)").argParser((raw: string) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$/.test(raw)) throw new InvalidArgumentError("letters, digits and . _ : - (at most 63)");
      return raw;
    }))
    .option("--metrics", "serve Prometheus metrics at GET /metrics (OpenTelemetry GenAI names; behind the API key when keys are set)")
    .option("--metrics-public", "with --metrics: /metrics answers without an API key (for a scraper on a private network)")
    .addOption(new Option("--max-body <size>", "largest request body, e.g. 10mb, 512kb").default(10 * 1024 * 1024, "10mb").argParser(byteSize))
    .addOption(new Option("--request-timeout <seconds>", "longest a request may take, in seconds (fractions allowed)").default(600).argParser(secondsIn("--request-timeout", 0.01, 86_400)))
    .addOption(new Option("--header-timeout <seconds>", "answer 408 and close connections that have not sent their headers by then").default(10).argParser(secondsIn("--header-timeout", 0.1, 3600)))
    .addOption(new Option("--body-timeout <seconds>", "answer 408 to a request whose body has not all come by then (counted from its start)").default(60).argParser(secondsIn("--body-timeout", 0.1, 3600)))
    .addOption(new Option("--drain-timeout <seconds>", "on SIGTERM, how long running requests may finish").default(30).argParser(integerIn("--drain-timeout", 0, 3600)))
    .addOption(new Option("--stall-timeout <seconds>", "end a streamed answer or export whose reader takes nothing for this long").default(30).argParser(secondsIn("--stall-timeout", 0.1, 3600)))
    .addOption(new Option("--retention-days <n>", "prune audit records older than this at start and daily; 0 keeps everything (default: 30)").argParser(parseFlag("auditRetentionDays", "--retention-days")))
    .addOption(new Option("--keep-alive <duration>", "how long an idle model stays loaded: 30s, 5m, 1h; 0 unloads it after each request, -1 never (default: 5m)").argParser(parseFlag("keepAlive", "--keep-alive")))
    .addOption(new Option("--max-keep-alive <duration>", "the longest keep-alive a request may ask for (keep_alive); -1 asks for this (default: no cap)").argParser(parseFlag("maxKeepAlive", "--max-keep-alive")))
    .addOption(new Option("--max-loaded <n>", "models loaded at once; idle ones are evicted for a new one, least recently used first; 0: no limit but memory (default: 3)").argParser(parseFlag("maxLoaded", "--max-loaded")))
    .addOption(new Option("--memory-budget <size>", "memory the loaded models may take, by node-llama-cpp's estimates: 8gb, 512mb, or a share of RAM such as 60% (default: 80%)").argParser(parseFlag("memoryBudget", "--memory-budget")))
    .addOption(new Option("--load-wait <duration>", "how long a request waits for room to load its model before 503 (default: 30s)").argParser(parseFlag("loadWait", "--load-wait")))
    .addOption(new Option("--pin <name>", "keep this model loaded: loaded at start, never evicted or expired (repeatable)").argParser((raw: string, previous: string[] = []) => [...previous, raw]));
  addAuditDbOption(addCoreOptions(serve, { multipleModels: true })).action(lazy("./commands/serve.js"));

  const models = program.command("models")
    .description("the models on this machine: list, pull ahead of time, remove");
  const modelsDir = () => new Option("--models-dir <dir>", "the models directory (default: <data dir>/models)").argParser(parseFlag("modelsDir", "--models-dir"));
  models.command("list")
    .description("the config file's models and every .gguf in the models directory, from their GGUF metadata, without loading any")
    .addOption(modelsDir())
    .option("--json", "one JSON object")
    .action(lazy("./commands/models-list.js"));
  models.command("pull")
    .description("download a model into the models directory: progress on stderr, resumed if it breaks off, SHA-256 checked when the server gives one")
    .argument("<spec>", "an https:// URL of a .gguf file, or hf:user/repo[:quant]")
    .addOption(modelsDir())
    .option("--name <name>", "the name to keep it under (default: the URL's file name)")
    .option("--json", "one JSON object: name, path, size, sha256")
    .action(lazy("./commands/models-pull.js"));
  models.command("rm")
    .description("delete a model from the models directory")
    .argument("<name>", "its name, as models list shows it")
    .addOption(modelsDir())
    .action(lazy("./commands/models-rm.js"));

  addDaemonOptions(program.command("ps")
    .description("what a running mlxs serve has loaded: memory, context, requests, when each unloads"), "the daemon")
    .option("-f, --follow", "then print each load, unload and eviction as it happens, until Ctrl-C")
    .option("--json", "JSON (with -f: one object per line)")
    .action(lazy("./commands/ps.js"));

  const audit = program.command("audit")
    .description("read and maintain the audit log: one record per request, metadata only, never content");
  addDaemonOptions(addFilterOptions(audit.command("tail")
    .description("print the last records; --follow keeps printing new ones until Ctrl-C")
    .option("-n, --lines <n>", "how many recent records to show first; 0 with -f shows only new ones (default: 20)", integerIn("-n/--lines", 0, 1_000_000))
    .option("-f, --follow", "keep printing records as they are written")
    .option("--json", "JSON lines instead of a table"), { paging: false }), "read the log of a running mlxs serve over HTTP", { optional: true })
    .action(lazy("./commands/audit-tail.js"));
  addAuditDbOption(audit.command("prune")
    .description("delete records older than the retention period; one line of output, for cron")
    .option("--older-than <age>", "delete records older than this: a duration such as 30d or 12h, or an ISO-8601 time (default: the retention period)")
    .addOption(new Option("--retention-days <n>", "the retention period in days, 0 keeps everything (default: 30)").argParser(parseFlag("auditRetentionDays", "--retention-days")))
    .option("--dry-run", "count what would be deleted, delete nothing")
    .option("--vacuum", "give the freed space back to the file system afterwards")
    .option("-q, --quiet", "print nothing on success"))
    .action(lazy("./commands/audit-prune.js"));
  addFilterOptions(audit.command("export")
    .description("write records as CSV, JSON lines or JSON, oldest first")
    .addOption(new Option("--format <format>", "csv, jsonl or json").choices(EXPORT_FORMATS).default("csv"))
    .option("-o, --output <file>", "write to this file (atomically) instead of stdout")
    .option("--limit <n>", "at most this many records"))
    .action(lazy("./commands/audit-export.js"));
  addFilterOptions(audit.command("stats")
    .description("counts by status, model and endpoint; duration percentiles; tokens; error rate")
    .addOption(new Option("--by <group>", "usage per group instead: requests, errors, tokens, p50/p95 duration per API key, model, endpoint or UTC day").choices(["client", "model", "endpoint", "day"]))
    .option("--json", "one JSON object"), { paging: false })
    .action(lazy("./commands/audit-stats.js"));
  addAuditDbOption(audit.command("verify")
    .description("check the hash chain of every instance and its seals: records, head and how far sealed, or the first break (altered, removed, inserted, reordered, truncated, forged); exit 1 on a break")
    .option("--key <key|file>", "a verification key (from audit seal --init), or a file holding one: the seals' tags are checked with it; repeatable, one per key of a fleet", (raw: string, previous: string[] = []) => [...previous, raw])
    .option("--file <export>", "verify an export file (audit export, any format) instead of the database: no database needed")
    .option("--json", "one JSON object"))
    .action(lazy("./commands/audit-verify.js"));
  addAuditDbOption(audit.command("seal")
    .description("seal the head of this machine's chain now; with --init, create the sealing key and print the verification key once")
    .option("--init", "create the sealing key (refused where one exists) and print its verification key, to keep off this machine")
    .option("--seal-interval <duration>", "with --init: how often the key evolves and the log is sealed (default: 15m)")
    .option("--instance <name>", "the chain to seal: the --instance of the daemon that writes it (default: the host name)")
    .option("--json", "one JSON object"))
    .action(lazy("./commands/audit-seal.js"));

  const exitOverride = (command: Command) => { command.exitOverride(); command.commands.forEach(exitOverride); };
  exitOverride(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  guardOutput();
  installLastResort();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (error) {
    process.exitCode = exitCodeFor(error);
  }
  // the reader of the output left (| head): what it wanted, it got
  if (outputClosed()) process.exitCode = EXIT.ok;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** An integer flag that is not a setting: the settings' integer parser, with a usage error naming the flag. */
function integerIn(flag: string, min: number, max: number) {
  const parse = integer(min, max);
  return (raw: string): number => {
    const n = parse(raw);
    if (n === undefined) throw new UsageError(`${flag} must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`);
    return n;
  };
}

function secondsIn(flag: string, min: number, max: number) {
  return (raw: string): number => {
    const n = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN;
    if (!(n >= min && n <= max)) throw new UsageError(`${flag} must be a number of seconds from ${min} to ${max} (got ${JSON.stringify(raw)})`);
    return n;
  };
}

function byteSize(raw: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m|gb|g)?$/i.exec(raw.trim());
  const unit = { b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 }[(match?.[2] ?? "b").toLowerCase() as "b"];
  const bytes = match ? Math.floor(Number(match[1]) * unit) : NaN;
  if (!Number.isFinite(bytes) || bytes < 1024) throw new UsageError(`--max-body must be a size of at least 1kb, such as 10mb (got ${JSON.stringify(raw)})`);
  return bytes;
}

function exitCodeFor(error: unknown): number {
  if (outputClosed()) return EXIT.ok;
  if (error instanceof CommanderError) {
    // commander has already printed its message (or the help, or the version)
    return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  if (error instanceof UsageError) {
    process.stderr.write(`mlxs: ${error.message}\n`);
    return EXIT.usage;
  }
  if (error instanceof AuditStoreError || error instanceof CommandFailure) {
    process.stderr.write(`mlxs: ${error.message}\n`);
    return EXIT.failure;
  }
  if (error instanceof CoreError) {
    process.stderr.write(`mlxs: ${error.message}\n`);
    if (process.env.MLXS_DEBUG && error.cause) process.stderr.write(`${String((error.cause as Error).stack ?? error.cause)}\n`);
    return error.kind === "cancelled" ? EXIT.interrupted : EXIT.failure;
  }
  const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
  process.stderr.write(`mlxs: unexpected error: ${message}\n`);
  if (process.env.MLXS_DEBUG) process.stderr.write(`${(error as Error)?.stack ?? ""}\n`);
  return EXIT.failure;
}
