/**
 * Reading fields of a JSON request body. Every refusal names the field (as the client
 * spelled it) and never quotes the value the client sent.
 *
 * No schema library at run time (zod is a dev dependency, for tests and clients): each
 * API spells its paths its own way (`messages[0].role`, `messages.0.role`), refuses some
 * fields with a reason (field tables) and maps others (`developer` to system, -1 to
 * unset); these few readers do that in one place each, where a library would add a
 * dependency, a second vocabulary of messages to keep from quoting values, and a mapping
 * of its issue paths to each API's. The core checks what it needs again, before it
 * acquires a model (core/request-checks.ts).
 */
import type { RequestContext } from "./http.js";
import type { KeepAlive, SamplingOptions, ToolDefinition } from "../core/types.js";
import { parseDuration } from "../durations.js";
import { SAMPLING_FIELDS } from "../core/sampling.js";
import { FUNCTION_NAME, FUNCTION_NAME_RULE } from "../core/request-checks.js";
import { HttpProblem, modelNotFound } from "./problem.js";

export type Body = Record<string, unknown>;

export const invalid = (param: string, message: string) =>
  new HttpProblem(400, "invalid_parameter", `${param}: ${message}`, { param });

export const unsupported = (param: string, message: string) =>
  new HttpProblem(400, "unsupported_parameter", `${param}: ${message}`, { param });

export function asObject(body: unknown): Body {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpProblem(400, "invalid_request", "The request body must be a JSON object.");
  }
  return body as Body;
}

export function optionalNumber(body: Body, name: string): number | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalid(name, "must be a number");
  return value;
}

export function optionalInteger(body: Body, name: string): number | undefined {
  const value = optionalNumber(body, name);
  if (value !== undefined && !Number.isInteger(value)) throw invalid(name, "must be an integer");
  return value;
}

export function optionalBoolean(body: Body, name: string): boolean | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw invalid(name, "must be true or false");
  return value;
}

export function optionalString(body: Body, name: string): string | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalid(name, "must be a string");
  return value;
}

/** A string or a list of strings (stop sequences). */
export function optionalStrings(body: Body, name: string): string[] | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return [value];
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) throw invalid(name, "must be a string or a list of strings");
  return value as string[];
}

/** The sampling fields of a body, by their wire names (the core's table), range-checked by the core. */
export function samplingOf(body: Body): SamplingOptions {
  const sampling: SamplingOptions = {};
  for (const { key, wire, limit } of SAMPLING_FIELDS) {
    const value = limit.integer ? optionalInteger(body, wire) : optionalNumber(body, wire);
    if (value !== undefined) sampling[key] = value;
  }
  sampling.maxTokens = optionalInteger(body, "max_completion_tokens") ?? sampling.maxTokens;
  sampling.stop = optionalStrings(body, "stop");
  return sampling;
}


/** A function tool's definition: {name, description?, parameters? or input_schema?} (`param` names it in errors). */
export function functionOf(fn: Body, param: string): ToolDefinition {
  if (typeof fn.name !== "string" || !FUNCTION_NAME.test(fn.name)) throw invalid(`${param}.name`, `must be ${FUNCTION_NAME_RULE}`);
  const description = optionalString(fn, "description");
  const parameters = fn.parameters ?? fn.input_schema;
  if (parameters !== undefined && parameters !== null && (typeof parameters !== "object" || Array.isArray(parameters))) {
    throw invalid(`${param}.parameters`, "must be a JSON schema object");
  }
  return { name: fn.name, description, parameters: (parameters ?? undefined) as Record<string, unknown> | undefined };
}

/**
 * `model`: a served model's name only, the first one when absent; never a path or URL
 * (the core opens nothing by name). Also names the model in the audit record.
 */
export function servedModelOf(ctx: RequestContext, body: Body): string {
  const { core } = ctx.options;
  const name = optionalString(body, "model") ?? core.defaultModel;
  if (!core.has(name)) throw modelNotFound();
  if (ctx.tracker) ctx.tracker.model = name;
  return name;
}

