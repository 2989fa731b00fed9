/** Download progress on stderr: a live bar on a terminal, a start and an end line otherwise. */
import type { DownloadProgress } from "../core/model-specs.js";

const MB = 1024 * 1024;

export function downloadProgress(stream: NodeJS.WriteStream = process.stderr) {
  let started = false;
  let lastDrawn = 0;
  return {
    update({ url, downloadedBytes, totalBytes }: DownloadProgress) {
      const size = totalBytes > 0 ? `${(totalBytes / MB).toFixed(1)} MB` : "unknown size";
      if (!started) {
        started = true;
        if (!stream.isTTY) stream.write(`mlxs: downloading ${url} (${size})\n`);
      }
      const now = Date.now();
      const finished = totalBytes > 0 && downloadedBytes >= totalBytes;
      if (!stream.isTTY || (now - lastDrawn < 100 && !finished)) return;
      lastDrawn = now;
      const fraction = totalBytes > 0 ? Math.min(1, downloadedBytes / totalBytes) : 0;
      const width = 30;
      const filled = Math.round(fraction * width);
      stream.write(`\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ` +
        `${(downloadedBytes / MB).toFixed(1)}/${size}`);
    },
    finish(path: string) {
      if (!started) return;
      stream.write(`${stream.isTTY ? "\n" : ""}mlxs: saved ${path}\n`);
    },
  };
}
