/**
 * The last resort: an exception nothing caught, or a promise rejection nothing handled, is
 * a bug in mlxs. The process is then in a state nobody reasoned about, so it does not go
 * on: it writes the audit records it already holds, says in one line what happened (the
 * error's kind and the request it happened in, never its message, which may quote a
 * request), and exits with status 70 (EX_SOFTWARE) so that a supervisor restarts it.
 */

export const EXIT_SOFTWARE = 70;

/** How long the flush on the way out may take: a stuck disk must not keep a broken process alive. */
const FLUSH_DEADLINE_MS = 5_000;

const flushers = new Set<() => Promise<void>>();
let whereNow: () => string | undefined = () => undefined;
let dying = false;

/** Runs `flush` (write what is buffered) before a fatal exit; returns the way to take it back. */
export function flushBeforeFatalExit(flush: () => Promise<void>): () => void {
  flushers.add(flush);
  return () => flushers.delete(flush);
}

/** Names what was going on when the error struck (a daemon: the request id). */
export function describeFatalContext(describe: () => string | undefined): void {
  whereNow = describe;
}

export function installLastResort(): void {
  process.on("uncaughtException", (error) => void fatal(error));
  process.on("unhandledRejection", (reason) => void fatal(reason));
}

async function fatal(error: unknown): Promise<void> {
  if (dying) return;
  dying = true;
  let where: string | undefined;
  try {
    where = whereNow();
  } catch {
    // the description is a courtesy; the exit is not
  }
  const kind = error instanceof Error ? `${error.name}${(error as NodeJS.ErrnoException).code ? ` ${(error as NodeJS.ErrnoException).code}` : ""}` : typeof error;
  process.stderr.write(`mlxs: internal error (${kind}) ${where ? `in request ${where}` : "outside any request"}; ` +
    `flushing the audit log and exiting with status ${EXIT_SOFTWARE}\n`);
  if (process.env.MLXS_DEBUG) process.stderr.write(`${(error as Error)?.stack ?? String(error)}\n`);
  const deadline = new Promise((resolve) => setTimeout(resolve, FLUSH_DEADLINE_MS).unref());
  await Promise.race([Promise.allSettled([...flushers].map((flush) => flush())), deadline]);
  process.exit(EXIT_SOFTWARE);
}
