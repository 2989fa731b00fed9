/**
 * A generation's events, as they pass, into its audit record: the shape asked of the
 * answer, the prompt's size and the model's load time when they are known, the first
 * token, the final counts and the number of calls the answer made. Every door that generates records through this (the
 * server's request context, the CLI's chat), so none can forget a figure.
 */
import type { Tracker } from "../audit/track.js";
import type { GenerationEvent, ResponseFormat } from "../core/types.js";

export async function* recorded(tracker: Tracker | undefined, request: { responseFormat?: ResponseFormat }, events: AsyncGenerator<GenerationEvent>): AsyncGenerator<GenerationEvent> {
  if (tracker) tracker.responseFormat = request.responseFormat?.type ?? "text";
  let prompt = 0;
  /**
   * The pieces of answer that passed: until the final count comes, the completion tokens as
   * sent, so that an answer whose end never comes (its runner killed) is not recorded as
   * none. A piece is one token, or a few the core held together (a stop sequence's prefix,
   * a character split across tokens): a lower bound.
   */
  let pieces = 0;
  for await (const event of events) {
    if (event.type === "start") {
      prompt = event.promptTokens;
      tracker?.tokens(prompt, 0);
      if (tracker) tracker.loadMs = event.loadMs ?? 0;
    }
    else if (event.type === "done") {
      tracker?.tokens(event.usage.promptTokens, event.usage.completionTokens);
      if (tracker) tracker.toolCalls = event.toolCalls?.length ?? 0;
    } else {
      tracker?.firstToken();
      tracker?.tokens(prompt, ++pieces);
    }
    yield event;
  }
}
