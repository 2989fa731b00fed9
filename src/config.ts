/**
 * One resolved Config: command-line flags > MLXS_* environment variables > the config file
 * > defaults. Every setting has one parser, so a bad value reads the same wherever it
 * came from, and the message names where it came from.
 */
import { readFileSync } from "node:fs";
import { homedir, totalmem } from "node:os";
import { join } from "node:path";
import { GPU_CHOICES, type GpuChoice } from "./core/types.js";
import { parseDuration } from "./durations.js";
import { UsageError } from "./errors.js";
import { MODEL_NAME } from "./core/registry.js";


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

/** Bytes ("8gb", "512mb", a number) or a share of this machine's RAM ("80%"). */
export function memorySize(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value > 0 ? Math.floor(value) : undefined;
  if (typeof value !== "string") return undefined;
  const share = /^(\d+(?:\.\d+)?)\s*%$/.exec(value.trim());
  if (share) return Number(share[1]) > 0 && Number(share[1]) <= 100 ? Math.floor((totalmem() * Number(share[1])) / 100) : undefined;
  const match = /^(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m|gb|g|tb|t)?$/i.exec(value.trim());
  if (!match) return undefined;
  const unit = { b: 1, k: 2 ** 10, kb: 2 ** 10, m: 2 ** 20, mb: 2 ** 20, g: 2 ** 30, gb: 2 ** 30, t: 2 ** 40, tb: 2 ** 40 }[(match[2] ?? "b").toLowerCase() as "b"];
  const bytes = Math.floor(Number(match[1]) * unit);
  return bytes > 0 ? bytes : undefined;
}

/** A comma-separated list (the environment's way) or a JSON list of strings (the config file's). */
const stringList = (v: unknown) => {
  const list = typeof v === "string" ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
  return Array.isArray(list) && list.every((s) => typeof s === "string" && s !== "") ? (list as string[]) : undefined;
};
/** An http:// or https:// address, without a trailing slash. */
const httpUrl = (v: unknown) => {
  if (typeof v !== "string" || !/^https?:\/\/[^/\s]/i.test(v)) return undefined;
  try {
    new URL(v);
  } catch {
    return undefined;
  }
  return v.replace(/\/+$/, "");
};
const flag = (v: unknown) => (v === true || v === "1" || v === "true" ? true : v === false || v === "0" || v === "false" || v === "" ? false : undefined);

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
  auditDb: { env: "MLXS_AUDIT_DB", expects: "a file path or a postgres:// URL", parse: nonEmptyString },
  sealKey: { env: "MLXS_SEAL_KEY", expects: "a file path", parse: nonEmptyString },
  auditRetentionDays: { env: "MLXS_AUDIT_RETENTION_DAYS", numeric: true, expects: "an integer from 0 (keep everything) to 36500", parse: integer(0, 36_500) },
  modelsDir: { env: "MLXS_MODELS_DIR", expects: "a directory path", parse: nonEmptyString },
  keepAlive: { env: "MLXS_KEEP_ALIVE", expects: "a duration such as 30s, 5m or 1h (0 unloads at once, -1 never)", parse: parseDuration },
  maxKeepAlive: { env: "MLXS_MAX_KEEP_ALIVE", expects: "a duration such as 30m or 1h", parse: (v: unknown) => { const ms = parseDuration(v); return ms !== undefined && ms >= 0 ? ms : undefined; } },
  maxLoaded: { env: "MLXS_MAX_LOADED", numeric: true, expects: "an integer from 0 (no limit but memory) to 1000", parse: integer(0, 1000) },
  memoryBudget: { env: "MLXS_MEMORY_BUDGET", expects: "a size such as 8gb or 512mb, or a share of RAM such as 80%", parse: memorySize },
  loadWait: { env: "MLXS_LOAD_WAIT", expects: "a duration such as 30s", parse: (v: unknown) => { const ms = parseDuration(v); return ms !== undefined && ms > 0 ? ms : undefined; } },
  pin: { env: "MLXS_PIN", expects: "model names, comma-separated", parse: stringList },
  apiKeys: { env: "MLXS_API_KEYS", expects: "API keys, comma-separated", parse: stringList },
  // where mlxs serve listens, and so where the commands that talk to it look for it
  host: { env: "MLXS_HOST", expects: "a host name or IP address", parse: nonEmptyString },
  port: { env: "MLXS_PORT", numeric: true, expects: "an integer from 0 to 65535", parse: integer(0, 65_535) },
  // where those commands find a daemon that listens elsewhere (another machine, a proxy)
  url: { env: "MLXS_URL", expects: "an http:// or https:// URL", parse: httpUrl },
  debug: { env: "MLXS_DEBUG", expects: "1 or 0", parse: flag },
} satisfies Record<string, Setting<unknown>>;

type SettingName = keyof typeof SETTINGS;
type SettingValues = { [K in SettingName]: NonNullable<ReturnType<(typeof SETTINGS)[K]["parse"]>> };

/** Flags as commander hands them over: already parsed by `parseFlag`, absent when not given. */
export type ConfigFlags = Partial<SettingValues> & { config?: string };

