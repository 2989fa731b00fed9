/**
 * stdin, stdout and stderr for every command, and the ways a command is asked to stop:
 * Ctrl-C and the other stop signals, or its output going away (`mlxs ... | head -1`).
 * `guardOutput()` runs once, before any command, so that a closed pipe is never an
 * uncaught EPIPE, whichever command (or commander's own --help) was writing.
 */

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** The signals that stop a command cleanly (its audit record still written); SIGHUP: the terminal closed. */
export const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

let closed = false;
const closeListeners = new Set<() => void>();

/**
 * Any error on stdout or stderr (EPIPE: the reader went away) means that output is over:
 * the command is told to stop, and ends quietly with exit status 0, as `head` expects of
 * what it reads. Nothing is printed about it: where would it go?
 */
export function guardOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", () => {
      if (closed) return;
      closed = true;
      for (const listener of closeListeners) listener();
    });
  }
}

/** True once stdout or stderr has been closed by its reader. */
export function outputClosed(): boolean {
  return closed || process.stdout.destroyed || process.stderr.destroyed;
}

/** Calls `listener` when the output closes (at once if it already has); returns the way to stop listening. */
export function onOutputClosed(listener: () => void): () => void {
  if (closed) {
    queueMicrotask(listener);
    return () => undefined;
  }
  closeListeners.add(listener);
  return () => closeListeners.delete(listener);
}

export function writeOut(text: string): void {
  if (!outputClosed()) process.stdout.write(text);
}

/**
 * Writes to a stream with backpressure: resolves true once the stream can take more,
 * false when it can take nothing more (closed, failed, or its reader gone).
 */
export async function writeWithBackpressure(out: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }, text: string): Promise<boolean> {
  const gone = () => Boolean(out.destroyed || out.writableEnded) || (out === process.stdout && outputClosed());
  if (gone()) return false;
  if (out.write(text)) return true;
  return new Promise<boolean>((resolve) => {
    const settle = () => {
      out.off("drain", settle);
      out.off("close", settle);
      out.off("error", settle);
      stopListening();
      resolve(!gone());
    };
    out.on("drain", settle);
    out.on("close", settle);
    out.on("error", settle);
    const stopListening = out === process.stdout ? onOutputClosed(settle) : () => undefined;
  });
}

/**
 * A signal that aborts on Ctrl-C (SIGINT, SIGTERM, SIGHUP) or when the output closes;
 * a second Ctrl-C exits at once. `dispose()` stops listening.
 */
export function stopSignal(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  const stopListening = onOutputClosed(() => controller.abort());
  return {
    signal: controller.signal,
    dispose: () => {
      for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
      stopListening();
    },
  };
}

/** Runs `work` with a stop signal (see stopSignal). */
export async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = stopSignal();
  try {
    return await work(stop.signal);
  } finally {
    stop.dispose();
  }
}

/** Colour only on a terminal that wants it: NO_COLOR wins, FORCE_COLOR forces, pipes get none. */
export function colours(stream: NodeJS.WriteStream = process.stdout, env: NodeJS.ProcessEnv = process.env) {
  const on = env.NO_COLOR ? false
    : env.FORCE_COLOR && env.FORCE_COLOR !== "0" ? true
      : Boolean(stream.isTTY && stream.hasColors?.());
  const paint = (code: number) => (text: string) => (on ? `\x1b[${code}m${text}\x1b[0m` : text);
  return { on, red: paint(31), green: paint(32), yellow: paint(33), dim: paint(2), bold: paint(1) };
}
