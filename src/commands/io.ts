/** stdin, stdout and Ctrl-C for commands that print results. */

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

let stdoutClosed = false;
const stdoutListeners = new Set<() => void>();
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  // the reader went away (`mlxs chat ... | head -1`): stop producing, quietly
  if (error.code === "EPIPE") {
    stdoutClosed = true;
    for (const listener of stdoutListeners) listener();
    return;
  }
  throw error;
});

/** The signals that stop a command cleanly (its audit record still written); SIGHUP: the terminal closed. */
export const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

export function writeOut(text: string): void {
  if (!stdoutClosed) process.stdout.write(text);
}

/**
 * Runs `work` with a signal that aborts on Ctrl-C (SIGINT, SIGTERM, SIGHUP) or when stdout's reader
 * goes away; a second Ctrl-C exits at once.
 */
export async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  const onStdoutClosed = () => controller.abort();
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  stdoutListeners.add(onStdoutClosed);
  try {
    return await work(controller.signal);
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
    stdoutListeners.delete(onStdoutClosed);
  }
}
