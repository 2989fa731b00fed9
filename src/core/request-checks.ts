/**
 * What can be checked of a request without its model: sampling ranges, stop sequences,
 * message shapes, tools (their names and parameter schemas) and tool_choice, the response
 * format's schema (every keyword the grammar cannot enforce, and what would make the
 * grammar builder quietly change the schema's meaning). InferenceCore runs these before it
 * acquires a model, so a bad request never loads, evicts or queues; the runner runs them
 * again (the same functions, a few microseconds) before it generates, as a safety net.
 *
 * What needs the model stays in the runner: a prompt longer than the context, an
 * embedding input longer than it. Every message names the field (in the core's camelCase,
 * which the server turns into the wire's name) and never quotes a value of the request.
 */
import { MAX_EMBEDDING_INPUTS } from "./embed.js";
import { prepareSchema, type Schema } from "./json-schema.js";
import { validateSampling } from "./sampling.js";
import { CoreError, type ChatMessage, type ChatRequest, type CompletionRequest, type EmbeddingRequest, type ResponseFormat, type ToolDefinition } from "./types.js";

/** OpenAI's rule for function names, which every door here follows: they are written into prompts and grammars. */
export const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
export const FUNCTION_NAME_RULE = "1 to 64 letters, digits, _ or -";

const ROLES = new Set(["system", "user", "assistant", "tool"]);
const FORMATS = new Set(["text", "json_object", "json_schema"]);

const refuse = (param: string, message: string) => new CoreError("invalid_request", `${param} ${message}`, { param });

/** A chat request: sampling, messages, response format, tools and tool_choice. */
export function checkChatRequest(request: ChatRequest): void {
  checkModel(request);
  validateSampling(request);
  checkMessages(request.messages);
  checkResponseFormat(request.responseFormat);
  checkTools(request);
  checkKeepAlive(request);
}

/** What a token count reads: the messages and the tools (a count samples nothing). */
export function checkCountRequest(request: ChatRequest): void {
  checkModel(request);
  checkMessages(request.messages);
  checkTools(request);
}

export function checkCompletionRequest(request: CompletionRequest): void {
  checkModel(request);
  validateSampling(request);
  if (typeof request.prompt !== "string") throw refuse("prompt", "must be a string");
  checkResponseFormat(request.responseFormat);
  checkKeepAlive(request);
}

/** The inputs' number and kind (as embed.ts checks them again in the runner); their length in tokens needs the model, and is checked there only. */
export function checkEmbeddingRequest(request: EmbeddingRequest): void {
  checkModel(request);
  const { input } = request;
  if (!Array.isArray(input) || input.length === 0 || input.length > MAX_EMBEDDING_INPUTS) {
    throw new CoreError("invalid_request", `input must hold 1 to ${MAX_EMBEDDING_INPUTS} strings`, { param: "input" });
  }
  input.forEach((text, index) => {
    if (typeof text !== "string" || text.length === 0) throw new CoreError("invalid_request", `input[${index}] must be a non-empty string`, { param: "input" });
  });
  checkKeepAlive(request);
}

/** A function as the model is told of it and held to: its parameters' schema in the grammar's form. */
export interface PreparedFunction {
  name: string;
  description?: string;
  schema: Schema;
}

/** A function without parameters takes an empty object. */
const NO_PARAMETERS: Schema = { type: "object", properties: {}, additionalProperties: false };

/** The functions the model is told of: none when there are none, or when it may call none. Throws as checkTools does. */
export function offeredFunctions(request: Pick<ChatRequest, "tools" | "toolChoice">): PreparedFunction[] | undefined {
  if (!request.tools?.length || request.toolChoice === "none") return undefined;
  return request.tools.map((tool) => ({
    name: tool.name,
    description: tool.description,
    schema: tool.parameters === undefined ? NO_PARAMETERS : prepareSchema(tool.parameters, "tools"),
  }));
}

function checkModel(request: { model?: unknown }): void {
  if (request.model !== undefined && typeof request.model !== "string") throw refuse("model", "must be a served model's name");
}

