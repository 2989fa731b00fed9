/** The built-in demo model: written into the data directory on first use, same bytes every time. */
import { readdirSync } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { DEMO_MODEL, writeTinyModel } from "./gguf-writer.js";
import type { ModelSource } from "./types.js";

export const DEMO_MODEL_NAME = "demo";

/** the demo model's file name, of this version or an older one (the seed in the name changes with the weights) */
const DEMO_FILE = /^mlxs-demo-\d+\.gguf$/;

/** Where the demo model is (or will be) written. */
export function demoModelPath(modelsDir: string): string {
  return join(modelsDir, `mlxs-demo-${DEMO_MODEL.seed}.gguf`);
}

/** Whether `path` is a demo model's file (this version's or an older one's) written into `modelsDir`: never a model of the user's. */
export function isDemoModelFile(path: string, modelsDir: string): boolean {
  return DEMO_FILE.test(basename(path)) && resolve(dirname(path)) === resolve(modelsDir);
}

export async function ensureDemoModel(modelsDir: string): Promise<ModelSource> {
  const path = demoModelPath(modelsDir);
  // the writer renames a finished file into place, so an existing file is a whole one
  if (!(await stat(path).catch(() => undefined))?.isFile()) {
    await writeTinyModel(path, DEMO_MODEL);
    // an older version's file (other weights) is of no more use
    for (const name of readdirSync(modelsDir)) {
      if (DEMO_FILE.test(name) && name !== basename(path)) await rm(join(modelsDir, name), { force: true });
    }
  }
  return { name: DEMO_MODEL_NAME, path };
}
