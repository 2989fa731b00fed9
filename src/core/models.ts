/**
 * Model specs -> local files -> loaded models. A spec is a config name, a local `.gguf`
 * path, an `hf:user/repo[:quant]` URI or an http(s) URL; remote ones are downloaded once
 * into the models directory through node-llama-cpp's resolver.
 */
import { stat, open } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { CoreError, type ModelSource } from "./types.js";
import { firstLine } from "./engine.js";

export interface DownloadProgress {
  url: string;
  downloadedBytes: number;
  totalBytes: number;
}

export interface ResolveOptions {
  /** where remote models are cached */
  modelsDir: string;
  /** the config file's `models` map: name -> spec */
  named?: Record<string, string>;
  onDownloadProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
}

const REMOTE = /^(hf:|https?:\/\/)/i;

export function isRemoteSpec(spec: string): boolean {
  return REMOTE.test(spec);
}

/** The name a model is served under: its config name, or its file name without `.gguf`. */
export function modelNameFromPath(path: string): string {
  return basename(path).replace(/\.gguf$/i, "");
}

export async function resolveModelSpec(spec: string, options: ResolveOptions): Promise<ModelSource> {
  const named = options.named?.[spec];
  if (named !== undefined) {
    if (options.named?.[named] !== undefined) {
      throw new CoreError("invalid_request", `model "${spec}" in the config file names another model name; give it a path or URL`);
    }
    const source = await resolveModelSpec(named, { ...options, named: undefined });
    return { name: spec, path: source.path };
  }
  const path = isRemoteSpec(spec) ? await download(spec, options) : resolve(spec);
  await checkGgufFile(path);
  return { name: modelNameFromPath(path), path };
}

async function download(uri: string, options: ResolveOptions): Promise<string> {
  const { resolveModelFile } = await import("node-llama-cpp");
  try {
    return await resolveModelFile(uri, {
      directory: options.modelsDir,
      cli: false,
      signal: options.signal,
      onProgress: options.onDownloadProgress
        ? ({ downloadedSize, totalSize }) => options.onDownloadProgress!({ url: uri, downloadedBytes: downloadedSize, totalBytes: totalSize })
        : undefined,
    });
  } catch (error) {
    throw new CoreError("not_found", `cannot download model ${uri}: ${firstLine(error)}`, { cause: error });
  }
}

/**
 * Refuses, with a message that says why, what llama.cpp would only call "Failed to load
 * model": a missing file, a directory, a file that is not GGUF, a truncated one.
 */
export async function checkGgufFile(path: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new CoreError("not_found", `model file not found: ${path}`);
  if (!info.isFile()) throw new CoreError("invalid_request", `model path is not a file: ${path}`);
  const handle = await open(path, "r");
  try {
    const magic = Buffer.alloc(4);
    await handle.read(magic, 0, 4, 0);
    if (magic.toString("latin1") !== "GGUF") throw new CoreError("invalid_request", `not a GGUF model file: ${path}`);
  } finally {
    await handle.close();
  }
  const { readGgufFileInfo } = await import("node-llama-cpp");
  let lastTensorOffset = 0;
  try {
    const gguf = await readGgufFileInfo(path, { logWarnings: false, spliceSplitFiles: false });
    for (const tensor of gguf.tensorInfo ?? []) lastTensorOffset = Math.max(lastTensorOffset, Number(tensor.fileOffset));
  } catch (error) {
    throw new CoreError("invalid_request", `damaged GGUF model file ${path}: ${firstLine(error)}`, { cause: error });
  }
  if (info.size <= lastTensorOffset) {
    throw new CoreError("invalid_request", `truncated GGUF model file (${info.size} bytes, tensor data goes past ${lastTensorOffset}): ${path}`);
  }
}
