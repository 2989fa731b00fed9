/**
 * The OpenAI Responses API, stateless: POST /v1/responses. The request's input items
 * become a chat (messages, function calls and their outputs), the answer becomes output
 * items (a message with output_text, function calls). mlxs keeps no conversation, so what
 * asks it to (store: true, previous_response_id, conversation) is refused with the reason.
 */
import { randomBytes } from "node:crypto";
import type { ChatMessage, ChatRequest, GenerationResult, ResponseFormat, ToolChoice, ToolDefinition } from "../core/types.js";
import type { RequestContext, Route } from "./http.js";
import { collect, relay } from "./relay.js";
import { KEEPS_NOTHING, RESPONSES_FIELDS } from "./openai-fields.js";
import { asObject, checkFields, functionOf, invalid, keepAliveOf, optionalBoolean, optionalInteger, optionalString, samplingOf, servedModelOf, unsupported, type Body } from "./validate.js";

const newId = (prefix: string) => `${prefix}_${randomBytes(12).toString("hex")}`;


/** A message's text: a string, or input_text / output_text parts. */
function textOf(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw invalid(param, "must be a string or a list of content parts");
  return content.map((part, i) => {
    const { type, text } = (part ?? {}) as Body;
    if ((type === "input_text" || type === "output_text") && typeof text === "string") return text;
    if (type === "input_text" || type === "output_text") throw invalid(`${param}[${i}].text`, "must be a string");
    if (type === "refusal") return "";
    throw unsupported(`${param}[${i}]`, "only input_text and output_text parts are supported");
  }).join("");
}

/**
 * Input items as messages: a function_call joins the assistant message before it (or
 * starts one), its function_call_output becomes a tool message. Reasoning items of
 * earlier turns are dropped, as the API drops them for models that do not reason.
 */
function messagesOf(body: Body): ChatMessage[] {
  const input = body.input;
  if (typeof input === "string") return [{ role: "user", content: input }];
  if (!Array.isArray(input) || input.length === 0) throw invalid("input", "must be a string or a non-empty list of items");
  const messages: ChatMessage[] = [];
  const calls = new Set<string>();
  input.forEach((raw, i) => {
    const param = `input[${i}]`;
    if (typeof raw !== "object" || raw === null) throw invalid(param, "must be an object");
    const item = raw as Body;
    const type = item.type ?? "message";
    if (type === "message") {
      const role = item.role === "developer" ? "system" : item.role;
      if (role !== "system" && role !== "user" && role !== "assistant") throw invalid(`${param}.role`, "must be user, assistant, system or developer");
      messages.push({ role, content: textOf(item.content, `${param}.content`) });
    } else if (type === "function_call") {
      const { call_id: id, name, arguments: args } = item;
      if (typeof id !== "string" || typeof name !== "string" || typeof args !== "string") throw invalid(param, "must be {type: function_call, call_id, name, arguments}");
      calls.add(id);
      const last = messages.at(-1);
      const call = { id, name, arguments: args };
      if (last?.role === "assistant") (last.toolCalls ??= []).push(call);
      else messages.push({ role: "assistant", content: "", toolCalls: [call] });
    } else if (type === "function_call_output") {
      if (typeof item.call_id !== "string" || !calls.has(item.call_id)) throw invalid(`${param}.call_id`, "must be the call_id of an earlier function_call item");
      messages.push({ role: "tool", toolCallId: item.call_id, content: textOf(item.output, `${param}.output`) });
    } else if (type === "reasoning") {
      return;
    } else if (type === "item_reference") {
      throw unsupported(param, `${KEEPS_NOTHING}; send the item itself, not a reference`);
    } else throw unsupported(`${param}.type`, "only message, function_call and function_call_output items are supported");
  });
  return messages;
}

