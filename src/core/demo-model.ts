/** The built-in demo model: written into the data directory on first use, same bytes every time. */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DEMO_MODEL, writeTinyModel } from "./gguf-writer.js";
import type { ModelSource } from "./types.js";

export const DEMO_MODEL_NAME = "demo";

/** Where the demo model is (or will be) written. */
export function demoModelPath(modelsDir: string): string {
  return join(modelsDir, `mlxs-demo-${DEMO_MODEL.seed}.gguf`);
}

export async function ensureDemoModel(modelsDir: string): Promise<ModelSource> {
  const path = demoModelPath(modelsDir);
  // the writer renames a finished file into place, so an existing file is a whole one
  if (!(await stat(path).catch(() => undefined))?.isFile()) await writeTinyModel(path, DEMO_MODEL);
  return { name: DEMO_MODEL_NAME, path };
}
