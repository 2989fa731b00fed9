/**
 * A generation's events, as they pass, into its audit record: the prompt's size when it is
 * known, the first token, the final counts. Every door that generates records through
 * this (the server's request context, the CLI's chat), so none can forget a figure.
 */
import type { Tracker } from "../audit/track.js";
import type { GenerationEvent } from "../core/types.js";

export async function* recorded(tracker: Tracker | undefined, events: AsyncGenerator<GenerationEvent>): AsyncGenerator<GenerationEvent> {
  for await (const event of events) {
    if (event.type === "start") tracker?.tokens(event.promptTokens, 0);
    else if (event.type === "done") tracker?.tokens(event.usage.promptTokens, event.usage.completionTokens);
    else tracker?.firstToken();
    yield event;
  }
}
