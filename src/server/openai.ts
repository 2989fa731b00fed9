/**
 * The OpenAI API: wire JSON <-> core requests for /v1/chat/completions, /v1/completions,
 * /v1/embeddings and /v1/models. No inference logic here: validate, translate, write.
 * The translators (chatRequestOf, completionRequestOf, embeddingRequestOf) are pure: a
 * body and the served model's name in, a core request out, or an HttpProblem naming the
 * field; what the core checks without a model (ranges, schemas) it checks before it
 * acquires one (core/request-checks.ts).
 */
import { randomBytes } from "node:crypto";
import type {
  ChatMessage, ChatRequest, CompletionRequest, EmbeddingRequest, GenerationEvent, GenerationResult, ResponseFormat, ToolCall, ToolChoice, ToolDefinition,
} from "../core/types.js";
import type { RequestContext, Route } from "./http.js";
import { collect, relay } from "./relay.js";
import { CHAT_FIELDS, COMPLETION_FIELDS, EMBEDDING_FIELDS } from "./openai-fields.js";
import {
  asObject, checkFields, functionOf, invalid, keepAliveOf, samplingOf, servedModelOf, optionalBoolean, optionalString, unsupported, type Body,
} from "./validate.js";

const newId = (prefix: string) => `${prefix}-${randomBytes(12).toString("hex")}`;
const now = () => Math.floor(Date.now() / 1000);

/** tools (or the older functions), tool_choice (or function_call) and parallel_tool_calls. */
function toolsOf(body: Body): Pick<ChatRequest, "tools" | "toolChoice" | "parallelToolCalls"> {
  const legacy = body.tools === undefined && body.functions !== undefined && body.functions !== null;
  const list = legacy ? (Array.isArray(body.functions) ? body.functions.map((fn) => ({ type: "function", function: fn })) : body.functions) : body.tools;
  const param = legacy ? "functions" : "tools";
  let tools: ToolDefinition[] | undefined;
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) throw invalid(param, "must be a list of tools");
    tools = list.map((tool, i) => {
      const at = `${param}[${i}]`;
      if (typeof tool !== "object" || tool === null) throw invalid(at, "must be an object");
      if ((tool as Body).type !== "function") throw unsupported(`${at}.type`, "only function tools are supported");
      const fn = (tool as Body).function;
      if (typeof fn !== "object" || fn === null) throw invalid(`${at}.function`, "must be an object");
      return functionOf(fn as Body, legacy ? at : `${at}.function`);
    });
  }
  const choiceParam = legacy ? "function_call" : "tool_choice";
  const choice = legacy ? body.function_call : body.tool_choice;
  let toolChoice: ToolChoice | undefined;
  if (choice === "auto" || choice === "none" || choice === "required") toolChoice = choice;
  else if (typeof choice === "object" && choice !== null) {
    const name = ((choice as Body).function as Body | undefined)?.name ?? (choice as Body).name;
    if (typeof name !== "string") throw invalid(choiceParam, "must be auto, none, required or a function");
    toolChoice = { name };
  } else if (choice !== undefined && choice !== null) throw invalid(choiceParam, "must be auto, none, required or a function");
  if (typeof toolChoice === "object" && !tools?.some((t) => t.name === toolChoice.name)) {
    throw invalid(choiceParam, "names a function that is not among the tools");
  }
  if (toolChoice === "required" && !tools?.length) throw invalid(choiceParam, "required needs tools");
  return { tools, toolChoice, parallelToolCalls: optionalBoolean(body, "parallel_tool_calls") };
}

/** response_format: text, json_object, or json_schema (its schema checked by the core, which enforces it). */
function responseFormatOf(body: Body): ResponseFormat | undefined {
  const format = body.response_format;
  if (format === undefined || format === null) return undefined;
  if (typeof format !== "object" || Array.isArray(format)) throw invalid("response_format", "must be an object with a type");
  const { type } = format as Body;
  if (type === "text" || type === "json_object") return { type };
  if (type !== "json_schema") throw invalid("response_format.type", "must be text, json_object or json_schema");
  const spec = (format as Body).json_schema;
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) throw invalid("response_format.json_schema", "must be an object with a schema");
  const schema = (spec as Body).schema;
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) throw invalid("response_format.json_schema.schema", "must be a JSON schema object");
  return { type: "json_schema", schema: schema as Record<string, unknown> };
}

function textOfContent(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) throw invalid(param, "must be a string or a list of content parts");
  return content.map((part, i) => {
    const type = (part as Body)?.type;
    if (type === "text" && typeof (part as Body).text === "string") return (part as Body).text as string;
    if (type === "text") throw invalid(`${param}[${i}].text`, "must be a string");
    throw unsupported(`${param}[${i}]`, "only text parts are supported");
  }).join("");
}

