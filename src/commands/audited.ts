/**
 * A CLI request, audited: one record per run of `mlxs chat` or `mlxs embed`, written
 * before the process exits, whether the run succeeded, failed or was interrupted.
 */
import type { Config } from "../config.js";
import { track, type Outcome, type Tracker } from "../audit/track.js";
import { AuditWriter } from "../audit/writer.js";
import { CoreError, type GenerationEvent } from "../core/types.js";
import { outputClosed } from "./io.js";

export async function audited<T>(
  config: Config,
  start: { endpoint: string; stream: boolean; model: string },
  work: (tracker: Tracker) => Promise<T>,
): Promise<T> {
  // opened on the first flush, so a run that never records never touches the database
  const writer = AuditWriter.forLocation(config.auditDb, { sealKey: config.sealKey });
  const tracker = track(start, (record) => writer.record(record));
  try {
    const result = await work(tracker);
    tracker.end({ status: "success", statusCode: 0 });
    return result;
  } catch (error) {
    tracker.end(outcomeOf(error));
    throw error;
  } finally {
    await writer.close();
  }
}

/** A CLI run stopped by Ctrl-C (or a stop signal): the status code is the exit status. */
export const CANCELLED: Outcome = { status: "cancelled", statusCode: 130, errorType: "cancelled" };

/** A CLI run stopped because the reader of its output went away (| head): exit status 0. */
export const OUTPUT_CLOSED: Outcome = { status: "cancelled", statusCode: 0, errorType: "output_closed" };

/** Why a run that stopped early stopped. */
export const cancelledOutcome = (): Outcome => (outputClosed() ? OUTPUT_CLOSED : CANCELLED);

/** The audit outcome of a failed CLI run; the status code is the exit status. */
export function outcomeOf(error: unknown): Outcome {
  if (error instanceof CoreError) {
    if (error.kind === "cancelled") return cancelledOutcome();
    if (error.kind === "timeout") return { status: "timeout", statusCode: 1, errorType: "timeout", errorMessage: error.message };
    // core messages never quote request content (see CoreError)
    return { status: "error", statusCode: 1, errorType: error.kind, errorMessage: error.message };
  }
  // anything else may carry anything: keep its type, not its text
  return { status: "error", statusCode: 1, errorType: "internal", errorMessage: "unexpected error" };
}

/**
 * A CLI run starts its engine (the model's runner, backend detection) before it can ask
 * anything; the server did that before its request came. That start is loading too: its
 * time joins the model's load (`load_ms`), so the record's time to first token counts from
 * the model ready, as the server's does and as `--json` prints it.
 */
export async function* loadedAfter(startupMs: number, events: AsyncGenerator<GenerationEvent>): AsyncGenerator<GenerationEvent> {
  for await (const event of events) yield event.type === "start" ? { ...event, loadMs: (event.loadMs ?? 0) + startupMs } : event;
}
