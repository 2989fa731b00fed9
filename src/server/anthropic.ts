/**
 * The Anthropic Messages API: wire JSON <-> core requests for /v1/messages and
 * /v1/messages/count_tokens. Same core, scheduler and audit path as the OpenAI routes.
 */
import { randomBytes } from "node:crypto";
import type { ChatMessage, ChatRequest, GenerationResult } from "../core/types.js";
import type { RequestContext, Route } from "./http.js";
import { HttpProblem, problemBody } from "./problem.js";
import { collect, relay } from "./relay.js";
import { asObject, invalid, optionalBoolean, optionalInteger, optionalNumber, servedModelOf, unsupported, type Body } from "./validate.js";

const KNOWN_BLOCKS = new Set([
  "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "search_result",
  "server_tool_use", "web_search_tool_result", "container_upload",
]);

function textOfBlocks(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw invalid(param, "must be a string or a list of content blocks");
  return content.map((block, i) => {
    const type = (block as Body)?.type;
    if (type === "text") {
      const text = (block as Body).text;
      if (typeof text !== "string") throw invalid(`${param}.${i}.text`, "must be a string");
      return text;
    }
    // name the block type only when it is one of Anthropic's: the client's own text never goes back
    if (typeof type === "string" && KNOWN_BLOCKS.has(type)) throw unsupported(`${param}.${i}`, `${type} blocks are not supported; only text`);
    if (typeof type === "string") throw unsupported(`${param}.${i}`, "only text blocks are supported");
    throw invalid(`${param}.${i}`, "must be a content block with a type");
  }).join("");
}

/** Consecutive messages of one role are merged into one turn, as Anthropic does. */
function messagesOf(body: Body): ChatMessage[] {
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw invalid("messages", "must be a non-empty list of messages");
  const merged: ChatMessage[] = [];
  messages.forEach((raw, i) => {
    const m = raw as Body;
    if (typeof m !== "object" || m === null) throw invalid(`messages.${i}`, "must be an object");
    if (m.role !== "user" && m.role !== "assistant") throw invalid(`messages.${i}.role`, "must be user or assistant");
    const content = textOfBlocks(m.content, `messages.${i}.content`);
    const last = merged.at(-1);
    if (last && last.role === m.role) last.content += `\n\n${content}`;
    else merged.push({ role: m.role, content });
  });
  return merged;
}

/** The chat request of a /v1/messages body (also what count_tokens counts). */
function chatRequestOf(ctx: RequestContext, body: Body): ChatRequest {
  // the model first, on every route: a refused request's record still names it
  const name = servedModelOf(ctx, body);
  for (const field of ["tools", "tool_choice", "thinking", "mcp_servers", "container"]) {
    if (body[field] !== undefined && body[field] !== null) throw unsupported(field, "is not supported");
  }
  const messages = messagesOf(body);
  if (body.system !== undefined && body.system !== null) {
    messages.unshift({ role: "system", content: textOfBlocks(body.system, "system") });
  }
  const stop = body.stop_sequences;
  if (stop !== undefined && stop !== null && (!Array.isArray(stop) || stop.some((s) => typeof s !== "string"))) {
    throw invalid("stop_sequences", "must be a list of strings");
  }
  return {
    model: name,
    messages,
    temperature: optionalNumber(body, "temperature"),
    topP: optionalNumber(body, "top_p"),
    topK: optionalInteger(body, "top_k"),
    stop: (stop as string[] | undefined) ?? undefined,
  };
}

const stopReasonOf = (result: GenerationResult) =>
  result.finishReason === "length" ? "max_tokens" : result.finishReason === "stop_sequence" ? "stop_sequence" : "end_turn";

async function messages(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  const chatRequest = chatRequestOf(ctx, body);
  if (body.max_tokens === undefined || body.max_tokens === null) throw invalid("max_tokens", "is required");
  const request = { ...chatRequest, maxTokens: optionalInteger(body, "max_tokens") };
  const stream = optionalBoolean(body, "stream") ?? false;
  const id = `msg_${randomBytes(12).toString("hex")}`;
  const model = request.model!;
  const events = ctx.chat(request);

  if (!stream) {
    const result = await collect(ctx, events);
    if (!result) return;
    ctx.json(200, {
      id, type: "message", role: "assistant", model,
      content: [{ type: "text", text: result.text }],
      stop_reason: stopReasonOf(result),
      stop_sequence: result.stopSequence ?? null,
      usage: { input_tokens: result.usage.promptTokens, output_tokens: result.usage.completionTokens },
    });
    return;
  }

  const sse = ctx.sse();
  const send = (type: string, data: Body) => sse.send(JSON.stringify({ type, ...data }), type);
  const result = await relay(ctx, sse, events, {
    // message_start carries the prompt's tokens, as the generation counted them before it began
    start: async (opening) => {
      await send("message_start", {
        message: { id, type: "message", role: "assistant", model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: opening?.promptTokens ?? 0, output_tokens: 0 } },
      });
      await send("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
      await send("ping", {});
    },
    delta: (text) => send("content_block_delta", { index: 0, delta: { type: "text_delta", text } }),
  });
  if (!result) return;
  await send("content_block_stop", { index: 0 });
  await send("message_delta", { delta: { stop_reason: stopReasonOf(result), stop_sequence: result.stopSequence ?? null }, usage: { output_tokens: result.usage.completionTokens } });
  await send("message_stop", {});
  sse.end();
}

async function countTokens(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  const request = chatRequestOf(ctx, body);
  const inputTokens = await ctx.countTokens(request);
  ctx.json(200, { input_tokens: inputTokens });
}

/** Anthropic's error `type` for a status. */
function anthropicErrorType(status: number): string {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    case 504: return "timeout_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

/** The problem body with Anthropic's envelope: `"type": "error"` and `error: {type, message}`. */
function anthropicError(problem: HttpProblem, requestId: string) {
  const body = problemBody(problem, requestId);
  return { ...body, type: "error", error: { ...body.error, type: anthropicErrorType(problem.status) } };
}

export const anthropicRoutes: Route[] = [
  { method: "POST", path: "/v1/messages", handler: messages, body: true, errorBody: anthropicError },
  { method: "POST", path: "/v1/messages/count_tokens", handler: countTokens, body: true, errorBody: anthropicError },
];
