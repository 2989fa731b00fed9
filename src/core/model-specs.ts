/**
 * Model specs -> local files -> loaded models. A spec is a config name, a local `.gguf`
 * path, an `hf:user/repo[:quant]` URI or an http(s) URL; remote ones are downloaded once
 * into the models directory through node-llama-cpp's resolver.
 */
import { stat, open } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
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
  const isUrl = /^https?:\/\//i.test(uri);
  // a URL's file is cached under its own name, found again without asking the server
  const fileName = isUrl ? urlFileName(uri) : undefined;
  if (fileName) {
    const cached = join(options.modelsDir, fileName);
    if (await stat(cached).then((s) => s.isFile(), () => false)) return cached;
    await probe(uri);
    // mlxs's own downloader, as `models pull` uses: resumed where the connection broke, checked
    const { downloadModel } = await import("./download.js");
    try {
      const onProgress = options.onDownloadProgress;
      return (await downloadModel(uri, { modelsDir: options.modelsDir, fileName, signal: options.signal, onProgress })).path;
    } catch (error) {
      if (error instanceof CoreError && error.kind === "cancelled") throw error;
      throw new CoreError("not_found", `cannot download model ${uri}: ${firstLine(error).replace(/^cannot download \S+: /, "")}`, { cause: error });
    }
  }
  const { resolveModelFile } = await import("node-llama-cpp");
  try {
    return await resolveModelFile(uri, {
      directory: options.modelsDir,
      fileName,
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

function urlFileName(url: string): string | undefined {
  let name: string;
  try {
    name = decodeURIComponent(basename(new URL(url).pathname));
  } catch {
    throw new CoreError("invalid_request", `not a valid URL: ${url}`);
  }
  return /^[\w.+-]+\.gguf$/i.test(name) ? name : undefined;
}

/**
 * node-llama-cpp's downloader retries an unreachable server for minutes; one quick request
 * first turns "connection refused" or a 404 into an answer within seconds.
 */
const NO_SERVER = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ERR_INVALID_URL"]);

async function probe(url: string): Promise<void> {
  const { request } = await import("undici");
  let status: number;
  try {
    const response = await request(url, { method: "HEAD", headersTimeout: 15_000, bodyTimeout: 15_000 });
    status = response.statusCode;
    await response.body.dump();
  } catch (error) {
    const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
    // a connection that broke is the download's to retry; no server at all is an answer now
    if (code !== undefined && !NO_SERVER.has(code)) return;
    const message = firstLine(error);
    throw new CoreError("not_found", `cannot download model ${url}: ${code && !message.includes(code) ? `${code} ` : ""}${message}`, { cause: error });
  }
  if (status === 404 || status === 410 || status === 401 || status === 403) {
    throw new CoreError("not_found", `cannot download model ${url}: the server answered ${status}`);
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