function messagesOf(body: Body): ChatMessage[] {
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw invalid("messages", "must be a non-empty list of messages");
  const calls = new Set<string>();
  return messages.map((raw, i): ChatMessage => {
    const param = `messages[${i}]`;
    if (typeof raw !== "object" || raw === null) throw invalid(param, "must be an object");
    const m = raw as Body;
    const role = m.role === "developer" ? "system" : m.role;
    if (role === "tool") {
      const id = m.tool_call_id;
      if (typeof id !== "string" || !calls.has(id)) throw invalid(`${param}.tool_call_id`, "must be the id of a tool call in an earlier assistant message");
      return { role, toolCallId: id, content: textOfContent(m.content, `${param}.content`) };
    }
    if (role !== "system" && role !== "user" && role !== "assistant") {
      if (role === "function") throw unsupported(`${param}.role`, "function messages are not supported; use tool messages");
      throw invalid(`${param}.role`, "must be system, user, assistant or tool");
    }
    const content = textOfContent(m.content, `${param}.content`);
    if (role !== "assistant" || m.tool_calls === undefined || m.tool_calls === null) return { role, content };
    if (!Array.isArray(m.tool_calls)) throw invalid(`${param}.tool_calls`, "must be a list of tool calls");
    const toolCalls = m.tool_calls.map((call, k) => {
      const at = `${param}.tool_calls[${k}]`;
      const fn = (call as Body | null)?.function as Body | undefined;
      const id = (call as Body | null)?.id;
      if (typeof id !== "string" || typeof fn !== "object" || fn === null || typeof fn.name !== "string" || typeof fn.arguments !== "string") {
        throw invalid(at, "must be {id, type: function, function: {name, arguments}}");
      }
      calls.add(id);
      return { id, name: fn.name, arguments: fn.arguments };
    });
    return { role, content, toolCalls };
  });
}

function usageOf(result: GenerationResult) {
  const { promptTokens, completionTokens, cachedPromptTokens = 0 } = result.usage;
  // as OpenAI reports its prompt caching: the part of prompt_tokens found in the cache
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens, prompt_tokens_details: { cached_tokens: cachedPromptTokens } };
}

function timingsOf(result: GenerationResult) {
  const r = (n: number) => Math.round(n * 100) / 100;
  const t = result.timings;
  return { load_ms: r(t.loadMs ?? 0), queue_ms: r(t.queueMs), ttft_ms: r(t.ttftMs), total_ms: r(t.totalMs), predicted_per_second: r(t.tokensPerSecond) };
}

const finishReasonOf = (result: GenerationResult) =>
  result.finishReason === "tool_calls" ? "tool_calls" : result.finishReason === "length" ? "length" : "stop";

const wireCall = (call: ToolCall) => ({ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } });

type Shape = {
  object: string;
  idPrefix: string;
  /** a choice carrying text, whole or as a streamed piece */
  choice: (text: string, finish: string | null, first: boolean) => Body;
  /** the whole answer's choice */
  whole: (result: GenerationResult, finish: string) => Body;
};

const CHAT: Shape = {
  object: "chat.completion",
  idPrefix: "chatcmpl",
  choice: (text, finish, first) => ({ index: 0, delta: first ? { role: "assistant", content: text } : finish ? {} : { content: text }, logprobs: null, finish_reason: finish }),
  whole: ({ text, toolCalls }, finish) => ({
    index: 0,
    // as OpenAI's: content null when the answer is its calls
    message: { role: "assistant", content: toolCalls && !text ? null : text, refusal: null, ...(toolCalls ? { tool_calls: toolCalls.map(wireCall) } : {}) },
    logprobs: null,
    finish_reason: finish,
  }),
};

const COMPLETION: Shape = {
  object: "text_completion",
  idPrefix: "cmpl",
  choice: (text, finish) => ({ index: 0, text, logprobs: null, finish_reason: finish }),
  whole: ({ text }, finish) => ({ index: 0, text, logprobs: null, finish_reason: finish }),
};

/**
 * Runs a generation and answers it as JSON or as server-sent events. Nothing is sent until
 * the first event, so that a refusal (queue full, bad request) still gets its status code.
 * No system_fingerprint: OpenAI's spec allows a string or nothing (never null), the field
 * is deprecated, and mlxs has no backend fingerprint that would mean anything to a client.
 */
