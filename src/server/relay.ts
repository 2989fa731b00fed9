/**
 * Relays a generation to a server-sent event stream, for every protocol adapter: nothing
 * is sent before the first token (so a refusal still gets its own status), a client that
 * left stops the generation but its token counts still reach the audit record, and an
 * error or a timeout after the first byte becomes an error event that ends the stream.
 */
import type { GenerationEvent, GenerationResult } from "../core/types.js";
import { shutDownProblem, stoppedBy, type RequestContext } from "./http.js";
import { problemBody, timeoutProblem, toProblem, type HttpProblem } from "./problem.js";
import type { SseStream } from "./sse.js";

/** What the generation said of its prompt before its first token. */
export type Opening = Extract<GenerationEvent, { type: "start" }>;

export type ToolCallEvent = Extract<GenerationEvent, { type: "tool_call" }>;
export type ToolArgumentsEvent = Extract<GenerationEvent, { type: "tool_arguments" }>;

export interface RelayHooks {
  /** the protocol's opening events */
  start(opening: Opening | undefined): Promise<void>;
  delta(text: string): Promise<unknown>;
  /** a tool call begins, then its arguments come in pieces */
  toolCall?(event: ToolCallEvent): Promise<unknown>;
  toolArguments?(event: ToolArgumentsEvent): Promise<unknown>;
}

/** The finished generation, for the adapter to close the stream its way; undefined when it is already over. */
export async function relay(ctx: RequestContext, sse: SseStream, events: AsyncGenerator<GenerationEvent>, hooks: RelayHooks): Promise<GenerationResult | undefined> {
  let started = false;
  let opening: Opening | undefined;
  const start = async () => {
    started = true;
    sse.start();
    await hooks.start(opening);
  };
  const fail = async (problem: HttpProblem, status: "error" | "timeout" | "cancelled", statusCode: number) => {
    // a drain that gave up on the stream has already said how it ended
    ctx.outcome ??= { status, statusCode, errorType: problem.code, errorMessage: problem.message };
    // the route's own error body: OpenAI's or Anthropic's
    await sse.send(JSON.stringify((ctx.route?.errorBody ?? problemBody)(problem, ctx.requestId)), "error");
    sse.end();
  };
  let result: GenerationResult | undefined;
  try {
    for await (const event of events) {
      if (event.type === "done") {
        result = event;
        break;
      }
      if (event.type === "start") {
        opening = event;
        continue;
      }
      // a client that left aborted the signal: the generation ends within a token
      if (!sse.open && started) continue;
      if (!started) await start();
      if (event.type === "delta") await hooks.delta(event.text);
      else if (event.type === "tool_call") await hooks.toolCall?.(event);
      else await hooks.toolArguments?.(event);
    }
  } catch (error) {
    if (!started) throw error;
    const problem = toProblem(error);
    // a runner the watchdog killed (it stopped answering) is a timeout, as a 504 would be
    await fail(problem, stoppedBy(problem) ? "cancelled" : problem.status === 504 ? "timeout" : "error", 200);
    return undefined;
  }
  if (!result || ctx.clientGone()) return undefined;
  // cut short by a drain: a 503 when nothing was sent yet, else an error event
  if (ctx.stopped() && result.finishReason === "cancelled") {
    if (!started) throw shutDownProblem();
    await fail(shutDownProblem(), "cancelled", 200);
    return undefined;
  }
  if (!started) await start();
  if (ctx.timedOut()) {
    await fail(timeoutProblem(), "timeout", 504);
    return undefined;
  }
  return result;
}

/** A whole generation for a JSON answer; undefined when the client left, 504 past the timeout. */
export async function collect(ctx: RequestContext, events: AsyncGenerator<GenerationEvent>): Promise<GenerationResult | undefined> {
  let result: GenerationResult | undefined;
  for await (const event of events) if (event.type === "done") result = event;
  if (ctx.clientGone()) return undefined;
  if (ctx.stopped() && result?.finishReason === "cancelled") throw shutDownProblem();
  if (ctx.timedOut()) throw timeoutProblem();
  return result;
}
