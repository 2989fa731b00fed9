/**
 * `mlxs models list`: the models this machine can serve, without loading any: the config
 * file's `models` map and every GGUF file under the models directory, with what their
 * GGUF metadata says (architecture, quantisation, context length).
 */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { DEMO_MODEL_NAME, demoModelPath } from "../core/demo-model.js";
import { isRemoteSpec } from "../core/model-specs.js";
import { ggufFiles } from "../core/registry.js";
import { configFlagsFrom } from "./options.js";
import { colours, writeOut } from "./io.js";
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";

interface Listed {
  name: string;
  source: "config" | "directory";
  path: string | null;
  size_bytes: number | null;
  architecture: string | null;
  quantization: string | null;
  context_length: number | null;
  /** a configured remote model not downloaded yet, or a file that cannot be read */
  note: string | null;
}

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const listed: Listed[] = [];
  const demo = demoModelPath(config.modelsDir);
  for (const [name, spec] of Object.entries(config.models)) {
    const path = isRemoteSpec(spec) ? undefined : resolve(spec);
    listed.push(await describe(name, "config", path, path ? undefined : `not downloaded yet: ${spec}`));
  }
  for (const file of ggufFiles(config.modelsDir)) {
    const name = file.path === demo ? DEMO_MODEL_NAME : file.name;
    if (listed.some((m) => m.name === name || m.path === file.path)) continue;
    listed.push(await describe(name, "directory", file.path, undefined, file.sizeBytes));
  }
  if (opts.json) {
    writeOut(JSON.stringify({ models_dir: config.modelsDir, models: listed }) + "\n");
    return;
  }
  if (listed.length === 0) {
    process.stderr.write(`mlxs: no models in ${config.modelsDir} or the config file; get one with: mlxs models pull URL\n`);
    return;
  }
  const c = colours();
  const rows = [["NAME", "SIZE", "QUANT", "ARCH", "CONTEXT", "FROM"], ...listed.map((m) => [
    m.name, m.size_bytes === null ? "-" : size(m.size_bytes), m.quantization ?? "-", m.architecture ?? "-", m.context_length === null ? "-" : String(m.context_length),
    m.note ?? m.source,
  ])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  rows.forEach((row, i) => {
    const line = row.map((cell, k) => cell.padEnd(widths[k]!)).join("  ").trimEnd();
    writeOut(`${i === 0 ? c.bold(line) : line}\n`);
  });
}

async function describe(name: string, source: Listed["source"], path: string | undefined, note?: string, sizeBytes?: number): Promise<Listed> {
  const base: Listed = { name, source, path: path ?? null, size_bytes: sizeBytes ?? null, architecture: null, quantization: null, context_length: null, note: note ?? null };
  if (!path) return base;
  if (!existsSync(path)) return { ...base, note: "file not found" };
  base.size_bytes ??= statSync(path).size;
  try {
    const { readGgufFileInfo, GgufFileType } = await import("node-llama-cpp");
    const { metadata } = await readGgufFileInfo(path, { logWarnings: false, readTensorInfo: false });
    const architecture = metadata.general.architecture;
    const fileType = metadata.general.file_type;
    const context = (metadata as unknown as Record<string, { context_length?: number } | undefined>)[architecture]?.context_length;
    return {
      ...base,
      architecture,
      quantization: fileType === undefined ? null : String(GgufFileType[fileType] ?? fileType).replace(/^MOSTLY_/, ""),
      context_length: typeof context === "number" ? context : null,
    };
  } catch {
    return { ...base, note: "not a readable GGUF file" };
  }
}

function size(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(bytes / 2 ** 10))} KB`;
}
