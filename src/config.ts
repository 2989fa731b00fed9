/**
 * One resolved Config: command-line flags > MLXS_* environment variables > the config file
 * > defaults. Every setting has one parser, so a bad value reads the same wherever it
 * came from, and the message names where it came from.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { GPU_CHOICES, type GpuChoice } from "./core/types.js";

import { UsageError } from "./errors.js";


interface Setting<T> {
  env: string;
  /** numbers in the config file must be JSON numbers, not strings */
  numeric?: boolean;
  /** what a valid value looks like, for error messages */
  expects: string;
  /** the value, or undefined when it is not acceptable */
  parse(value: unknown): T | undefined;
}

export function integer(min: number, max: number): Setting<number>["parse"] {
  return (value) => {
    const n = typeof value === "string" && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
    return typeof n === "number" && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
  };
}

const nonEmptyString = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);

const SETTINGS = {
  model: { env: "MLXS_MODEL", expects: "a model path, hf: URI, URL or name", parse: nonEmptyString },
  gpu: {
    env: "MLXS_GPU", expects: `one of ${GPU_CHOICES.join(", ")}`,
    parse: (v: unknown) => (GPU_CHOICES as readonly unknown[]).includes(v) ? (v as GpuChoice) : undefined,
  },
  threads: { env: "MLXS_THREADS", numeric: true, expects: "an integer from 1 to 1024", parse: integer(1, 1024) },
  ctxSize: { env: "MLXS_CTX_SIZE", numeric: true, expects: "an integer from 64 to 1048576", parse: integer(64, 1_048_576) },
  parallel: { env: "MLXS_PARALLEL", numeric: true, expects: "an integer from 1 to 64", parse: integer(1, 64) },
  queue: { env: "MLXS_QUEUE", numeric: true, expects: "an integer from 0 to 100000", parse: integer(0, 100_000) },
  auditDb: { env: "MLXS_AUDIT_DB", expects: "a file path", parse: nonEmptyString },
  auditRetentionDays: { env: "MLXS_AUDIT_RETENTION_DAYS", numeric: true, expects: "an integer from 0 (keep everything) to 36500", parse: integer(0, 36_500) },
} satisfies Record<string, Setting<unknown>>;

type SettingName = keyof typeof SETTINGS;
type SettingValues = { [K in SettingName]: NonNullable<ReturnType<(typeof SETTINGS)[K]["parse"]>> };

/** Flags as commander hands them over: already parsed by `parseFlag`, absent when not given. */
export type ConfigFlags = Partial<SettingValues> & { config?: string };

export interface Config extends Omit<SettingValues, "model" | "threads"> {
  model?: string;
  /** llama.cpp threads; absent: measured for each model when it loads (core/threads.ts) */
  threads?: number;
  /** the audit database file */
  auditDb: string;
  /** the config file's `models` map: name -> spec */
  models: Record<string, string>;
  configFile: string;
  configDir: string;
  dataDir: string;
  modelsDir: string;
}

export const DEFAULTS = {
  gpu: "auto" as GpuChoice,
  ctxSize: 4096,
  // bench/parallel.js, 4 clients on 2 cores, 1 thread: parallel 4 gave 1.58x the throughput
  // of 1 and a median first token after 42 ms instead of 987 (2: 1.42x, 478 ms). Each
  // sequence costs a full context of KV cache, so lower it for big models on small memory.
  parallel: 4,
  queue: 64,
  auditRetentionDays: 30,
};

/** A commander argument parser for a setting: the same rules as the environment and file. */
export function parseFlag<K extends SettingName>(name: K, flag: string) {
  return (raw: string): SettingValues[K] => {
    const value = SETTINGS[name].parse(raw);
    if (value === undefined) throw new UsageError(`${flag} must be ${SETTINGS[name].expects} (got ${JSON.stringify(raw)})`);
    return value as SettingValues[K];
  };
}

export function directories(env: NodeJS.ProcessEnv = process.env) {
  const home = env.MLXS_HOME || undefined;
  const configDir = home ?? join(env.XDG_CONFIG_HOME || join(homedir(), ".config"), "mlxs");
  const dataDir = home ?? join(env.XDG_DATA_HOME || join(homedir(), ".local", "share"), "mlxs");
  return { configDir, dataDir, modelsDir: join(dataDir, "models") };
}

export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const dirs = directories(env);
  const configFile = flags.config ?? (env.MLXS_CONFIG || join(dirs.configDir, "config.json"));
  const file = readConfigFile(configFile);
  const pick = <K extends SettingName>(name: K): SettingValues[K] | undefined => {
    if (flags[name] !== undefined) return flags[name] as SettingValues[K];
    const setting = SETTINGS[name];
    const raw = env[setting.env];
    if (raw !== undefined && raw !== "") {
      const value = setting.parse(raw);
      if (value === undefined) throw new UsageError(`environment variable ${setting.env} must be ${setting.expects} (got ${JSON.stringify(raw)})`);
      return value as SettingValues[K];
    }
    return file[name] as SettingValues[K] | undefined;
  };
  return {
    ...dirs,
    configFile,
    model: pick("model"),
    models: file.models ?? {},
    gpu: pick("gpu") ?? DEFAULTS.gpu,
    threads: pick("threads"),
    ctxSize: pick("ctxSize") ?? DEFAULTS.ctxSize,
    parallel: pick("parallel") ?? DEFAULTS.parallel,
    queue: pick("queue") ?? DEFAULTS.queue,
    auditDb: pick("auditDb") ?? join(dirs.dataDir, "audit.db"),
    auditRetentionDays: pick("auditRetentionDays") ?? DEFAULTS.auditRetentionDays,
  };
}

type FileValues = Partial<SettingValues> & { models?: Record<string, string> };

function readConfigFile(path: string): FileValues {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new UsageError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`config file ${path} is not valid JSON`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UsageError(`config file ${path} must hold a JSON object`);
  }
  const values: FileValues = {};
  for (const [key, value] of Object.entries(json)) {
    if (key === "models") {
      values.models = parseModelsMap(path, value);
      continue;
    }
    if (!(key in SETTINGS)) {
      throw new UsageError(`config file ${path}: unknown key "${key}" (known: ${[...Object.keys(SETTINGS), "models"].join(", ")})`);
    }
    const setting = SETTINGS[key as SettingName];
    const parsed = "numeric" in setting && typeof value === "string" ? undefined : setting.parse(value);
    if (parsed === undefined) throw new UsageError(`config file ${path}: "${key}" must be ${setting.expects}`);
    (values as Record<string, unknown>)[key] = parsed;
  }
  return values;
}

function parseModelsMap(path: string, value: unknown): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`config file ${path}: "models" must be an object of name: model spec`);
  }
  for (const [name, spec] of Object.entries(value)) {
    if (typeof spec !== "string" || spec === "") {
      throw new UsageError(`config file ${path}: "models.${name}" must be a model path, hf: URI or URL`);
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(name)) {
      throw new UsageError(`config file ${path}: model name "models.${name}" may hold only letters, digits and . _ : -`);
    }
  }
  return value as Record<string, string>;
}
