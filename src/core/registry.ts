/**
 * The models a daemon can serve, by name: the ones it was started with (`--model`, the
 * configured default), the config file's `models` map, and every `.gguf` file under the
 * models directory. A split GGUF (`NAME-00001-of-00003.gguf` ...) is one model. The
 * directory is read again when a name is not known, so a file copied there (or pulled) is
 * served without a restart. Names stay names: no request ever names a path.
 */
import { readdirSync, statSync, type Dirent } from "node:fs";
import { join } from "node:path";
import { CoreError, type ModelSource } from "./types.js";
import { isDemoModelFile } from "./demo-model.js";

/** What a served name may look like (the config file's rule). */
export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const SPLIT_PART = /^(.+)-(\d{5})-of-(\d{5})\.gguf$/i;
/** how deep the models directory is searched (node-llama-cpp's downloads sit at the top) */
const MAX_DEPTH = 3;

export interface ModelEntry {
  name: string;
  /** the local file (the first part of a split model); absent until a remote spec is downloaded */
  path?: string;
  /** a config entry's spec, resolved (downloaded when remote) on its first load */
  spec?: string;
  /** bytes on disk, all parts together */
  sizeBytes?: number;
  /** never evicted, never expires */
  pinned: boolean;
  /** where the name comes from */
  origin: "started" | "config" | "directory";
}

export interface RegistryOptions {
  /**
   * the models the daemon was started with, already resolved to files; the first is the
   * default. None: a request must name its model, unless only one can be served.
   */
  started: ModelSource[];
  /** the config file's `models` map */
  configured?: Record<string, { spec: string; pin?: boolean }>;
  modelsDir?: string;
  /** names given with --pin */
  pins?: string[];
}

export class ModelRegistry {
  private entries = new Map<string, ModelEntry>();

  constructor(private readonly options: RegistryOptions) {
    this.refresh();
    if (this.entries.size === 0) throw new CoreError("invalid_request", "no model to serve");
    for (const pin of options.pins ?? []) {
      if (!this.entries.has(pin)) throw new CoreError("not_found", `--pin ${pin}: no such model (known: ${[...this.entries.keys()].join(", ")})`);
    }
  }

  /** The model a request without a `model` gets: the first one started with, else the only one there is. */
  get defaultName(): string {
    const first = this.options.started[0];
    if (first) return first.name;
    // the one model already known, without reading the directory again on every such request
    const names = (this.entries.size === 1 ? [...this.entries.values()] : this.list()).map((e) => e.name);
    if (names.length === 1) return names[0]!;
    throw new CoreError("invalid_request", names.length === 0 ? "no model to serve" : `no model named, and several can be served: ${names.join(", ")} (name one: a request's "model", or --model)`, { param: "model" });
  }

  /** The model it was started with, if any: the one whose runner starts llama.cpp before any request. */
  get startedName(): string | undefined { return this.options.started[0]?.name; }

  /** Every model, the directory read again. */
  list(): ModelEntry[] {
    this.refresh();
    return [...this.entries.values()];
  }

  /** The named model; the directory is read again before saying there is none. */
  get(name: string): ModelEntry | undefined {
    return this.entries.get(name) ?? (this.refresh(), this.entries.get(name));
  }

  /** Whether the name is known now (no reading of the directory: for the hot path, with get() on a miss). */
  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  private refresh(): void {
    const pins = new Set(this.options.pins ?? []);
    const entries = new Map<string, ModelEntry>();
    const add = (entry: Omit<ModelEntry, "pinned"> & { pinned?: boolean }) => {
      if (entries.has(entry.name)) return;
      entries.set(entry.name, { ...entry, pinned: Boolean(entry.pinned) || pins.has(entry.name) });
    };
    for (const source of this.options.started) add({ name: source.name, path: source.path, sizeBytes: sizeOf(source.path), origin: "started" });
    for (const [name, { spec, pin }] of Object.entries(this.options.configured ?? {})) {
      const known = this.entries.get(name);
      add({ name, spec, path: known?.path, sizeBytes: known?.path ? sizeOf(known.path) : undefined, pinned: pin, origin: "config" });
    }
    const taken = new Set([...entries.values()].map((e) => e.path).filter(Boolean));
    const dir = this.options.modelsDir;
    for (const file of dir ? directoryModels(dir) : []) {
      if (!taken.has(file.path)) add({ ...file, origin: "directory" });
    }
    this.entries = entries;
  }

  /** Records where a configured remote model was downloaded to. */
  resolved(name: string, path: string): void {
    const entry = this.entries.get(name);
    if (entry) Object.assign(entry, { path, sizeBytes: sizeOf(path) });
  }
}

/**
 * The models a directory offers: its GGUF files with a servable name, less the demo model's
 * file (written there on first use; served only when it is the one model there is, as started).
 */
export function directoryModels(dir: string): { name: string; path: string; sizeBytes: number }[] {
  return ggufFiles(dir).filter((file) => MODEL_NAME.test(file.name) && !isDemoModelFile(file.path, dir));
}

/** The GGUF models in a directory tree: one per split set, named by file name without `.gguf` (and the part suffix). */
export function ggufFiles(dir: string): { name: string; path: string; sizeBytes: number }[] {
  const found = new Map<string, { name: string; path: string; sizeBytes: number }>();
  const walk = (at: string, depth: number) => {
    let items: Dirent[];
    try {
      items = readdirSync(at, { withFileTypes: true });
    } catch {
      return;
    }
    for (const item of items.sort((a, b) => a.name.localeCompare(b.name))) {
      if (item.name.startsWith(".")) continue;
      const path = join(at, item.name);
      // a model linked into the directory counts as one put there (a linked directory does not: no loops)
      const isFile = item.isFile() || (item.isSymbolicLink() && isFileAt(path));
      if (item.isDirectory() && depth < MAX_DEPTH) walk(path, depth + 1);
      if (!isFile || !/\.gguf$/i.test(item.name)) continue;
      const split = SPLIT_PART.exec(item.name);
      const name = split ? split[1]! : item.name.replace(/\.gguf$/i, "");
      const key = split ? join(at, split[1]!) : path;
      const size = sizeOf(path) ?? 0;
      const known = found.get(key);
      if (known) known.sizeBytes += size;
      // a split model is loaded from its first part
      else if (!split || Number(split[2]) === 1) found.set(key, { name, path, sizeBytes: size });
      else found.set(key, { name, path: join(at, `${split[1]}-00001-of-${split[3]}.gguf`), sizeBytes: size });
    }
  };
  walk(dir, 0);
  const byName = new Map<string, { name: string; path: string; sizeBytes: number }>();
  for (const file of found.values()) if (!byName.has(file.name)) byName.set(file.name, file);
  return [...byName.values()];
}

function isFileAt(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}
