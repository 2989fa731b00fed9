/**
 * `mlxs models pull SPEC`: a model into the models directory ahead of time. An http(s)
 * URL is downloaded with progress on stderr, resumed where it broke off (here, or in an
 * earlier pull), and checked against the SHA-256 the server gives; an `hf:` URI goes
 * through node-llama-cpp's resolver.
 */
import type { Command } from "commander";
import { basename } from "node:path";
import { existsSync, statSync } from "node:fs";
import { loadConfig } from "../config.js";
import { UsageError } from "../errors.js";
import { downloadModel } from "../core/download.js";
import { modelNameFromPath, resolveModelSpec } from "../core/model-specs.js";
import { configFlagsFrom } from "./options.js";
import { downloadProgress } from "./progress.js";
import { interruptible, writeOut } from "./io.js";

export async function run(spec: string, _opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const progress = downloadProgress();
  let result: { path: string; bytes: number; sha256?: string; already?: boolean };
  if (/^https?:\/\//i.test(spec)) {
    const fileName = fileNameOf(spec, opts.name as string | undefined);
    const target = `${config.modelsDir}/${fileName}`;
    if (existsSync(target)) {
      result = { path: target, bytes: statSync(target).size, already: true };
    } else {
      result = await interruptible((signal) => downloadModel(spec, {
        modelsDir: config.modelsDir, fileName, signal, onProgress: progress.update,
        onResume: (from) => process.stderr.write(`mlxs: resuming at ${(from / 2 ** 20).toFixed(1)} MB\n`),
      }));
    }
  } else if (/^hf:/i.test(spec)) {
    const source = await interruptible((signal) => resolveModelSpec(spec, { modelsDir: config.modelsDir, onDownloadProgress: progress.update, signal }));
    result = { path: source.path, bytes: statSync(source.path).size };
  } else {
    throw new UsageError(`pull takes an https:// URL or an hf:user/repo[:quant] URI (got ${JSON.stringify(spec)})`);
  }
  progress.finish(result.path);
  const name = modelNameFromPath(result.path).replace(/-00001-of-\d{5}$/, "");
  if (opts.json) {
    writeOut(JSON.stringify({ name, path: result.path, size_bytes: result.bytes, sha256: result.sha256 ?? null, already_present: Boolean(result.already) }) + "\n");
    return;
  }
  const checked = result.sha256 ? ", SHA-256 checked" : "";
  writeOut(`${result.already ? "already pulled" : "pulled"} ${name} (${(result.bytes / 2 ** 20).toFixed(1)} MB${checked}): serve it as --model ${name}, or by name from mlxs serve\n`);
}

/** The file name in the models directory: --name NAME(.gguf), else the URL's own `.gguf` name. */
function fileNameOf(url: string, name: string | undefined): string {
  if (name !== undefined) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(name.replace(/\.gguf$/i, ""))) throw new UsageError("--name may hold only letters, digits and . _ : -");
    return /\.gguf$/i.test(name) ? name : `${name}.gguf`;
  }
  let file: string;
  try {
    file = decodeURIComponent(basename(new URL(url).pathname));
  } catch {
    throw new UsageError(`not a valid URL: ${url}`);
  }
  if (!/^[\w.+-]+\.gguf$/i.test(file)) throw new UsageError(`the URL does not end in a .gguf file name; give one with --name NAME`);
  return file;
}
