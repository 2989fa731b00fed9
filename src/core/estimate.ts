/**
 * What a model will take in memory before it is loaded: node-llama-cpp's own estimate of
 * its weights and of a context of every sequence, as the residency's memory budget needs
 * it. Runs in the model's runner, which has a Llama (the estimate asks it about the GPU).
 */
import type { Llama } from "node-llama-cpp";
import { firstLine } from "./engine.js";
import type { Estimate } from "./runner-protocol.js";
import { CoreError, type CoreOptions, type ModelSource } from "./types.js";

export async function estimate(llama: Llama, source: ModelSource, options: CoreOptions): Promise<Estimate> {
  const { readGgufFileInfo, GgufInsights } = await import("node-llama-cpp");
  try {
    const insights = await GgufInsights.from(await readGgufFileInfo(source.path, { logWarnings: false }), llama);
    const gpuLayers = options.gpu === "cpu" || llama.gpu === false ? 0 : insights.totalLayers;
    const contextSize = Math.min(options.ctxSize, insights.trainContextSize ?? options.ctxSize);
    const weights = await insights.estimateModelResourceRequirementsV2({ gpuLayers });
    const context = await insights.estimateContextResourceRequirementsV2({ contextSize, modelGpuLayers: gpuLayers, sequences: options.parallel, batchSize: 512 });
    return { ramBytes: weights.cpuRam + context.cpuRam, vramBytes: weights.gpuVram + context.gpuVram, contextSize };
  } catch (error) {
    throw new CoreError("unavailable", `cannot load model ${source.name}: its file cannot be read (${firstLine(error).replaceAll(source.path, source.name)})`, { cause: error });
  }
}
