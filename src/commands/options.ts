/** Options that several commands share: where the model runs, and how it samples. */
import { Option, type Command } from "commander";
import { parseFlag, type ConfigFlags } from "../config.js";
import { UsageError } from "../errors.js";
import { MAX_STOP_SEQUENCES, SAMPLING_FIELDS, samplingError, type SamplingKey } from "../core/sampling.js";
import type { SamplingOptions } from "../core/types.js";

export function addCoreOptions(command: Command, { multipleModels = false } = {}): Command {
  const model = multipleModels
    ? new Option("-m, --model <spec...>", "model(s): a .gguf path, hf:user/repo[:quant], an https:// URL, or a name from the config file (default: those of the config file and models directory, else the built-in demo model)")
    : new Option("-m, --model <spec>", "model: a .gguf path, hf:user/repo[:quant], an https:// URL, or a name from the config file (default: those of the config file and models directory, else the built-in demo model)");
  return command
    .addOption(model)
    .addOption(new Option("--gpu <backend>", "auto, cpu, cuda or vulkan (default: auto)").argParser(parseFlag("gpu", "--gpu")))
    .addOption(new Option("-t, --threads <n>", "llama.cpp threads (default: measured for each model as it loads: the fastest of all cores, one fewer, half)").argParser(parseFlag("threads", "--threads")))
    .addOption(new Option("-c, --ctx-size <n>", "context size in tokens, per sequence (default: 4096, or less if the model was trained on less)").argParser(parseFlag("ctxSize", "--ctx-size")))
    .addOption(new Option("--parallel <n>", "generations running at once per model (default: 4)").argParser(parseFlag("parallel", "--parallel")))
    .addOption(new Option("--queue <n>", "requests that may wait for a free sequence (and, with --parallel, for a load); more get 503 and Retry-After (default: 64)").argParser(parseFlag("queue", "--queue")))
    .addOption(new Option("--models-dir <dir>", "where models are kept: every .gguf in it can be served by name (default: <data dir>/models)").argParser(parseFlag("modelsDir", "--models-dir")));
}

/** What each sampling flag does, for --help; names and ranges come from the core's table. */
const SAMPLING_HELP: Record<SamplingKey, string> = {
  temperature: "randomness, 0 is greedy (default: 0.8)",
  topP: "nucleus sampling (default: 0.95)",
  topK: "sample among the k likeliest tokens, 0 for all (default: 40)",
  minP: "drop tokens below p times the likeliest (default: 0.05)",
  seed: "random seed: the same seed gives the same answer",
  maxTokens: "stop after n tokens (default: until the context is full)",
  repeatPenalty: "penalize repeated tokens, 1 is off",
  frequencyPenalty: "penalize tokens by how often they appeared (-2 to 2)",
  presencePenalty: "penalize tokens that appeared at all (-2 to 2)",
};

export function addSamplingOptions(command: Command): Command {
  for (const { key, wire } of SAMPLING_FIELDS) {
    const flag = `--${wire.replace(/_/g, "-")}`;
    const short = key === "maxTokens" ? "-n, " : "";
    command.addOption(new Option(`${short}${flag} <value>`, SAMPLING_HELP[key]).argParser((raw: string) => {
      const value = raw.trim() === "" ? NaN : Number(raw);
      const error = samplingError(key, value);
      if (error) throw new UsageError(`${flag} ${error} (got ${JSON.stringify(raw)})`);
      return value;
    }));
  }
  command.addOption(new Option("--stop <text>", `stop when the text appears; repeatable, up to ${MAX_STOP_SEQUENCES}`).argParser((raw: string, previous: string[] = []) => {
    if (raw === "") throw new UsageError("--stop must not be empty");
    if (previous.length >= MAX_STOP_SEQUENCES) throw new UsageError(`--stop may be given at most ${MAX_STOP_SEQUENCES} times`);
    return [...previous, raw];
  }));
  return command;
}

export function samplingFrom(opts: Record<string, unknown>): SamplingOptions {
  const sampling: SamplingOptions = {};
  for (const { key } of SAMPLING_FIELDS) if (typeof opts[key] === "number") sampling[key] = opts[key];
  if (Array.isArray(opts.stop)) sampling.stop = opts.stop as string[];
  return sampling;
}

export function configFlagsFrom(opts: Record<string, unknown>): ConfigFlags {
  const { config, gpu, threads, ctxSize, parallel, queue, db, sealKey, retentionDays, modelsDir, keepAlive, maxKeepAlive, maxLoaded, memoryBudget, loadWait, pin, host, port } =
    opts as ConfigFlags & { db?: string; retentionDays?: number };
  // --url is not here: where a command finds the daemon is daemonAddress's to say
  return { config, gpu, threads, ctxSize, parallel, queue, auditDb: db, sealKey, auditRetentionDays: retentionDays, modelsDir, keepAlive, maxKeepAlive, maxLoaded, memoryBudget, loadWait, pin, host, port };
}

/** Where a command finds a running daemon without --url: said in each such command's --help. */
const FOUND = "$MLXS_URL, else the config file's url, else the host and port mlxs serve is configured with, else http://127.0.0.1:10242";

/**
 * --url, --api-key and --api-key-file, for the commands that talk to a daemon. `what`:
 * what --url does; `optional`: --url may come without a value (the address found as above),
 * for a command that otherwise works without a daemon.
 */
export function addDaemonOptions(command: Command, what: string, { optional = false } = {}): Command {
  const flags = optional ? `--url [url]` : `--url <url>`;
  const parse = parseFlag("url", "--url");
  return command
    .addOption(new Option(flags, `${what} (${optional ? "without a value" : "default"}: ${FOUND})`).argParser((raw: string) => {
      try {
        return parse(raw);
      } catch {
        // not quoted: after a bare --url this may be a prompt
        throw new UsageError(`--url must be an http:// or https:// address${optional ? " (given without one, put --url after the other arguments)" : ""}`);
      }
    }))
    .option("--api-key <key>", "API key for the daemon (visible to other users in ps: prefer --api-key-file or $MLXS_API_KEY)")
    .option("--api-key-file <file>", "read the API key from this file (the key alone on one line)");
}

/** --db and --seal-key, for every command that writes or reads the audit log. */
export function addAuditDbOption(command: Command): Command {
  return command
    .addOption(new Option("--db <file|url>", "audit database: an SQLite file, or a postgres:// URL shared by a fleet (default: <data dir>/audit.db)").argParser(parseFlag("auditDb", "--db")))
    .addOption(new Option("--seal-key <file>", "the audit log's sealing key; where it exists, the log is sealed (default: beside an SQLite --db as <db>.seal-key, else <data dir>/audit-seal.key)").argParser(parseFlag("sealKey", "--seal-key")));
}
