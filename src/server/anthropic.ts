/**
 * The Anthropic Messages API: wire JSON <-> core requests for /v1/messages and
 * /v1/messages/count_tokens. Same core and audit path as the OpenAI routes.
 * The translators (messagesRequestOf, messagesCountOf) are pure functions of the body.
 */
import { randomBytes } from "node:crypto";
import type { ChatMessage, ChatRequest, GenerationResult, ResponseFormat, ToolCall, ToolChoice, ToolDefinition } from "../core/types.js";
import type { RequestContext, Route } from "./http.js";
import { HttpProblem, problemBody } from "./problem.js";
import { collect, relay } from "./relay.js";
import { prepareSchema } from "../core/json-schema.js";
import { COUNT_TOKENS_FIELDS, MESSAGES_FIELDS } from "./anthropic-fields.js";
import { asObject, checkFields, functionOf, invalid, keepAliveOf, optionalBoolean, optionalInteger, optionalNumber, servedModelOf, unsupported, type Body, type FieldTable } from "./validate.js";

const KNOWN_BLOCKS = new Set([
  "image", "document", "search_result", "server_tool_use", "web_search_tool_result", "container_upload",
]);

/** A block mlxs cannot read: named when it is one of Anthropic's, never echoing the client's own text. */
function unreadable(block: unknown, param: string, allowed: string): HttpProblem {
  const type = (block as Body | null)?.type;
  if (typeof type === "string" && KNOWN_BLOCKS.has(type)) return unsupported(param, `${type} blocks are not supported; only ${allowed}`);
  if (typeof type === "string") return unsupported(param, `only ${allowed} blocks are supported`);
  return invalid(param, "must be a content block with a type");
}

function textOf(block: Body, param: string): string {
  if (typeof block.text !== "string") throw invalid(`${param}.text`, "must be a string");
  return block.text;
}

function textOfBlocks(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw invalid(param, "must be a string or a list of content blocks");
  return content.map((block, i) => {
    if ((block as Body)?.type === "text") return textOf(block as Body, `${param}.${i}`);
    throw unreadable(block, `${param}.${i}`, "text");
  }).join("");
}

/**
 * One wire message as core messages: an assistant's text and tool_use blocks become one
 * message with its calls; a user's tool_result blocks become tool messages, then its text
 * a user message. Thinking blocks of earlier turns are dropped, as Anthropic drops them.
 */
function messagesOfTurn(m: Body, param: string, calls: Set<string>): ChatMessage[] {
  const role = m.role;
  if (role !== "user" && role !== "assistant") throw invalid(`${param}.role`, "must be user or assistant");
  if (typeof m.content === "string") return [{ role, content: m.content }];
  if (!Array.isArray(m.content)) throw invalid(`${param}.content`, "must be a string or a list of content blocks");
  const text: string[] = [];
  const toolCalls: ToolCall[] = [];
  const results: ChatMessage[] = [];
  m.content.forEach((raw, i) => {
    const at = `${param}.content.${i}`;
    const block = raw as Body;
    const type = block?.type;
    if (type === "text") text.push(textOf(block, at));
    else if (role === "assistant" && (type === "thinking" || type === "redacted_thinking")) return;
    else if (role === "assistant" && type === "tool_use") {
      if (typeof block.id !== "string" || typeof block.name !== "string") throw invalid(at, "must be {type: tool_use, id, name, input}");
      const input = block.input ?? {};
      if (typeof input !== "object" || Array.isArray(input)) throw invalid(`${at}.input`, "must be an object");
      calls.add(block.id);
      toolCalls.push({ id: block.id, name: block.name, arguments: JSON.stringify(input) });
    } else if (role === "user" && type === "tool_result") {
      if (typeof block.tool_use_id !== "string" || !calls.has(block.tool_use_id)) throw invalid(`${at}.tool_use_id`, "must be the id of a tool_use block in an earlier assistant message");
      const content = block.content === undefined || block.content === null ? "" : textOfBlocks(block.content, `${at}.content`);
      // an error the tool reported: the model reads it as one
      results.push({ role: "tool", toolCallId: block.tool_use_id, content: optionalBoolean(block, "is_error") ? `Error: ${content}` : content });
    } else throw unreadable(block, at, role === "user" ? "text and tool_result" : "text, tool_use and thinking");
  });
  if (role === "assistant") return [{ role, content: text.join(""), ...(toolCalls.length ? { toolCalls } : {}) }];
  return [...results, ...(text.length || !results.length ? [{ role, content: text.join("") } as ChatMessage] : [])];
}

