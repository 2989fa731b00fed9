/**
 * Streamed response bodies (server-sent events, exports): writes wait for the socket to
 * drain, so a slow reader slows the writer instead of growing memory, and a reader that
 * went away, stopped reading for longer than the stall timeout, or a request that was
 * cancelled (a client gone, the server shutting down) ends the response: every later
 * write is a no-op that reports false, and the handler stops.
 */
import type { ServerResponse } from "node:http";

export interface BodyWriterOptions {
  /** aborts when the request is cancelled: a write waiting for the reader gives up */
  signal?: AbortSignal;
  /** a write that cannot drain for this long ends the response (default 30 s) */
  stallTimeoutMs?: number;
}

export const DEFAULT_STALL_TIMEOUT_MS = 30_000;

export class BodyWriter {
  private closed = false;

  constructor(protected readonly res: ServerResponse, private readonly options: BodyWriterOptions = {}) {
    res.once("close", () => { this.closed = true; });
  }

  get open(): boolean {
    return !this.closed && !this.res.destroyed;
  }

  /** Writes one chunk; resolves false when the response can take nothing more. */
  write(chunk: string): Promise<boolean> {
    if (!this.open) return Promise.resolve(false);
    if (this.res.write(chunk)) return Promise.resolve(true);
    return this.drained();
  }

  /** Waits for the reader; a stalled reader or a cancelled request ends the response. */
  private drained(): Promise<boolean> {
    const { res } = this;
    const { signal, stallTimeoutMs = DEFAULT_STALL_TIMEOUT_MS } = this.options;
    return new Promise<boolean>((resolve) => {
      const settle = (drained: boolean) => {
        clearTimeout(timer);
        res.off("drain", onDrain);
        res.off("close", onClose);
        signal?.removeEventListener("abort", onGiveUp);
        if (!drained) res.destroy();
        resolve(drained && this.open);
      };
      const onDrain = () => settle(true);
      const onClose = () => settle(false);
      const onGiveUp = () => settle(false);
      const timer = setTimeout(onGiveUp, stallTimeoutMs);
      res.on("drain", onDrain);
      res.on("close", onClose);
      if (signal?.aborted) return settle(false);
      signal?.addEventListener("abort", onGiveUp, { once: true });
    });
  }

  end(): void {
    if (this.open) this.res.end();
  }

  /** Ends a body that is not complete, so that the reader cannot take it for a whole one. */
  abandon(): void {
    this.res.destroy();
  }
}

export class SseStream extends BodyWriter {
  start(headers: Record<string, string> = {}): void {
    this.res.writeHead(200, {
      ...headers,
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      Connection: "keep-alive",
      // proxies such as nginx would otherwise hold the tokens back
      "X-Accel-Buffering": "no",
    });
    this.res.flushHeaders();
  }

  /** Sends one event; resolves false when the client is gone. */
  send(data: string, event?: string): Promise<boolean> {
    return this.write(`${event ? `event: ${event}\n` : ""}data: ${data}\n\n`);
  }

  comment(text: string): Promise<boolean> {
    return this.write(`: ${text}\n\n`);
  }
}