/** tools (flat function definitions) and tool_choice. */
function toolsOf(body: Body): Pick<ChatRequest, "tools" | "toolChoice" | "parallelToolCalls"> {
  let tools: ToolDefinition[] | undefined;
  if (body.tools !== undefined && body.tools !== null) {
    if (!Array.isArray(body.tools)) throw invalid("tools", "must be a list of tools");
    tools = body.tools.map((tool, i) => {
      if (typeof tool !== "object" || tool === null) throw invalid(`tools[${i}]`, "must be an object");
      if ((tool as Body).type !== "function") throw unsupported(`tools[${i}].type`, "only function tools are supported");
      return functionOf(tool as Body, `tools[${i}]`);
    });
  }
  const choice = body.tool_choice;
  let toolChoice: ToolChoice | undefined;
  if (choice === "auto" || choice === "none" || choice === "required") toolChoice = choice;
  else if (typeof choice === "object" && choice !== null && (choice as Body).type === "function") {
    const { name } = choice as Body;
    if (typeof name !== "string" || !tools?.some((t) => t.name === name)) throw invalid("tool_choice.name", "must name one of the tools");
    toolChoice = { name };
  } else if (choice !== undefined && choice !== null) throw invalid("tool_choice", "must be auto, none, required or {type: function, name}");
  if (toolChoice === "required" && !tools?.length) throw invalid("tool_choice", "required needs tools");
  const maxCalls = optionalInteger(body, "max_tool_calls");
  if (maxCalls === 0) toolChoice = "none";
  const parallel = optionalBoolean(body, "parallel_tool_calls");
  return { tools, toolChoice, parallelToolCalls: maxCalls === 1 ? false : parallel };
}

/** text.format: text, json_object, or json_schema ({type, name, schema, strict}, flat). */
function formatOf(body: Body): ResponseFormat | undefined {
  const text = body.text;
  if (text === undefined || text === null) return undefined;
  if (typeof text !== "object" || Array.isArray(text)) throw invalid("text", "must be an object");
  const { verbosity } = text as Body;
  if (verbosity !== undefined && verbosity !== null && verbosity !== "medium") throw unsupported("text.verbosity", "only medium (the default) verbosity is supported");
  const format = (text as Body).format;
  if (format === undefined || format === null) return undefined;
  if (typeof format !== "object" || Array.isArray(format)) throw invalid("text.format", "must be an object with a type");
  const { type, schema } = format as Body;
  if (type === "text" || type === "json_object") return { type };
  if (type !== "json_schema") throw invalid("text.format.type", "must be text, json_object or json_schema");
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) throw invalid("text.format.schema", "must be a JSON schema object");
  return { type, schema: schema as Record<string, unknown> };
}

function usageOf(result: GenerationResult) {
  const { promptTokens, completionTokens, cachedPromptTokens = 0 } = result.usage;
  return {
    input_tokens: promptTokens,
    // the prompt cache fills as the prompt is read, as OpenAI's automatic caching does, with
    // no explicit cache writes to report (the spec requires the count all the same)
    input_tokens_details: { cached_tokens: cachedPromptTokens, cache_write_tokens: 0 },
    output_tokens: completionTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: promptTokens + completionTokens,
  };
}

const textPart = (text: string) => ({ type: "output_text", text, annotations: [], logprobs: [] });

type Item = Body & { id: string; type: "message" | "function_call" };

const messageItem = (id: string, text: string, status: string): Item =>
  ({ type: "message", id, status, role: "assistant", content: [textPart(text)] });

const callItem = (id: string, callId: string, name: string, args: string, status: string): Item =>
  ({ type: "function_call", id, call_id: callId, name, arguments: args, status });

/** A /v1/responses body as the core's chat request (pure: a body and the served model's name in), and its instructions, which the response echoes. */
export function responsesRequestOf(body: Body, model: string): { request: ChatRequest; instructions?: string } {
  checkFields(RESPONSES_FIELDS, body);
  const messages = messagesOf(body);
  const instructions = optionalString(body, "instructions");
  if (instructions !== undefined) messages.unshift({ role: "system", content: instructions });
  const responseFormat = formatOf(body);
  const sampling = samplingOf(body);
  const request: ChatRequest = { model, messages, ...sampling, maxTokens: optionalInteger(body, "max_output_tokens") ?? sampling.maxTokens, responseFormat, ...toolsOf(body), ...keepAliveOf(body) };
  return { request, instructions };
}