/** Consecutive messages of one role are merged into one turn, as Anthropic does. */
function messagesOf(body: Body): ChatMessage[] {
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw invalid("messages", "must be a non-empty list of messages");
  const merged: ChatMessage[] = [];
  const calls = new Set<string>();
  messages.forEach((raw, i) => {
    if (typeof raw !== "object" || raw === null) throw invalid(`messages.${i}`, "must be an object");
    for (const message of messagesOfTurn(raw as Body, `messages.${i}`, calls)) {
      const last = merged.at(-1);
      if (last && last.role === message.role && message.role !== "tool" && !last.toolCalls && !message.toolCalls) last.content += `\n\n${message.content}`;
      else merged.push(message);
    }
  });
  return merged;
}

/** tools: custom tools with an input_schema; Anthropic's own server tools (bash, web search ...) are refused by type. */
function toolsOf(body: Body): Pick<ChatRequest, "tools" | "toolChoice" | "parallelToolCalls"> {
  const list = body.tools;
  let tools: ToolDefinition[] | undefined;
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) throw invalid("tools", "must be a list of tools");
    tools = list.map((tool, i) => {
      if (typeof tool !== "object" || tool === null) throw invalid(`tools.${i}`, "must be an object");
      const type = (tool as Body).type;
      if (type !== undefined && type !== null && type !== "custom") throw unsupported(`tools.${i}.type`, "only custom tools (with an input_schema) are supported");
      return functionOf(tool as Body, `tools.${i}`);
    });
  }
  const choice = body.tool_choice;
  if (choice === undefined || choice === null) return { tools };
  if (typeof choice !== "object" || Array.isArray(choice)) throw invalid("tool_choice", "must be an object with a type");
  const { type, name } = choice as Body;
  const parallelToolCalls = optionalBoolean(choice as Body, "disable_parallel_tool_use") === true ? false : undefined;
  let toolChoice: ToolChoice;
  if (type === "auto" || type === "none") toolChoice = type;
  else if (type === "any") toolChoice = "required";
  else if (type === "tool") {
    if (typeof name !== "string" || !tools?.some((t) => t.name === name)) throw invalid("tool_choice.name", "must name one of the tools");
    toolChoice = { name };
  } else throw invalid("tool_choice.type", "must be auto, any, tool or none");
  if (toolChoice === "required" && !tools?.length) throw invalid("tool_choice", "any needs tools");
  return { tools, toolChoice, parallelToolCalls };
}

/** top_k and top_p of -1: "unset", as older clients send them. */
function unlessUnset(value: number | undefined): number | undefined {
  return value === -1 ? undefined : value;
}

/**
 * Structured outputs: output_config.format, or the beta's top-level output_format (the same
 * shape), {type: "json_schema", schema}: the answer's text is JSON held to the schema by the
 * grammar OpenAI's response_format uses. The schema is checked here, so that a keyword the
 * grammar cannot enforce is refused naming this field, before any model is acquired.
 */
function formatOf(body: Body): ResponseFormat | undefined {
  const config = body.output_config;
  if (config !== undefined && config !== null && (typeof config !== "object" || Array.isArray(config))) throw invalid("output_config", "must be an object");
  const inConfig = (config as Body | undefined | null)?.format;
  const beta = body.output_format;
  const given = (v: unknown) => v !== undefined && v !== null;
  if (given(inConfig) && given(beta)) throw invalid("output_format", "send output_config.format or output_format, not both");
  if (!given(inConfig) && !given(beta)) return undefined;
  const param = given(inConfig) ? "output_config.format" : "output_format";
  const format = given(inConfig) ? inConfig : beta;
  if (typeof format !== "object" || Array.isArray(format)) throw invalid(param, "must be {type: json_schema, schema}");
  if ((format as Body).type !== "json_schema") throw invalid(`${param}.type`, "must be json_schema");
  const schema = (format as Body).schema;
  prepareSchema(schema, `${param}.schema`);
  return { type: "json_schema", schema: schema as Record<string, unknown> };
}

/** The chat request of a /v1/messages body (also what count_tokens counts), its fields checked against the route's table. */
function chatRequestOf(body: Body, name: string, fields: FieldTable): ChatRequest {
  checkFields(fields, body);
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
    topP: unlessUnset(optionalNumber(body, "top_p")),
    topK: unlessUnset(optionalInteger(body, "top_k")),
    seed: optionalInteger(body, "seed"),
    stop: (stop as string[] | undefined) ?? undefined,
    ...toolsOf(body),
    ...keepAliveOf(body),
  };
}

const stopReasonOf = (result: GenerationResult) =>
  result.finishReason === "tool_calls" ? "tool_use"
    : result.finishReason === "length" ? "max_tokens" : result.finishReason === "stop_sequence" ? "stop_sequence" : "end_turn";

/** Anthropic's ids for tool calls: toolu_... */
const toolUseId = (id: string) => id.replace(/^call_/, "toolu_");