async function respond(ctx: RequestContext, body: Body, shape: Shape, model: string, events: AsyncGenerator<GenerationEvent>): Promise<void> {
  const stream = optionalBoolean(body, "stream") ?? false;
  const options = body.stream_options;
  const includeUsage = stream && typeof options === "object" && options !== null && (options as Body).include_usage === true;
  const id = newId(shape.idPrefix);
  const created = now();

  if (!stream) {
    const result = await collect(ctx, events);
    if (!result) return;
    ctx.json(200, { id, object: shape.object, created, model, choices: [shape.whole(result, finishReasonOf(result))], usage: usageOf(result), timings: timingsOf(result) });
    return;
  }

  const sse = ctx.sse();
  const chunk = (choices: Body[], extra: Body = {}) =>
    JSON.stringify({ id, object: shape === CHAT ? "chat.completion.chunk" : shape.object, created, model, choices, ...extra });
  const result = await relay(ctx, sse, events, {
    // the first chunk carries the role, as OpenAI's do
    start: async () => { if (shape === CHAT) await sse.send(chunk([shape.choice("", null, true)])); },
    delta: (text) => sse.send(chunk([shape.choice(text, null, false)])),
    // a call's name first, then its arguments in pieces, as OpenAI's stream helpers reassemble them
    toolCall: (call) => sse.send(chunk([{ index: 0, delta: { tool_calls: [{ index: call.index, id: call.id, type: "function", function: { name: call.name, arguments: "" } }] }, logprobs: null, finish_reason: null }])),
    toolArguments: (piece) => sse.send(chunk([{ index: 0, delta: { tool_calls: [{ index: piece.index, function: { arguments: piece.text } }] }, logprobs: null, finish_reason: null }])),
  });
  if (!result) return;
  await sse.send(chunk([shape.choice("", finishReasonOf(result), false)], { timings: timingsOf(result) }));
  if (includeUsage) await sse.send(chunk([], { usage: usageOf(result) }));
  await sse.send("[DONE]");
  sse.end();
}

/** A chat completions body as the core's chat request, its fields checked against the route's table. */
export function chatRequestOf(body: Body, model: string): ChatRequest {
  checkFields(CHAT_FIELDS, body);
  const messages = messagesOf(body);
  return { model, messages, ...samplingOf(body), responseFormat: responseFormatOf(body), ...toolsOf(body), ...keepAliveOf(body) };
}

/** A completions body as the core's completion request. */
export function completionRequestOf(body: Body, model: string): CompletionRequest {
  checkFields(COMPLETION_FIELDS, body);
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string") prompt = prompt[0];
  if (typeof prompt !== "string") {
    if (Array.isArray(prompt)) throw unsupported("prompt", "only a string, or a list of one string, is supported");
    throw invalid("prompt", "must be a string");
  }
  return { model, prompt, ...samplingOf(body), responseFormat: responseFormatOf(body), ...keepAliveOf(body) };
}

/** An embeddings body as the core's request, and the encoding its answer takes. */
export function embeddingRequestOf(body: Body, model: string): { request: EmbeddingRequest; format: "float" | "base64" } {
  checkFields(EMBEDDING_FIELDS, body);
  const raw = body.input;
  const input = typeof raw === "string" ? [raw] : raw;
  if (!Array.isArray(input) || input.length === 0) throw invalid("input", "must be a string or a non-empty list of strings");
  if (input.some((v) => typeof v !== "string")) throw unsupported("input", "token arrays are not supported; send strings");
  const format = optionalString(body, "encoding_format") ?? "float";
  if (format !== "float" && format !== "base64") throw invalid("encoding_format", "must be float or base64");
  return { request: { model, input: input as string[], ...keepAliveOf(body) }, format };
}

async function chatCompletions(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  // the model first, on every route: a refused request's record still names it
  const model = servedModelOf(ctx, body);
  const events = ctx.chat(chatRequestOf(body, model));
  await respond(ctx, body, CHAT, model, events);
}

async function completions(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  const model = servedModelOf(ctx, body);
  const events = ctx.complete(completionRequestOf(body, model));
  await respond(ctx, body, COMPLETION, model, events);
}

async function embeddings(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  const model = servedModelOf(ctx, body);
  const { request, format } = embeddingRequestOf(body, model);
  const result = await ctx.embed(request);
  ctx.json(200, {
    object: "list",
    model,
    data: result.vectors.map((vector, index) => ({
      object: "embedding",
      index,
      embedding: format === "base64" ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector,
    })),
    usage: { prompt_tokens: result.usage.promptTokens, total_tokens: result.usage.promptTokens },
  });
}

export const openAiRoutes: Route[] = [
  { method: "POST", path: "/v1/chat/completions", handler: chatCompletions, body: true },
  { method: "POST", path: "/v1/completions", handler: completions, body: true },
  { method: "POST", path: "/v1/embeddings", handler: embeddings, body: true },
];
