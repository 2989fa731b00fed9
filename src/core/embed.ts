/** Embeddings: one vector per input, through the model's embedding context. */
import type { LoadedModel } from "./loaded-model.js";
import { CoreError, type EmbeddingRequest, type EmbeddingResult } from "./types.js";

export const MAX_EMBEDDING_INPUTS = 2048;

export async function embed(loaded: LoadedModel, request: EmbeddingRequest, signal?: AbortSignal): Promise<EmbeddingResult> {
  const { input } = request;
  if (!Array.isArray(input) || input.length === 0 || input.length > MAX_EMBEDDING_INPUTS) {
    throw new CoreError("invalid_request", `input must hold 1 to ${MAX_EMBEDDING_INPUTS} strings`, { param: "input" });
  }
  const tokens = input.map((text, index) => {
    if (typeof text !== "string" || text.length === 0) {
      throw new CoreError("invalid_request", `input[${index}] must be a non-empty string`, { param: "input" });
    }
    const count = loaded.model.tokenize(text).length;
    if (count > loaded.contextSize) {
      throw new CoreError("invalid_request", `input[${index}] is ${count} tokens; the context holds ${loaded.contextSize}`, { param: "input" });
    }
    return count;
  });
  const pool = await loaded.embeddings();
  const lease = await pool.acquire(signal);
  try {
    const vectors: number[][] = [];
    for (const text of input) {
      if (signal?.aborted) throw new CoreError("cancelled", "the request was cancelled");
      vectors.push([...(await lease.slot.getEmbeddingFor(text)).vector]);
    }
    return { model: loaded.name, vectors, tokens, usage: { promptTokens: tokens.reduce((a, b) => a + b, 0) } };
  } catch (error) {
    throw error instanceof CoreError ? error : new CoreError("internal", "embedding failed", { cause: error });
  } finally {
    lease.release();
  }
}
