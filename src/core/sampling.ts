/**
 * Sampling options, in one table: each option's core name, its wire name (OpenAI's
 * snake_case, which the CLI's flags and the chat's /set commands follow too), and its
 * accepted range. Every door reads names and checks ranges from here, and nowhere else.
 */
import { CoreError, type SamplingOptions } from "./types.js";

export type SamplingKey = Exclude<keyof SamplingOptions, "stop">;

interface Limit {
  min: number;
  max: number;
  integer?: boolean;
}

export interface SamplingField {
  key: SamplingKey;
  /** the name on the wire (`top_p`); the CLI flag is the same with dashes (`--top-p`) */
  wire: string;
  limit: Limit;
}

export const SAMPLING_FIELDS: readonly SamplingField[] = [
  { key: "temperature", wire: "temperature", limit: { min: 0, max: 2 } },
  { key: "topP", wire: "top_p", limit: { min: 0, max: 1 } },
  { key: "topK", wire: "top_k", limit: { min: 0, max: 100_000, integer: true } },
  { key: "minP", wire: "min_p", limit: { min: 0, max: 1 } },
  { key: "seed", wire: "seed", limit: { min: 0, max: 2 ** 32 - 1, integer: true } },
  { key: "maxTokens", wire: "max_tokens", limit: { min: 1, max: 1_000_000, integer: true } },
  { key: "repeatPenalty", wire: "repeat_penalty", limit: { min: 0, max: 10 } },
  { key: "frequencyPenalty", wire: "frequency_penalty", limit: { min: -2, max: 2 } },
  { key: "presencePenalty", wire: "presence_penalty", limit: { min: -2, max: 2 } },
];

export const MAX_STOP_SEQUENCES = 16;

/** What llama.cpp's own tools default to; a request overrides any of them. */
export const DEFAULT_SAMPLING = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 } as const;

export function samplingField(key: SamplingKey): SamplingField {
  return SAMPLING_FIELDS.find((f) => f.key === key)!;
}

/** The wire name of a core field (`topP` -> `top_p`, `responseFormat` -> `response_format`), for messages that name it. */
export function wireName(key: string): string {
  return SAMPLING_FIELDS.find((f) => f.key === key)?.wire ?? key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function describeLimit(limit: Limit): string {
  return `${limit.integer ? "an integer" : "a number"} from ${limit.min} to ${limit.max}`;
}

/** What is wrong with `value` for this option ("must be a number from 0 to 2"), or undefined. */
export function samplingError(key: SamplingKey, value: unknown): string | undefined {
  const { limit } = samplingField(key);
  const ok = typeof value === "number" && Number.isFinite(value) && value >= limit.min && value <= limit.max && (!limit.integer || Number.isInteger(value));
  return ok ? undefined : `must be ${describeLimit(limit)}`;
}

/** Throws `invalid_request` naming the first option out of range. */
export function validateSampling(options: SamplingOptions): void {
  for (const { key } of SAMPLING_FIELDS) {
    if (options[key] === undefined) continue;
    const error = samplingError(key, options[key]);
    if (error) throw new CoreError("invalid_request", `${key} ${error}`, { param: key });
  }
  const stop = options.stop;
  if (stop === undefined) return;
  if (!Array.isArray(stop) || stop.length > MAX_STOP_SEQUENCES) {
    throw new CoreError("invalid_request", `stop must be a list of at most ${MAX_STOP_SEQUENCES} strings`, { param: "stop" });
  }
  if (stop.some((s) => typeof s !== "string" || s.length === 0 || s.length > 1000)) {
    throw new CoreError("invalid_request", "each stop sequence must be a non-empty string of at most 1000 characters", { param: "stop" });
  }
}
