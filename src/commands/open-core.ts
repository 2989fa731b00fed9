/** Turns the resolved Config and --model specs into a running InferenceCore. */
import { existsSync } from "node:fs";
import { type Config } from "../config.js";
import { UsageError } from "../errors.js";
import { CoreError, InferenceCore, ModelRegistry, type LifecycleOptions, type ModelSource } from "../core/index.js";
import { directoryModels, ggufFiles } from "../core/registry.js";
import { DEMO_MODEL_NAME, ensureDemoModel } from "../core/demo-model.js";
import { isRemoteSpec, modelNameFromPath, resolveModelSpec } from "../core/model-specs.js";
import { downloadProgress } from "./progress.js";

export async function resolveModels(config: Config, specs: string[]): Promise<ModelSource[]> {
  if (specs.length === 0) {
    // the demo model is for a machine with no model at all: with any other, none is started
    // (a request names its model, or gets the only one there is)
    if (Object.keys(config.models).length > 0 || directoryModels(config.modelsDir).length > 0) return [];
    const demo = await ensureDemoModel(config.modelsDir);
    process.stderr.write(
      "mlxs: using the built-in demo model: random weights, so it answers in word salad.\n" +
      "      Pass a real model with --model FILE.gguf, --model hf:user/repo or --model https://... (see the README).\n",
    );
    return [demo];
  }
  const sources: ModelSource[] = [];
  for (const spec of specs) {
    // a name of the models directory, as `mlxs models list` shows it
    const local = config.models[spec] === undefined && !isRemoteSpec(spec) && !existsSync(spec) ? ggufFiles(config.modelsDir).find((f) => f.name === spec) : undefined;
    if (local) {
      sources.push({ name: local.name, path: local.path });
      continue;
    }
    const progress = downloadProgress();
    const source = await resolveModelSpec(spec, { modelsDir: config.modelsDir, named: config.models, onDownloadProgress: progress.update });
    progress.finish(source.path);
    if (sources.some((s) => s.name === source.name)) throw new UsageError(`two models would be served as "${source.name}"; name them in the config file's "models" map`);
    sources.push(source);
  }
  return sources;
}

/** The --model flag(s), else the configured model; none means the models of the config file and directory, or the demo model. */
export function modelSpecs(flag: string | string[] | undefined, config: Config): string[] {
  if (flag !== undefined) return Array.isArray(flag) ? flag : [flag];
  return config.model ? [config.model] : [];
}

/**
 * The core over the models given (the first is the default; loaded when asked), the
 * config file's and the models directory's. `lifecycle`: the daemon's keep-alive and
 * limits; a command that runs once keeps its model until it exits.
 */
export async function openCore(config: Config, flag: string | string[] | undefined, lifecycle: Partial<LifecycleOptions> = { keepAliveMs: -1, maxLoaded: 0 }): Promise<InferenceCore> {
  const started = await resolveModels(config, modelSpecs(flag, config));
  let registry: ModelRegistry;
  try {
    registry = new ModelRegistry({
      started,
      configured: Object.fromEntries(Object.entries(config.models).map(([name, spec]) => [name, { spec, pin: config.pin.includes(name) }])),
      modelsDir: config.modelsDir,
      pins: config.pin,
    });
  } catch (error) {
    if (error instanceof CoreError) throw new UsageError(error.message);
    throw error;
  }
  return new InferenceCore(registry, { gpu: config.gpu, threads: config.threads, ctxSize: config.ctxSize, parallel: config.parallel, queue: config.queue, debug: config.debug }, {
    keepAliveMs: config.keepAlive,
    maxKeepAliveMs: config.maxKeepAlive,
    maxLoaded: config.maxLoaded,
    memoryBudgetBytes: config.memoryBudget,
    loadWaitMs: config.loadWait,
    modelsDir: config.modelsDir,
    ...lifecycle,
  });
}

/** What the audit log calls the model of a run, before (or without) loading it. */
export function modelLabel(flag: string | string[] | undefined, config: Config): string {
  const spec = modelSpecs(flag, config)[0];
  if (spec === undefined) return DEMO_MODEL_NAME;
  if (config.models[spec] !== undefined) return spec;
  return isRemoteSpec(spec) ? modelNameFromPath(spec.replace(/[?#].*$/, "")) : modelNameFromPath(spec);
}
