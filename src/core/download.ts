/**
 * A model file from an http(s) URL into the models directory (`mlxs models pull`): into
 * NAME.part first, resumed with a Range request where the connection broke (or where an
 * earlier pull stopped), checked against the SHA-256 the server gives (Hugging Face's
 * X-Linked-Etag or ETag, or a Digest / Repr-Digest header), and renamed into place only
 * when whole. An interrupted pull leaves the .part file for the next one to go on from.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { DownloadProgress } from "./model-specs.js";
import { checkGgufFile } from "./model-specs.js";
import { CoreError } from "./types.js";

const ATTEMPTS = 6;

export interface DownloadOptions {
  modelsDir: string;
  /** the file name in the models directory (default: the URL's) */
  fileName: string;
  onProgress?: (progress: DownloadProgress) => void;
  /** a resumed download says so (the bytes it already had) */
  onResume?: (fromByte: number) => void;
  signal?: AbortSignal;
}

export interface Downloaded {
  path: string;
  bytes: number;
  /** the SHA-256 checked, when the server gave one */
  sha256?: string;
}

export async function downloadModel(url: string, options: DownloadOptions): Promise<Downloaded> {
  const { Agent, interceptors, request } = await import("undici");
  // Hugging Face answers with a redirect to its CDN
  const dispatcher = new Agent().compose(interceptors.redirect({ maxRedirections: 5 }));
  mkdirSync(options.modelsDir, { recursive: true });
  const path = join(options.modelsDir, options.fileName);
  const part = `${path}.part`;
  let expectedSha: string | undefined;
  let total = 0;
  let failure: unknown;
  try {
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      const have = existsSync(part) ? statSync(part).size : 0;
      if (have > 0) options.onResume?.(have);
      try {
        const response = await request(url, {
          method: "GET", signal: options.signal, dispatcher, headersTimeout: 30_000, bodyTimeout: 60_000,
          headers: have > 0 ? { range: `bytes=${have}-` } : {},
        });
        if (response.statusCode === 416 && have > 0) {
          // the part file already holds everything
          await response.body.dump();
          total = have;
          break;
        }
        if (response.statusCode !== 200 && response.statusCode !== 206) {
          await response.body.dump();
          throw new CoreError("not_found", `cannot download ${url}: the server answered ${response.statusCode}`);
        }
        const resumed = response.statusCode === 206;
        expectedSha ??= sha256Of(response.headers);
        const length = Number(response.headers["content-length"] ?? NaN);
        total = (resumed ? have : 0) + (Number.isFinite(length) ? length : 0);
        let done = resumed ? have : 0;
        const file = createWriteStream(part, { flags: resumed ? "a" : "w" });
        try {
          for await (const chunk of response.body) {
            if (!file.write(chunk)) await new Promise<void>((resolve) => file.once("drain", () => resolve()));
            done += (chunk as Buffer).length;
            options.onProgress?.({ url, downloadedBytes: done, totalBytes: total });
          }
        } finally {
          await new Promise<void>((resolve, reject) => file.end((error?: Error | null) => (error ? reject(error) : resolve())));
        }
        if (Number.isFinite(length) && statSync(part).size < total) throw new Error("the connection closed early");
        total = statSync(part).size;
        failure = undefined;
        break;
      } catch (error) {
        if (options.signal?.aborted) throw new CoreError("cancelled", "the download was interrupted; pull again to resume it");
        if (error instanceof CoreError) throw error;
        failure = error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** attempt, 4_000)));
      }
    }
  } finally {
    await dispatcher.close();
  }
  if (failure) {
    const code = (failure as { code?: string }).code;
    throw new CoreError("unavailable", `cannot download ${url}: ${code ?? (failure as Error).message} (after ${ATTEMPTS} attempts; pull again to resume)`);
  }
  if (expectedSha) {
    const actual = await sha256File(part);
    if (actual !== expectedSha) {
      rmSync(part, { force: true });
      throw new CoreError("invalid_request", `the download of ${url} is damaged: its SHA-256 is ${actual}, the server said ${expectedSha}; removed it`);
    }
  }
  await checkGgufFile(part).catch((error: unknown) => {
    rmSync(part, { force: true });
    throw error instanceof CoreError ? new CoreError(error.kind, error.message.replace(part, url)) : error;
  });
  renameSync(part, path);
  return { path, bytes: total, sha256: expectedSha };
}

/** The SHA-256 a server states for its file, lower-case hex; undefined when it states none. */
export function sha256Of(headers: Record<string, string | string[] | undefined>): string | undefined {
  const header = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  for (const name of ["x-linked-etag", "etag"]) {
    const tag = header(name)?.replace(/^W\//, "").replace(/"/g, "");
    if (tag && /^[0-9a-f]{64}$/i.test(tag)) return tag.toLowerCase();
  }
  for (const name of ["repr-digest", "digest"]) {
    const match = /sha-256=:?([A-Za-z0-9+/=]+):?/i.exec(header(name) ?? "");
    if (match) return Buffer.from(match[1]!, "base64").toString("hex");
  }
  return undefined;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
