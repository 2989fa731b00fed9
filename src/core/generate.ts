/**
 * Chat and completion: a protocol-neutral request in, text deltas out as they are
 * generated, then one `done` event with the finish reason, usage and timings. The request
 * becomes a prompt and a plan; a sequence is taken (the one whose cache holds the longest
 * start of the prompt, which is then not evaluated again); the batcher generates.
 * Leaving the iteration early (break, return, a thrown error) or aborting the signal stops
 * the generation and frees its sequence. A `pace` pauses it (it takes no tokens, keeps its
 * sequence) and resumes it; so does reading nothing (see MAX_UNREAD_EVENTS).
 */
import type { ChatHistoryItem, LlamaContextSequence, LlamaText, Token } from "node-llama-cpp";
import { randomInt } from "node:crypto";
import { Generation, cachedPrefix, type GenerationPlan, type Pace, type ToolPlan } from "./generation.js";
import { toolSyntax } from "./tool-syntax.js";
import type { LoadedModel } from "./loaded-model.js";
import type { Constraint } from "./grammars.js";
import { checkChatRequest, checkCompletionRequest, checkCountRequest, offeredFunctions, type PreparedFunction } from "./request-checks.js";
import { DEFAULT_SAMPLING } from "./sampling.js";
import { CoreError, type ChatMessage, type ChatRequest, type CompletionRequest, type GenerationEvent, type SamplingOptions } from "./types.js";

/** the generated tokens that repetition penalties look back on, as LlamaChat's default */
const PENALTY_LAST_TOKENS = 64;
/**
 * A sequence whose cache holds at least this share of the prompt is taken for it, as
 * llama-server's --slot-prompt-similarity (0.5); otherwise the least recently used one, so
 * that a short common start (the template's first tokens) never costs another
 * conversation its cache.
 */
const REUSE_SHARE = 0.5;

export async function* chat(loaded: LoadedModel, request: ChatRequest, signal?: AbortSignal, pace?: Pace): AsyncGenerator<GenerationEvent> {
  const startedAt = performance.now();
  // checked before the model was acquired (InferenceCore); again here, for a caller that did not
  checkChatRequest(request);
  const functions = offeredFunctions(request);
  const { prompt, triggers } = chatPrompt(loaded, request.messages, functions);
  const constraint = await loaded.grammars.forFormat(request.responseFormat, "responseFormat");
  const tools = functions && await toolPlan(loaded, request, functions);
  yield* generate(loaded, prompt, [...(request.stop ?? []), ...textTriggers(triggers)], { ...request, constraint, tools }, startedAt, signal, pace);
}

export async function* complete(loaded: LoadedModel, request: CompletionRequest, signal?: AbortSignal, pace?: Pace): AsyncGenerator<GenerationEvent> {
  const startedAt = performance.now();
  checkCompletionRequest(request);
  const constraint = await loaded.grammars.forFormat(request.responseFormat, "responseFormat");
  yield* generate(loaded, completionPrompt(loaded, request.prompt), request.stop ?? [], { ...request, constraint }, startedAt, signal, pace);
}

/** Prompt tokens of a chat (its tools' definitions included), counted through the model's chat template as generation sees them. */
export function countChatTokens(loaded: LoadedModel, request: ChatRequest): number {
  checkCountRequest(request);
  return chatPrompt(loaded, request.messages, offeredFunctions(request)).prompt.length;
}

async function toolPlan(loaded: LoadedModel, request: ChatRequest, functions: PreparedFunction[]): Promise<ToolPlan> {
  const choice = request.toolChoice ?? "auto";
  // a named function is among the tools (checkChatRequest)
  const named = typeof choice === "object" ? choice.name : undefined;
  const syntax = await toolSyntax(loaded.chatWrapper);
  const schemas = functions.map(({ name, schema }) => ({ name, schema }));
  return {
    syntax,
    functions: schemas,
    grammar: await loaded.grammars.forCall(schemas, syntax, named),
    forced: choice === "required" || named !== undefined ? { named } : undefined,
    parallel: request.parallelToolCalls !== false && named === undefined,
  };
}

function chatPrompt(loaded: LoadedModel, messages: ChatMessage[], functions?: PreparedFunction[]): { prompt: Token[]; triggers: LlamaText[] } {
  const { contextText, stopGenerationTriggers } = loaded.chatWrapper.generateContextState({
    chatHistory: toChatHistory(messages),
    availableFunctions: functions && Object.fromEntries(functions.map((f) => [f.name, { description: f.description, params: f.schema as never }])),
    documentFunctionParams: true,
  });
  return { prompt: contextText.tokenize(loaded.model.tokenizer), triggers: stopGenerationTriggers };
}