function checkKeepAlive(request: { keepAliveMs?: unknown }): void {
  const ms = request.keepAliveMs;
  if (ms !== undefined && (typeof ms !== "number" || !Number.isFinite(ms))) throw refuse("keepAliveMs", "must be a number of milliseconds");
}

/**
 * A non-empty list of messages, each with a known role and text content; an assistant's
 * calls each with an id, a function name and arguments as text; a tool message answering
 * a call of an earlier assistant message (otherwise the chat template would drop it).
 */
function checkMessages(messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw refuse("messages", "must be a non-empty list of messages");
  const calls = new Set<string>();
  messages.forEach((m: Partial<ChatMessage> | null, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null) throw new CoreError("invalid_request", `${at} must be an object`, { param: "messages" });
    if (typeof m.role !== "string" || !ROLES.has(m.role)) throw new CoreError("invalid_request", `${at}.role must be system, user, assistant or tool`, { param: "messages" });
    if (typeof m.content !== "string") throw new CoreError("invalid_request", `${at}.content must be text`, { param: "messages" });
    if (m.toolCalls !== undefined) {
      if (m.role !== "assistant" || !Array.isArray(m.toolCalls)) throw new CoreError("invalid_request", `${at}.toolCalls must be a list, on an assistant message`, { param: "messages" });
      m.toolCalls.forEach((call, k) => {
        if (typeof call !== "object" || call === null || typeof call.id !== "string" || typeof call.name !== "string" || typeof call.arguments !== "string") {
          throw new CoreError("invalid_request", `${at}.toolCalls[${k}] must have an id, a name and arguments, each a string`, { param: "messages" });
        }
        calls.add(call.id);
      });
    }
    if (m.role === "tool" && (typeof m.toolCallId !== "string" || !calls.has(m.toolCallId))) {
      throw new CoreError("invalid_request", `${at}.toolCallId must be the id of a call in an earlier assistant message`, { param: "messages" });
    }
  });
}

function checkResponseFormat(format: ResponseFormat | undefined): void {
  if (format === undefined) return;
  if (typeof format !== "object" || format === null || !FORMATS.has(format.type)) throw refuse("responseFormat", "must be text, json_object or json_schema");
  if (format.type === "json_schema") prepareSchema(format.schema, "responseFormat");
}

/** Each tool named as the rule says, its parameters a schema the grammar can enforce; tool_choice one of them, or a mode. */
function checkTools(request: ChatRequest): void {
  const { tools, toolChoice, parallelToolCalls } = request;
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw refuse("tools", "must be a list of functions");
    tools.forEach((tool: Partial<ToolDefinition> | null, i) => {
      if (typeof tool !== "object" || tool === null || typeof tool.name !== "string" || !FUNCTION_NAME.test(tool.name)) {
        throw new CoreError("invalid_request", `tools[${i}].name must be ${FUNCTION_NAME_RULE}`, { param: "tools" });
      }
      if (tool.description !== undefined && typeof tool.description !== "string") throw new CoreError("invalid_request", `tools[${i}].description must be text`, { param: "tools" });
    });
  }
  // the schemas as the generation will prepare them (refused keywords, and what the grammar builder would change)
  offeredFunctions({ tools, toolChoice: undefined });
  if (toolChoice !== undefined && toolChoice !== "auto" && toolChoice !== "none" && toolChoice !== "required") {
    if (typeof toolChoice !== "object" || toolChoice === null || typeof toolChoice.name !== "string") throw refuse("toolChoice", "must be auto, none, required or a function");
    if (!tools?.some((t) => t.name === toolChoice.name)) throw refuse("toolChoice", "names a function that is not among the tools");
  }
  if (toolChoice === "required" && !tools?.length) throw refuse("toolChoice", "required needs tools");
  if (parallelToolCalls !== undefined && typeof parallelToolCalls !== "boolean") throw refuse("parallelToolCalls", "must be true or false");
}
