/** `mlxs chat [PROMPT]`: one question, the answer streamed to stdout as it is generated. */
import type { Command } from "commander";
import { loadConfig, UsageError } from "../config.js";
import type { ChatMessage, GenerationResult } from "../core/types.js";
import { configFlagsFrom, samplingFrom } from "./options.js";
import { modelLabel, openCore } from "./open-core.js";
import { interruptible, readStdin, writeOut } from "./io.js";
import { audited } from "./audited.js";

export async function run(promptArg: string | undefined, _opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const sampling = samplingFrom(opts);
  let prompt = promptArg;
  if (prompt === undefined) {
    if (process.stdin.isTTY) throw new UsageError("give a prompt: mlxs chat \"Hello\" (or pipe one on stdin)");
    prompt = (await readStdin()).replace(/\r?\n$/, "");
  }
  if (prompt.trim() === "") throw new UsageError("the prompt is empty");

  const messages: ChatMessage[] = [];
  if (opts.system) messages.push({ role: "system", content: String(opts.system) });
  messages.push({ role: "user", content: prompt });

  const json = Boolean(opts.json);
  await audited(config, { endpoint: "cli:chat", stream: !json, model: modelLabel(opts.model, config) }, async (tracker) => {
    const core = await openCore(config, opts.model as string | undefined);
    try {
      tracker.model = core.models()[0]!.name;
      tracker.backendType = await core.backend();
      const result = await interruptible(async (signal) => {
        let done: GenerationResult | undefined;
        let endsWithNewline = true;
        for await (const event of core.chat({ ...sampling, messages }, signal)) {
          if (event.type === "done") {
            done = event;
            continue;
          }
          tracker.firstToken();
          if (!json) {
            writeOut(event.text);
            endsWithNewline = event.text.endsWith("\n");
          }
        }
        if (!json && !endsWithNewline) writeOut("\n");
        return done!;
      });
      tracker.tokens(result.usage.promptTokens, result.usage.completionTokens);
      if (json) writeOut(JSON.stringify(resultJson(result, tracker.backendType)) + "\n");
      if (result.finishReason === "cancelled") {
        process.exitCode = 130;
        tracker.end({ status: "cancelled", statusCode: 130, errorType: "cancelled" });
      }
    } finally {
      await core.close();
    }
  });
}

function resultJson(result: GenerationResult, backend: string | null) {
  return {
    model: result.model,
    backend,
    text: result.text,
    finish_reason: result.finishReason,
    ...(result.stopSequence === undefined ? {} : { stop_sequence: result.stopSequence }),
    usage: {
      prompt_tokens: result.usage.promptTokens,
      completion_tokens: result.usage.completionTokens,
      total_tokens: result.usage.promptTokens + result.usage.completionTokens,
    },
    timings: {
      queue_ms: round(result.timings.queueMs),
      ttft_ms: round(result.timings.ttftMs),
      total_ms: round(result.timings.totalMs),
      tokens_per_second: round(result.timings.tokensPerSecond),
    },
  };
}

const round = (n: number) => Math.round(n * 100) / 100;