async function responses(ctx: RequestContext): Promise<void> {
  const body = asObject(ctx.body);
  // the model first, on every route: a refused request's record still names it
  const model = servedModelOf(ctx, body);
  const { request, instructions } = responsesRequestOf(body, model);
  const events = ctx.chat(request);
  const id = newId("resp");
  const createdAt = Math.floor(Date.now() / 1000);

  /** The response object, as each event and the final answer carry it. */
  const response = (status: string, output: Item[], result?: GenerationResult) => ({
    id, object: "response", created_at: createdAt, status, model, output,
    error: null,
    incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
    instructions: instructions ?? null,
    max_output_tokens: request.maxTokens ?? null,
    parallel_tool_calls: request.parallelToolCalls ?? true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: request.temperature ?? null,
    top_p: request.topP ?? null,
    text: { format: ((body.text as Body | undefined)?.format as Body | undefined) ?? { type: "text" } },
    tool_choice: typeof request.toolChoice === "object" ? { type: "function", name: request.toolChoice.name } : request.toolChoice ?? "auto",
    tools: body.tools ?? [],
    truncation: "disabled",
    // absent until the answer ends: OpenAI's spec has usage optional, never null
    ...(result ? { usage: usageOf(result) } : {}),
    metadata: {},
  });
  const statusOf = (result: GenerationResult) => (result.finishReason === "length" ? "incomplete" : "completed");

  if (!(optionalBoolean(body, "stream") ?? false)) {
    const result = await collect(ctx, events);
    if (!result) return;
    const status = statusOf(result);
    const output: Item[] = result.text || !result.toolCalls?.length ? [messageItem(newId("msg"), result.text, status)] : [];
    for (const call of result.toolCalls ?? []) output.push(callItem(newId("fc"), call.id, call.name, call.arguments, "completed"));
    ctx.json(200, response(status, output, result));
    return;
  }

  const sse = ctx.sse();
  let sequence = 0;
  const send = (type: string, data: Body) => sse.send(JSON.stringify({ type, sequence_number: sequence++, ...data }), type);
  // items open as their content comes (the message's text, then each call); one closes as the next opens
  const output: Item[] = [];
  let text = "";
  const open = () => output.at(-1);
  const close = async (status: string) => {
    const item = open();
    if (!item || item.status !== "in_progress") return;
    const at = { item_id: item.id, output_index: output.length - 1 };
    if (item.type === "message") {
      await send("response.output_text.done", { ...at, content_index: 0, text, logprobs: [] });
      await send("response.content_part.done", { ...at, content_index: 0, part: textPart(text) });
      output[output.length - 1] = messageItem(item.id, text, status);
    } else {
      await send("response.function_call_arguments.done", { ...at, name: item.name, arguments: item.arguments });
      item.status = "completed";
    }
    await send("response.output_item.done", { output_index: output.length - 1, item: open() });
  };
  const add = async (item: Item) => {
    await close("completed");
    if (item.type === "message") text = "";
    output.push(item);
    await send("response.output_item.added", { output_index: output.length - 1, item: item.type === "message" ? { ...item, content: [] } : item });
    if (item.type === "message") await send("response.content_part.added", { item_id: item.id, output_index: output.length - 1, content_index: 0, part: textPart("") });
  };
  const result = await relay(ctx, sse, events, {
    start: async () => {
      await send("response.created", { response: response("in_progress", []) });
      await send("response.in_progress", { response: response("in_progress", []) });
    },
    delta: async (piece) => {
      if (open()?.type !== "message") await add(messageItem(newId("msg"), "", "in_progress"));
      text += piece;
      await send("response.output_text.delta", { item_id: open()!.id, output_index: output.length - 1, content_index: 0, delta: piece, logprobs: [] });
    },
    toolCall: (call) => add(callItem(newId("fc"), call.id, call.name, "", "in_progress")),
    toolArguments: async (piece) => {
      const item = open()!;
      item.arguments += piece.text;
      await send("response.function_call_arguments.delta", { item_id: item.id, output_index: output.length - 1, delta: piece.text });
    },
  });
  if (!result) return;
  const status = statusOf(result);
  // an empty answer is still one (empty) message
  if (output.length === 0) await add(messageItem(newId("msg"), "", "in_progress"));
  await close(status);
  await send(status === "completed" ? "response.completed" : "response.incomplete", { response: response(status, output, result) });
  sse.end();
}

export const responsesRoutes: Route[] = [
  { method: "POST", path: "/v1/responses", handler: responses, body: true },
];
