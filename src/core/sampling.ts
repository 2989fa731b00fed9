/** Sampling options: their limits, one validator for every door, and defaults. */
import { CoreError, type SamplingOptions } from "./types.js";

interface Limit {
  min: number;
  max: number;
  integer?: boolean;
}

/** The accepted range of each numeric option; doors quote these in their own errors. */
export const SAMPLING_LIMITS: Readonly<Record<Exclude<keyof SamplingOptions, "stop">, Limit>> = {
  temperature: { min: 0, max: 2 },
  topP: { min: 0, max: 1 },
  topK: { min: 0, max: 100_000, integer: true },
  minP: { min: 0, max: 1 },
  seed: { min: 0, max: 2 ** 32 - 1, integer: true },
  maxTokens: { min: 1, max: 1_000_000, integer: true },
  repeatPenalty: { min: 0, max: 10 },
  frequencyPenalty: { min: -2, max: 2 },
  presencePenalty: { min: -2, max: 2 },
};

export const MAX_STOP_SEQUENCES = 16;

/** What llama.cpp's own tools default to; a request overrides any of them. */
export const DEFAULT_SAMPLING = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 } as const;

export function describeLimit(limit: Limit): string {
  return `${limit.integer ? "an integer" : "a number"} from ${limit.min} to ${limit.max}`;
}

/** Throws `invalid_request` naming the first option out of range. */
export function validateSampling(options: SamplingOptions): void {
  for (const [key, limit] of Object.entries(SAMPLING_LIMITS) as [keyof typeof SAMPLING_LIMITS, Limit][]) {
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== "number" || !Number.isFinite(value) || value < limit.min || value > limit.max ||
        (limit.integer && !Number.isInteger(value))) {
      throw new CoreError("invalid_request", `${key} must be ${describeLimit(limit)}`, { param: key });
    }
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
