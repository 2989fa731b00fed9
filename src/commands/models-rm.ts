/** `mlxs models rm NAME`: deletes a model from the models directory (every part of a split one, and an unfinished pull). */
import type { Command } from "commander";
import { readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { loadConfig } from "../config.js";
import { CommandFailure } from "../errors.js";
import { ggufFiles } from "../core/registry.js";
import { configFlagsFrom } from "./options.js";
import { writeOut } from "./io.js";

export async function run(name: string, _opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const file = ggufFiles(config.modelsDir).find((f) => f.name === name);
  if (!file) {
    const configured = config.models[name] !== undefined ? ` (it is in the config file's "models": remove it there)` : "";
    throw new CommandFailure(`no model "${name}" in ${config.modelsDir}${configured}`);
  }
  const split = /^(.+)-00001-of-(\d{5})\.gguf$/i.exec(file.path);
  const parts = split
    ? readdirSync(dirname(file.path)).map((f) => join(dirname(file.path), f)).filter((p) => p.startsWith(`${split[1]}-`) && p.endsWith(`-of-${split[2]}.gguf`))
    : [file.path];
  for (const part of [...parts, `${file.path}.part`]) rmSync(part, { force: true });
  writeOut(`removed ${name} (${(file.sizeBytes / 2 ** 20).toFixed(1)} MB)\n`);
}