function contentOf(result: GenerationResult): Body[] {
  const blocks: Body[] = result.text || !result.toolCalls?.length ? [{ type: "text", text: result.text }] : [];
  for (const call of result.toolCalls ?? []) blocks.push({ type: "tool_use", id: toolUseId(call.id), name: call.name, input: JSON.parse(call.arguments) });
  return blocks;
}

/**
 * A /v1/messages body as the core's chat request: pure (a body and the served model's name
 * in), as messagesCountOf for count_tokens.
 */
export function messagesRequestOf(body: Body, model: string): ChatRequest {
  const chatRequest = chatRequestOf(body, model, MESSAGES_FIELDS);
  if (body.max_tokens === undefined || body.max_tokens === null) throw invalid("max_tokens", "is required");
  return { ...chatRequest, maxTokens: optionalInteger(body, "max_tokens"), responseFormat: formatOf(body) };
}

/** A /v1/messages/count_tokens body as the chat request whose prompt is counted. */
export function messagesCountOf(body: Body, model: string): ChatRequest {
  return chatRequestOf(body, model, COUNT_TOKENS_FIELDS);
}

async function messages(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  // the model first, on every route: a refused request's record still names it
  const request = messagesRequestOf(body, servedModelOf(ctx, body));
  const stream = optionalBoolean(body, "stream") ?? false;
  const id = `msg_${randomBytes(12).toString("hex")}`;
  const model = request.model!;
  const events = ctx.chat(request);

  if (!stream) {
    const result = await collect(ctx, events);
    if (!result) return;
    ctx.json(200, {
      id, type: "message", role: "assistant", model,
      content: contentOf(result),
      stop_reason: stopReasonOf(result),
      stop_sequence: result.stopSequence ?? null,
      usage: { input_tokens: result.usage.promptTokens, output_tokens: result.usage.completionTokens },
    });
    return;
  }

  const sse = ctx.sse();
  const send = (type: string, data: Body) => sse.send(JSON.stringify({ type, ...data }), type);
  // content blocks open as their content comes: text, then each tool_use; one closes as the
  // next opens. Anthropic's ping follows the first block's start.
  let index = -1;
  let open: "text" | "tool_use" | undefined;
  const openBlock = async (block: Body) => {
    if (open) await send("content_block_stop", { index });
    index += 1;
    open = block.type as "text" | "tool_use";
    await send("content_block_start", { index, content_block: block });
    if (index === 0) await send("ping", {});
  };
  const result = await relay(ctx, sse, events, {
    // message_start carries the prompt's tokens, as the generation counted them before it began
    start: async (opening) => {
      await send("message_start", {
        message: { id, type: "message", role: "assistant", model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: opening?.promptTokens ?? 0, output_tokens: 0 } },
      });
    },
    delta: async (text) => {
      if (open !== "text") await openBlock({ type: "text", text: "" });
      await send("content_block_delta", { index, delta: { type: "text_delta", text } });
    },
    toolCall: (call) => openBlock({ type: "tool_use", id: toolUseId(call.id), name: call.name, input: {} }),
    toolArguments: (piece) => send("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: piece.text } }),
  });
  if (!result) return;
  // an empty answer is still one (empty) text block
  if (!open) await openBlock({ type: "text", text: "" });
  await send("content_block_stop", { index });
  await send("message_delta", { delta: { stop_reason: stopReasonOf(result), stop_sequence: result.stopSequence ?? null }, usage: { output_tokens: result.usage.completionTokens } });
  await send("message_stop", {});
  sse.end();
}

async function countTokens(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  const request = messagesCountOf(body, servedModelOf(ctx, body));
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

/**
 * A refused `thread` says so in Anthropic's words for a server that cannot hold one
 * (`thread_unsupported_request`): the SDK's tool runner then sends the whole conversation
 * on every turn, and a caller of a thread of its own gets the error with its message.
 */
const THREAD_REFUSED = { error_code: "thread_unsupported_request", unsupported: ["thread"] };

/** The problem body with Anthropic's envelope: `"type": "error"` and `error: {type, message}`. */
function anthropicError(problem: HttpProblem, requestId: string) {
  const body = problemBody(problem, requestId);
  const details = problem.options.param === "thread" ? { details: THREAD_REFUSED } : {};
  return { ...body, type: "error", error: { ...body.error, type: anthropicErrorType(problem.status), ...details } };
}

export const anthropicRoutes: Route[] = [
  { method: "POST", path: "/v1/messages", handler: messages, body: true, errorBody: anthropicError },
  { method: "POST", path: "/v1/messages/count_tokens", handler: countTokens, body: true, errorBody: anthropicError },
];
