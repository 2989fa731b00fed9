/** `mlxs chat [PROMPT]`: one question, the answer streamed to stdout as it is generated. */
import type { Command } from "commander";
import { loadConfig, type Config } from "../config.js";
import { UsageError } from "../errors.js";
import { readFileSync } from "node:fs";
import type { ChatMessage, GenerationEvent, GenerationResult, ResponseFormat } from "../core/types.js";
import { prepareSchema } from "../core/json-schema.js";
import { LocalBackend, RemoteBackend, type ChatBackend } from "./chat-backend.js";
import { configFlagsFrom, samplingFrom } from "./options.js";
import { modelLabel, openCore } from "./open-core.js";
import { interruptible, outputClosed, readStdin, writeOut } from "./io.js";
import { audited, cancelledOutcome, loadedAfter } from "./audited.js";
import { captureTypeAhead } from "../tui/type-ahead.js";
import { recorded } from "../server/recorded.js";
import { daemonAddress } from "./daemon.js";
import { clientApiKey } from "./api-key.js";

export async function run(promptArg: string | undefined, _opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const sampling = samplingFrom(opts);
  const system = opts.system === undefined ? undefined : String(opts.system);
  const json = Boolean(opts.json);
  const responseFormat = opts.jsonSchema === undefined ? undefined : schemaFormat(String(opts.jsonSchema));

  // no prompt on a terminal: the interactive chat
  if (promptArg === undefined && process.stdin.isTTY && process.stdout.isTTY && !json) {
    // from here on, keys typed while the chat starts are kept for it, not echoed or lost
    const typed = captureTypeAhead();
    let backend: ChatBackend;
    try {
      backend = await openBackend(config, opts);
    } catch (error) {
      typed.cancel();
      throw error;
    }
    try {
      const { runChatApp } = await import("../tui/run.js");
      await runChatApp({ backend, system, sampling, responseFormat, typeAhead: typed.take() });
    } finally {
      await backend.close();
    }
    return;
  }

  let prompt = promptArg;
  if (prompt === undefined) {
    if (process.stdin.isTTY) throw new UsageError("give a prompt: mlxs chat \"Hello\" (or pipe one on stdin)");
    prompt = (await readStdin()).replace(/\r?\n$/, "");
  }
  if (prompt.trim() === "") throw new UsageError("the prompt is empty");
  const messages: ChatMessage[] = [];
  if (system !== undefined) messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: prompt });

  if (opts.url) {
    // the server audits remote answers
    const backend = await openBackend(config, opts);
    const result = await interruptible((signal) => printAnswer(backend.stream(messages, { ...sampling, responseFormat }, signal), json));
    if (json) writeOut(JSON.stringify(resultJson(result, backend.label)) + "\n");
    if (result.finishReason === "cancelled") process.exitCode = outputClosed() ? 0 : 130;
    return;
  }

  await audited(config, { endpoint: "cli:chat", stream: !json, model: modelLabel(opts.model, config) }, async (tracker) => {
    const opening = performance.now();
    const core = await openCore(config, opts.model as string | undefined);
    try {
      tracker.model = core.defaultModel;
      tracker.backendType = await core.backend();
      const startupMs = performance.now() - opening;
      const result = await interruptible((signal) => printAnswer(recorded(tracker, { responseFormat }, loadedAfter(startupMs, core.chat({ ...sampling, messages, responseFormat }, signal))), json));
      if (json) writeOut(JSON.stringify(resultJson(result, tracker.backendType)) + "\n");
      if (result.finishReason === "cancelled") {
        // stopped by Ctrl-C: 130; by a reader that left (| head): 0, as head expects
        process.exitCode = outputClosed() ? 0 : 130;
        tracker.end(cancelledOutcome());
      }
    } finally {
      await core.close();
    }
  });
}

/** Streams an answer to stdout as it comes (or, with --json, only collects it). */
async function printAnswer(events: AsyncGenerator<GenerationEvent>, json: boolean): Promise<GenerationResult> {
  let done: GenerationResult | undefined;
  let endsWithNewline = true;
  for await (const event of events) {
    if (event.type === "done") done = event;
    if (event.type !== "delta") continue;
    if (!json) {
      writeOut(event.text);
      endsWithNewline = event.text.endsWith("\n");
    }
  }
  if (!json && !endsWithNewline) writeOut("\n");
  return done!;
}

/** `--json-schema FILE`: the schema, checked before any model loads (what the grammar cannot enforce is named). */
function schemaFormat(file: string): ResponseFormat {
  let schema: unknown;
  try {
    schema = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`--json-schema: ${code ? `cannot read ${file} (${code})` : `${file} is not JSON`}`);
  }
  try {
    prepareSchema(schema, "schema");
  } catch (error) {
    throw new UsageError(`--json-schema: ${file}: ${(error as Error).message}`);
  }
  return { type: "json_schema", schema: schema as Record<string, unknown> };
}

async function openBackend(config: Config, opts: Record<string, unknown>): Promise<ChatBackend> {
  if (opts.url) {
    const daemon = daemonAddress(opts.url, config);
    const backend = new RemoteBackend(daemon.url, clientApiKey(opts), opts.model as string | undefined, daemon.from);
    await backend.connect();
    return backend;
  }
  const core = await openCore(config, opts.model as string | undefined);
  return new LocalBackend(core, await core.backend(), config);
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