export interface Config extends Omit<SettingValues, "model" | "threads" | "maxKeepAlive" | "pin" | "apiKeys" | "debug" | "host" | "port" | "url"> {
  model?: string;
  /** llama.cpp threads; absent: measured for each model when it loads (core/threads.ts) */
  threads?: number;
  /** the audit database file */
  auditDb: string;
  /** the audit log's sealing key file (audit/seal.ts); sealing is on where it exists */
  sealKey: string;
  /** the config file's `models` map: name -> spec */
  models: Record<string, string>;
  /** models never evicted: --pin, MLXS_PIN, and the config file's models with "pin": true */
  pin: string[];
  /** the longest keep-alive a request may ask for, ms; absent: no cap */
  maxKeepAlive?: number;
  /** API keys from MLXS_API_KEYS or the config file's "apiKeys" (serve adds --api-key and --api-keys-file) */
  apiKeys: string[];
  debug: boolean;
  /** where mlxs serve listens, when set (flag, MLXS_HOST/MLXS_PORT, config file); else DEFAULTS */
  host?: string;
  port?: number;
  /** the daemon's address for the commands that talk to one (MLXS_URL, config file "url") */
  url?: string;
  configFile: string;
  configDir: string;
  dataDir: string;
  modelsDir: string;
}

export const DEFAULTS = {
  host: "127.0.0.1",
  port: 10242,
  gpu: "auto" as GpuChoice,
  ctxSize: 4096,
  // bench/parallel.js, 4 clients on 2 cores, 1 thread: parallel 4 gave 1.58x the throughput
  // of 1 and a median first token after 42 ms instead of 987 (2: 1.42x, 478 ms). Each
  // sequence costs a full context of KV cache, so lower it for big models on small memory.
  parallel: 4,
  queue: 64,
  auditRetentionDays: 30,
  // Ollama's default: an idle model stays five minutes
  keepAlive: 5 * 60_000,
  // Ollama's default on a CPU (three per GPU there); memory is the stricter limit
  maxLoaded: 3,
  memoryBudget: "80%",
  loadWait: 30_000,
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
  return { configDir, dataDir, defaultModelsDir: join(dataDir, "models") };
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
  const { defaultModelsDir, ...paths } = dirs;
  const auditDb = pick("auditDb") ?? join(dirs.dataDir, "audit.db");
  return {
    ...paths,
    configFile,
    model: pick("model"),
    models: file.models ?? {},
    modelsDir: pick("modelsDir") ?? defaultModelsDir,
    keepAlive: pick("keepAlive") ?? DEFAULTS.keepAlive,
    maxKeepAlive: pick("maxKeepAlive"),
    maxLoaded: pick("maxLoaded") ?? DEFAULTS.maxLoaded,
    memoryBudget: pick("memoryBudget") ?? memorySize(DEFAULTS.memoryBudget)!,
    loadWait: pick("loadWait") ?? DEFAULTS.loadWait,
    pin: [...new Set([...(pick("pin") ?? []), ...(file.pinned ?? [])])],
    apiKeys: pick("apiKeys") ?? [],
    debug: pick("debug") ?? false,
    host: pick("host"),
    port: pick("port"),
    url: pick("url"),
    gpu: pick("gpu") ?? DEFAULTS.gpu,
    threads: pick("threads"),
    ctxSize: pick("ctxSize") ?? DEFAULTS.ctxSize,
    parallel: pick("parallel") ?? DEFAULTS.parallel,
    queue: pick("queue") ?? DEFAULTS.queue,
    auditDb,
    // beside an SQLite file; for a PostgreSQL log, in this machine's data directory (each
    // machine of a fleet seals its own chain with its own key)
    sealKey: pick("sealKey") ?? (/^postgres(ql)?:\/\//i.test(auditDb) ? join(dirs.dataDir, "audit-seal.key") : `${auditDb}.seal-key`),
    auditRetentionDays: pick("auditRetentionDays") ?? DEFAULTS.auditRetentionDays,
  };
}

type FileValues = Partial<SettingValues> & { models?: Record<string, string>; pinned?: string[] };

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
      ({ specs: values.models, pinned: values.pinned } = parseModelsMap(path, value));
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

/** "models": {"name": "spec"} or {"name": {"model": "spec", "pin": true}}. */
function parseModelsMap(path: string, value: unknown): { specs: Record<string, string>; pinned: string[] } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`config file ${path}: "models" must be an object of name: model spec`);
  }
  const specs: Record<string, string> = {};
  const pinned: string[] = [];
  for (const [name, entry] of Object.entries(value)) {
    if (!MODEL_NAME.test(name)) {
      throw new UsageError(`config file ${path}: model name "models.${name}" may hold only letters, digits and . _ : -`);
    }
    const object = typeof entry === "object" && entry !== null && !Array.isArray(entry) ? (entry as Record<string, unknown>) : undefined;
    const spec = object ? object.model : entry;
    if (typeof spec !== "string" || spec === "") {
      throw new UsageError(`config file ${path}: "models.${name}" must be a model path, hf: URI or URL, or {"model": ..., "pin": true}`);
    }
    if (object && (Object.keys(object).some((k) => k !== "model" && k !== "pin") || (object.pin !== undefined && typeof object.pin !== "boolean"))) {
      throw new UsageError(`config file ${path}: "models.${name}" takes only "model" and "pin" (true or false)`);
    }
    specs[name] = spec;
    if (object?.pin === true) pinned.push(name);
  }
  return { specs, pinned };
}
