/** The messages between a model's runner process and the process that owns it. */
import type { ChatRequest, CompletionRequest, CoreOptions, EmbeddingRequest, EmbeddingResult, ErrorKind, GenerationEvent, ModelSource } from "./types.js";
import { CoreError } from "./types.js";

/** From the owner to the runner. */
export type ToRunner =
  | { t: "init"; options: CoreOptions }
  | { t: "model"; source: ModelSource }
  | { t: "estimate"; id: number }
  | { t: "load"; id: number; threads?: number }
  | { t: "ping"; id: number }
  | { t: "chat"; id: number; request: ChatRequest }
  | { t: "complete"; id: number; request: CompletionRequest }
  | { t: "count"; id: number; request: ChatRequest }
  | { t: "embed"; id: number; request: EmbeddingRequest }
  | { t: "cancel"; id: number }
  /** the owner's queue of this generation's events is full: stop taking tokens until `resume` */
  | { t: "pause"; id: number }
  | { t: "resume"; id: number }
  | { t: "close" };

/** From the runner to its owner; several at once travel as one `batch`. */
export type FromRunner =
  | { t: "ready"; backend: string }
  | { t: "busy"; busy: number; waiting: number }
  | { t: "event"; id: number; event: GenerationEvent }
  | { t: "result"; id: number; value: number | PackedEmbeddings | LoadResult | Estimate }
  | { t: "error"; id: number; error: SerializedError }
  | { t: "batch"; messages: FromRunner[] };

/** What loading a model tells its owner. */
export interface LoadResult {
  contextSize: number;
  threads: number;
}

/** node-llama-cpp's estimate of what loading the model takes, before loading it. */
export interface Estimate {
  /** RAM, bytes: the weights and a context of every sequence */
  ramBytes: number;
  /** VRAM, bytes, on a GPU */
  vramBytes: number;
  contextSize: number;
}

/**
 * Embeddings as they cross: every vector in one Float32Array, which a structured clone
 * copies as one buffer (an array of 2 048 arrays of numbers is cloned number by number, in
 * both event loops). llama.cpp's embeddings are float32: nothing is lost.
 */
export interface PackedEmbeddings extends Omit<EmbeddingResult, "vectors"> {
  /** the length of each vector */
  dimensions: number;
  /** the vectors, one after another */
  data: Float32Array;
}

export function packEmbeddings({ vectors, ...rest }: EmbeddingResult): PackedEmbeddings {
  const dimensions = vectors[0]?.length ?? 0;
  const data = new Float32Array(vectors.length * dimensions);
  vectors.forEach((vector, i) => data.set(vector, i * dimensions));
  return { ...rest, dimensions, data };
}

/** The vectors as the core's API has them (numbers, for JSON). */
export function unpackEmbeddings({ dimensions, data, ...rest }: PackedEmbeddings): EmbeddingResult {
  const vectors: number[][] = [];
  for (let start = 0; dimensions > 0 && start < data.length; start += dimensions) vectors.push(Array.from(data.subarray(start, start + dimensions)));
  return { ...rest, vectors };
}

export interface SerializedError {
  kind: ErrorKind;
  message: string;
  param?: string;
  retryAfterS?: number;
}

/** Errors cross as their kind and message: anything else was a bug, and says only that. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof CoreError) return { kind: error.kind, message: error.message, param: error.param, retryAfterS: error.retryAfterS };
  return { kind: "internal", message: "generation failed" };
}

export function deserializeError(error: SerializedError): CoreError {
  return new CoreError(error.kind, error.message, { param: error.param, retryAfterS: error.retryAfterS });
}
