/** Turns the resolved Config and --model specs into a running InferenceCore. */
import { type Config } from "../config.js";
import { UsageError } from "../errors.js";
import { InferenceCore, type ModelSource } from "../core/index.js";
import { DEMO_MODEL_NAME, ensureDemoModel } from "../core/demo-model.js";
import { isRemoteSpec, modelNameFromPath, resolveModelSpec } from "../core/models.js";
import { downloadProgress } from "./progress.js";

export async function resolveModels(config: Config, specs: string[]): Promise<ModelSource[]> {
  if (specs.length === 0) {
    const demo = await ensureDemoModel(config.modelsDir);
    process.stderr.write(
      "mlxs: using the built-in demo model: random weights, so it answers in word salad.\n" +
      "      Pass a real model with --model FILE.gguf, --model hf:user/repo or --model https://... (see the README).\n",
    );
    return [demo];
  }
  const sources: ModelSource[] = [];
  for (const spec of specs) {
    const progress = downloadProgress();
    const source = await resolveModelSpec(spec, { modelsDir: config.modelsDir, named: config.models, onDownloadProgress: progress.update });
    progress.finish(source.path);
    if (sources.some((s) => s.name === source.name)) throw new UsageError(`two models would be served as "${source.name}"; name them in the config file's "models" map`);
    sources.push(source);
  }
  return sources;
}

/** The --model flag(s), else the configured model; none means the demo model. */
export function modelSpecs(flag: string | string[] | undefined, config: Config): string[] {
  if (flag !== undefined) return Array.isArray(flag) ? flag : [flag];
  return config.model ? [config.model] : [];
}

export async function openCore(config: Config, flag: string | string[] | undefined): Promise<InferenceCore> {
  const sources = await resolveModels(config, modelSpecs(flag, config));
  return new InferenceCore(sources, config);
}

/** What the audit log calls the model of a run, before (or without) loading it. */
export function modelLabel(flag: string | string[] | undefined, config: Config): string {
  const spec = modelSpecs(flag, config)[0];
  if (spec === undefined) return DEMO_MODEL_NAME;
  if (config.models[spec] !== undefined) return spec;
  return isRemoteSpec(spec) ? modelNameFromPath(spec.replace(/[?#].*$/, "")) : modelNameFromPath(spec);
}
