/**
 * Reading fields of a JSON request body. Every refusal names the field (as the client
 * spelled it) and never quotes the value the client sent.
 */
import type { RequestContext } from "./http.js";
import type { KeepAlive, SamplingOptions, ToolDefinition } from "../core/types.js";
import { parseDuration } from "../core/durations.js";
import { SAMPLING_FIELDS } from "../core/sampling.js";
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

/** OpenAI's rule for function names, which every API here follows: they are written into prompts and grammars. */
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** A function tool's definition: {name, description?, parameters? or input_schema?} (`param` names it in errors). */
export function functionOf(fn: Body, param: string): ToolDefinition {
  if (typeof fn.name !== "string" || !FUNCTION_NAME.test(fn.name)) throw invalid(`${param}.name`, "must be 1 to 64 letters, digits, _ or -");
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