function completionPrompt(loaded: LoadedModel, prompt: string): Token[] {
  const { tokens } = loaded.model;
  const bos = tokens.shouldPrependBosToken && tokens.bos !== null ? [tokens.bos] : [];
  return [...bos, ...loaded.model.tokenize(prompt)];
}

/**
 * The chat template's end-of-turn texts ("<|im_end|>" written out, "### Human" ...). Its
 * special tokens need nothing: the model's end-of-generation tokens end every answer.
 */
function textTriggers(triggers: LlamaText[]): string[] {
  return triggers.filter((t) => t.values.length > 0 && t.values.every((v) => typeof v === "string")).map((t) => t.values.join(""));
}

/**
 * Messages as node-llama-cpp's chat history: an assistant's tool calls become function
 * calls in its response, each with the result its tool message gave.
 */
export function toChatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  const results = new Map(messages.filter((m) => m.role === "tool").map((m) => [m.toolCallId, m.content]));
  const history: ChatHistoryItem[] = messages.filter((m) => m.role !== "tool").map((m): ChatHistoryItem =>
    m.role === "system" ? { type: "system", text: m.content }
      : m.role === "user" ? { type: "user", text: m.content }
        : {
          type: "model",
          response: [
            ...(m.content || !m.toolCalls?.length ? [m.content] : []),
            ...(m.toolCalls ?? []).map((call) => ({ type: "functionCall" as const, name: call.name, params: jsonOr(call.arguments), result: results.has(call.id) ? jsonOr(results.get(call.id)!) : undefined })),
          ],
        });
  // a trailing assistant message is a prefix the answer continues; otherwise the answer starts empty
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  return history;
}

/** What shapes an answer besides its prompt: sampling, and a grammar's constraint. */
type Shaping = SamplingOptions & { constraint?: Constraint; tools?: ToolPlan };

function planOf(prompt: Token[], stops: string[], request: Shaping, room: number): GenerationPlan {
  const penalize = request.repeatPenalty !== undefined || request.frequencyPenalty !== undefined || request.presencePenalty !== undefined;
  return {
    prompt,
    stops,
    maxTokens: Math.min(request.maxTokens ?? room, room),
    sampling: {
      temperature: request.temperature ?? DEFAULT_SAMPLING.temperature,
      topK: request.topK ?? DEFAULT_SAMPLING.topK,
      topP: request.topP ?? DEFAULT_SAMPLING.topP,
      minP: request.minP ?? DEFAULT_SAMPLING.minP,
      // node-llama-cpp seeds an absent seed with the current second, so requests within one second answered alike
      seed: request.seed ?? randomInt(2 ** 32),
    },
    penalty: penalize
      ? { penalty: request.repeatPenalty ?? 1, frequencyPenalty: request.frequencyPenalty, presencePenalty: request.presencePenalty, lastTokens: PENALTY_LAST_TOKENS }
      : undefined,
    constraint: request.constraint,
    tools: request.tools,
  };
}

async function* generate(
  loaded: LoadedModel,
  prompt: Token[],
  stops: string[],
  request: Shaping,
  startedAt: number,
  signal: AbortSignal | undefined,
  pace: Pace | undefined,
): AsyncGenerator<GenerationEvent> {
  const room = loaded.contextSize - prompt.length;
  if (room < 1) {
    throw new CoreError("invalid_request", `the prompt is ${prompt.length} tokens; the context holds ${loaded.contextSize}`, { param: "messages" });
  }
  const plan = planOf(prompt, stops, request, room);
  const lease = await loaded.sequences.acquire(signal, (free) => sequenceFor(loaded, free, prompt));
  const generation = new Generation(loaded.name, loaded.model, lease.slot, plan, { startedAt, queueMs: lease.queueMs }, loaded.order.get(lease.slot)!, () => {
    loaded.used(lease.slot);
    lease.release();
  });
  const onAbort = () => generation.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) generation.cancel();
  pace?.attach(generation);
  loaded.batcher.add(generation);
  try {
    yield* generation.events();
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // a consumer that left early: the generation stops at its next token and frees the sequence
    generation.cancel();
  }
}

/** Of the free sequences, the one that already holds most of the prompt (a conversation's earlier turns), else the least recently used. */
function sequenceFor(loaded: LoadedModel, free: readonly LlamaContextSequence[], prompt: Token[]): number {
  let best = 0;
  let cached = -1;
  free.forEach((sequence, i) => {
    const n = cachedPrefix(sequence, prompt);
    if (n > cached) [best, cached] = [i, n];
  });
  if (cached >= prompt.length * REUSE_SHARE) return best;
  let oldest = 0;
  free.forEach((sequence, i) => { if (loaded.lastUsed(sequence) < loaded.lastUsed(free[oldest]!)) oldest = i; });
  return oldest;
}

/** JSON text as its value, or the text itself when it is not JSON (a tool's plain answer). */
function jsonOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
