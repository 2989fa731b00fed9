/** The protocol-neutral requests, results and errors of the inference core. */

/** `unloaded`: the model was unloaded (by force) under a running request, which is cancelled */
export type ErrorKind = "invalid_request" | "not_found" | "overloaded" | "unavailable" | "unloaded" | "timeout" | "cancelled" | "internal";

/**
 * An error as a value with a kind; each door maps the kind to its own shape. The message
 * never quotes request content: doors may show it to users and write it to logs.
 */
export class CoreError extends Error {
  readonly kind: ErrorKind;
  /** the request field at fault, in the core's camelCase (`maxTokens`) */
  readonly param?: string;
  /** `unavailable`: when trying again may succeed, in seconds (absent: it will not) */
  readonly retryAfterS?: number;

  constructor(kind: ErrorKind, message: string, options: { param?: string; cause?: unknown; retryAfterS?: number } = {}) {
    super(message, { cause: options.cause });
    this.name = "CoreError";
    this.kind = kind;
    this.param = options.param;
    this.retryAfterS = options.retryAfterS;
  }
}

export interface SamplingOptions {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  maxTokens?: number;
  /** up to 16 strings, matched across token boundaries, never emitted */
  stop?: string[];
  repeatPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
}

export type Role = "system" | "user" | "assistant" | "tool";

export interface ChatMessage {
  role: Role;
  content: string;
  /** an assistant's calls (its content may be empty) */
  toolCalls?: ToolCall[];
  /** a tool message: the call whose result `content` is */
  toolCallId?: string;
}

/** A function the model may call: its parameters a JSON schema (an object). */
export interface ToolDefinition {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

/** auto: the model decides; none: no call; required: at least one; a name: that function. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

export interface ToolCall {
  id: string;
  name: string;
  /** JSON text, valid against the function's parameters */
  arguments: string;
}

/**
 * The shape the answer must have: free text, any JSON object, or JSON valid against a
 * schema. JSON is generated under a grammar, so it is valid by construction.
 */
export type ResponseFormat = { type: "text" } | { type: "json_object" } | { type: "json_schema"; schema: Record<string, unknown> };

/** How long the model stays loaded once idle after this request (Ollama's keep_alive): 0 unloads it, -1 keeps it. */
export interface KeepAlive {
  keepAliveMs?: number;
}

export interface ChatRequest extends SamplingOptions, KeepAlive {
  /** a served model's name; the first served model when absent */
  model?: string;
  messages: ChatMessage[];
  responseFormat?: ResponseFormat;
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  /** several calls in one answer (default true) */
  parallelToolCalls?: boolean;
}

export interface CompletionRequest extends SamplingOptions, KeepAlive {
  model?: string;
  prompt: string;
  responseFormat?: ResponseFormat;
}

export interface EmbeddingRequest extends KeepAlive {
  model?: string;
  input: string[];
}

export type FinishReason = "stop" | "length" | "stop_sequence" | "tool_calls" | "cancelled";

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** of the prompt tokens, those found in the sequence's cache, not evaluated again */
  cachedPromptTokens?: number;
}

export interface Timings {
  /** waiting for the model to load (its share of queueMs; 0 when it was loaded) */
  loadMs?: number;
  /** waiting for the model and for a free sequence */
  queueMs: number;
  /** from the request's arrival at the loaded model to its first generated token (the load is loadMs) */
  ttftMs: number;
  totalMs: number;
  /** generated tokens per second after the first one */
  tokensPerSecond: number;
}

export interface GenerationResult {
  model: string;
  text: string;
  finishReason: FinishReason;
  /** the stop sequence that ended the text, when finishReason is `stop_sequence` */
  stopSequence?: string;
  /** the calls the answer makes (finishReason `tool_calls`) */
  toolCalls?: ToolCall[];
  usage: Usage;
  timings: Timings;
}

/**
 * What a generation yields: `start` first (once the prompt is known, before it is
 * evaluated), then the answer's text in deltas, then `done`.
 */
export type GenerationEvent =
  | { type: "start"; promptTokens: number; cachedPromptTokens: number; loadMs?: number }
  | { type: "delta"; text: string }
  /** a call begins: its function is known */
  | { type: "tool_call"; index: number; id: string; name: string }
  /** a piece of that call's arguments */
  | { type: "tool_arguments"; index: number; text: string }
  | ({ type: "done" } & GenerationResult);

export interface EmbeddingResult {
  model: string;
  /** how long the request waited for the model to load */
  loadMs?: number;
  vectors: number[][];
  /** tokens of each input, in order */
  tokens: number[];
  usage: { promptTokens: number };
}

export type GpuChoice = "auto" | "cpu" | "cuda" | "vulkan";
export const GPU_CHOICES: readonly GpuChoice[] = ["auto", "cpu", "cuda", "vulkan"];

export interface CoreOptions {
  gpu: GpuChoice;
  /** llama.cpp threads; undefined: measured for each model when it loads */
  threads?: number;
  /** tokens per sequence */
  ctxSize: number;
  /** concurrent sequences per model */
  parallel: number;
  /** requests that may wait for a sequence, per model */
  queue: number;
  /** llama.cpp's own diagnostics on stderr */
  debug?: boolean;
}

/** A model the core may load: its public name and its local file. */
export interface ModelSource {
  name: string;
  path: string;
}

/** A model the core can serve, by name (never its path: names are what clients see). */
export interface ModelInfo {
  name: string;
  /** loaded and ready (false while its load is still running) */
  loaded: boolean;
  /** bytes on disk, when known (a configured remote model before its download is not) */
  sizeBytes?: number;
  /** never evicted, never expires */
  pinned: boolean;
  /** when loaded: tokens per sequence */
  contextSize?: number;
  /** when loaded: milliseconds since its last request ended (0 while one runs) */
  idleMs?: number;
  /** when loaded: requests generating now, and requests waiting (for a sequence or the load) */
  busy?: number;
  waiting?: number;
  /** when loaded: llama.cpp threads, as given or as measured */
  threads?: number;
}