/** Ollama's `keep_alive` (seconds, or "5m", "1h"; negative: keep it loaded), for clients that send it. */
export function keepAliveOf(body: Body, name = "keep_alive"): KeepAlive {
  const value = body[name];
  if (value === undefined || value === null) return {};
  const ms = parseDuration(value);
  if (ms === undefined) throw invalid(name, "must be a duration: seconds, or text such as 30s, 5m or 1h (negative keeps the model loaded)");
  return { keepAliveMs: ms };
}

/**
 * What a route does with a documented field: honours it; accepts and ignores it (it changes
 * nothing here; `why` says why); or refuses it with 400 (`why` is the message), unless its
 * value asks nothing mlxs cannot do (`passes`: n: 1, store: false, an empty logit_bias).
 */
type FieldClass = "honoured" | "ignored" | "refused";
export interface FieldRule {
  class: FieldClass;
  why: string;
  passes?: (value: unknown) => boolean;
}
/** Every field of one route's request body, by its wire name: the one place that classes them. */
export type FieldTable = Readonly<Record<string, FieldRule>>;

export const honoured = (why: string): FieldRule => ({ class: "honoured", why });
export const ignored = (why: string): FieldRule => ({ class: "ignored", why });
export const refused = (why: string, passes?: (value: unknown) => boolean): FieldRule => ({ class: "refused", why, passes });

/**
 * Words that, in the name of a field mlxs does not know, say it would shape the answer
 * (sampling, length and ending, format, tools, reasoning, the prompt, a kept conversation):
 * such a field is refused rather than silently ignored. A field without one of them (x_debug,
 * trace_id, a client's own tag) changes nothing mlxs could honour, and is accepted.
 */
export const ANSWER_WORDS: ReadonlySet<string> = new Set([
  // sampling
  "temperature", "temp", "top", "topk", "topp", "min", "minp", "typical", "tfs", "mirostat", "sampling", "sampler", "samplers",
  "seed", "penalty", "penalties", "repeat", "repetition", "frequency", "presence", "bias", "logit", "logits", "logprob", "logprobs",
  "dry", "xtc", "nucleus", "greedy", "beam", "beams", "best", "n",
  // length and ending
  "max", "tokens", "length", "stop", "eos",
  // the answer's shape
  "format", "schema", "grammar", "json", "regex", "guided", "structured", "constraint", "constraints", "output", "response",
  // tools
  "tool", "tools", "function", "functions", "call", "calls", "choice", "parallel", "plugins", "search", "web",
  // reasoning
  "reasoning", "reason", "think", "thinking", "effort", "budget", "verbosity",
  // the prompt
  "prompt", "system", "instruction", "instructions", "message", "messages", "input", "prefix", "suffix", "prefill",
  "template", "chat", "echo", "prediction", "modalities", "audio", "image", "images",
  // a conversation kept by the server
  "conversation", "thread", "previous", "history", "context", "continue", "resume", "store", "memory",
]);

/** The words of a field's name: snake_case, kebab-case and camelCase split, lower-cased. */
const wordsOf = (name: string) => name.split(/[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])/).map((w) => w.toLowerCase()).filter(Boolean);

/** Whether a field mlxs does not know would, by its name, change the answer. */
const shapesAnswer = (name: string): boolean => wordsOf(name).some((w) => ANSWER_WORDS.has(w));

/**
 * Checks a body's fields against its route's table: a refused field (with a value that
 * does not pass) and an unknown field whose name shapes the answer are refused with 400
 * naming them. null counts as absent, as OpenAI's and Anthropic's APIs take it.
 */
export function checkFields(table: FieldTable, body: Body): void {
  for (const [name, value] of Object.entries(body)) {
    if (value === undefined || value === null) continue;
    const rule = Object.hasOwn(table, name) ? table[name] : undefined;
    if (!rule) {
      if (shapesAnswer(name)) throw unsupported(name, "is not a field mlxs knows on this route, and its name says it would shape the answer: refused rather than ignored");
    } else if (rule.class === "refused" && !rule.passes?.(value)) throw unsupported(name, rule.why);
  }
}

/** `passes` helpers: the values that ask for nothing. */
export const isValue = (...values: unknown[]) => (value: unknown) => values.includes(value);
export const isEmpty = (value: unknown) => (Array.isArray(value) ? value.length === 0 : typeof value === "object" && value !== null && Object.keys(value).length === 0);
