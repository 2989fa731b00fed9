/**
 * Server-sent events over one response: writes wait for the socket to drain (a slow
 * reader slows the writer instead of growing memory), and a client that went away makes
 * every later write a no-op that reports false.
 */
import type { ServerResponse } from "node:http";
import { once } from "node:events";

export class SseStream {
  private closed = false;

  constructor(private readonly res: ServerResponse) {
    res.once("close", () => { this.closed = true; });
  }

  get open(): boolean {
    return !this.closed && !this.res.destroyed;
  }

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

  private async write(chunk: string): Promise<boolean> {
    if (!this.open) return false;
    if (this.res.write(chunk)) return true;
    await Promise.race([once(this.res, "drain"), once(this.res, "close")]).catch(() => undefined);
    return this.open;
  }

  end(): void {
    if (this.open) this.res.end();
  }
}
