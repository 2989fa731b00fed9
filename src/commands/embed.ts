/** `mlxs embed [TEXT...]`: embeddings as JSON, one input per argument or per stdin line. */
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import { UsageError } from "../errors.js";
import { configFlagsFrom } from "./options.js";
import { modelLabel, openCore } from "./open-core.js";
import { interruptible, readStdin, writeOut } from "./io.js";
import { audited } from "./audited.js";

export async function run(texts: string[], _opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  let input = texts;
  if (input.length === 0) {
    if (process.stdin.isTTY) throw new UsageError("give texts to embed as arguments, or one per line on stdin");
    input = (await readStdin()).split(/\r?\n/).filter((line) => line.trim() !== "");
  }
  if (input.length === 0) throw new UsageError("nothing to embed: no non-empty input");
  if (input.some((text) => text.trim() === "")) throw new UsageError("an input is empty");

  await audited(config, { endpoint: "cli:embed", stream: false, model: modelLabel(opts.model, config) }, async (tracker) => {
    const opening = performance.now();
    const core = await openCore(config, opts.model as string | undefined);
    try {
      tracker.model = core.defaultModel;
      tracker.backendType = await core.backend();
      const startupMs = performance.now() - opening;
      const result = await interruptible((signal) => core.embed({ input }, signal));
      tracker.tokens(result.usage.promptTokens, 0);
      // starting the engine is part of loading, as in chat (see loadedAfter)
      tracker.loadMs = startupMs + (result.loadMs ?? 0);
      if (opts.format === "jsonl") {
        result.vectors.forEach((embedding, index) => writeOut(JSON.stringify({ index, embedding, tokens: result.tokens[index] }) + "\n"));
      } else {
        writeOut(JSON.stringify({
          object: "list",
          model: result.model,
          data: result.vectors.map((embedding, index) => ({ object: "embedding", index, embedding, tokens: result.tokens[index] })),
          usage: { prompt_tokens: result.usage.promptTokens, total_tokens: result.usage.promptTokens },
        }) + "\n");
      }
    } finally {
      await core.close();
    }
  });
}
