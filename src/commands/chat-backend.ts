/**
 * Where `mlxs chat` gets its answers: the in-process core (each answer audited locally)
 * or a running OpenAI-compatible server (`--url`, which audits it there). The terminal UI
 * and the plain mode talk to either through this one interface.
 */
import type { Config } from "../config.js";
import { CommandFailure } from "../errors.js";
import type { InferenceCore } from "../core/index.js";
import type { ChatMessage, GenerationEvent, GenerationResult, ResponseFormat, SamplingOptions } from "../core/types.js";
import { AuditWriter } from "../audit/writer.js";
import { track, type Outcome } from "../audit/track.js";
import { CANCELLED, outcomeOf } from "./audited.js";
import { readSse } from "./sse-reader.js";
import { unreachable, type DaemonAddress } from "./daemon.js";
import { recorded } from "../server/recorded.js";

/** What shapes an answer: sampling, and the form asked of it (`--json-schema`). */
export type AnswerOptions = SamplingOptions & { responseFormat?: ResponseFormat };

export interface ChatBackend {
  /** shown in the status line: `llama.cpp/cpu`, or the server's address */
  readonly label: string;
  model: string;
  models(): string[];
  /** tokens per sequence, when known (local mode) */
  contextSize(): Promise<number | undefined>;
  /** prompt tokens of a conversation, when they can be counted (local mode) */
  countTokens?(messages: ChatMessage[]): Promise<number>;
  stream(messages: ChatMessage[], options: AnswerOptions, signal: AbortSignal): AsyncGenerator<GenerationEvent>;
  close(): Promise<void>;
}

export class LocalBackend implements ChatBackend {
  model: string;
  private readonly writer: AuditWriter;

  constructor(private readonly core: InferenceCore, readonly label: string, config: Config) {
    this.model = core.defaultModel;
    this.writer = AuditWriter.forLocation(config.auditDb, { sealKey: config.sealKey });
  }

  models(): string[] { return this.core.models().map((m) => m.name); }

  contextSize(): Promise<number> { return this.core.contextSize(this.model); }

  countTokens(messages: ChatMessage[]): Promise<number> {
    return this.core.countTokens({ model: this.model, messages });
  }

  /** One answer, and one audit record for it: success, error, or cancelled when stopped. */
  async *stream(messages: ChatMessage[], options: AnswerOptions, signal: AbortSignal): AsyncGenerator<GenerationEvent> {
    const tracker = track({ endpoint: "cli:chat", model: this.model, backendType: this.label, stream: true }, (r) => this.writer.record(r));
    // a consumer that stops reading before the end leaves a cancelled record
    let outcome: Outcome = CANCELLED;
    try {
      const request = { ...options, model: this.model, messages };
      for await (const event of recorded(tracker, request, this.core.chat(request, signal))) {
        if (event.type === "done") outcome = event.finishReason === "cancelled" ? CANCELLED : { status: "success", statusCode: 0 };
        yield event;
      }
    } catch (error) {
      outcome = outcomeOf(error);
      throw error;
    } finally {
      tracker.end(outcome);
    }
  }

  async close(): Promise<void> {
    await this.writer.close();
    await this.core.close();
  }
}

/** Any OpenAI-compatible server, through undici, streaming. */
export class RemoteBackend implements ChatBackend {
  model: string;
  readonly label: string;
  private served: string[] = [];

  private readonly address: DaemonAddress;

  /** `from`: where the address came from (see daemonAddress), said when it cannot be reached */
  constructor(base: string, private readonly apiKey: string | undefined, model: string | undefined, from = "--url") {
    this.label = base.replace(/\/+$/, "");
    this.address = { url: this.label, from };
    this.model = model ?? "";
  }

  /** Asks the server for its models; a failure is left for the first question to report. */
  async connect(): Promise<void> {
    try {
      const { body } = await this.call("GET", "/v1/models");
      this.served = ((await body.json()) as { data: { id: string }[] }).data.map((m) => m.id);
      if (!this.model) this.model = this.served[0] ?? "";
    } catch {
      // reported when a question is asked
    }
  }

  models(): string[] { return this.served; }

  async contextSize(): Promise<undefined> { return undefined; }

  private async call(method: "GET" | "POST", path: string, body?: unknown, signal?: AbortSignal) {
    const { request } = await import("undici");
    let response;
    try {
      response = await request(new URL(path, `${this.label}/`), {
        method, signal,
        headers: { "content-type": "application/json", ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw unreachable(this.address, error);
    }
    if (response.statusCode >= 400) {
      const problem = (await response.body.json().catch(() => ({}))) as { detail?: string; error?: { message?: string } };
      const detail = problem.detail ?? problem.error?.message;
      const what = response.statusCode === 401 ? "refused the API key (give --api-key-file, MLXS_API_KEY or --api-key)"
        : response.statusCode === 404 && path.includes("chat") ? `does not serve the model "${this.model}"`
          : `answered ${response.statusCode}`;
      throw new CommandFailure(`${this.label} ${what}${detail ? `: ${detail}` : ""}`);
    }
    return response;
  }

  async *stream(messages: ChatMessage[], sampling: AnswerOptions, signal: AbortSignal): AsyncGenerator<GenerationEvent> {
    const started = performance.now();
    const format = sampling.responseFormat;
    const body = {
      ...(this.model ? { model: this.model } : {}),
      messages, stream: true, stream_options: { include_usage: true },
      max_tokens: sampling.maxTokens, temperature: sampling.temperature, top_p: sampling.topP, top_k: sampling.topK,
      min_p: sampling.minP, seed: sampling.seed, stop: sampling.stop, repeat_penalty: sampling.repeatPenalty,
      frequency_penalty: sampling.frequencyPenalty, presence_penalty: sampling.presencePenalty,
      response_format: format?.type === "json_schema" ? { type: "json_schema", json_schema: { name: "answer", schema: format.schema, strict: true } } : format,
    };
    let text = "";
    let finish: string | null = null;
    let usage = { prompt_tokens: 0, completion_tokens: 0 };
    let firstAt: number | undefined;
    try {
      const response = await this.call("POST", "/v1/chat/completions", body, signal);
      for await (const { event, data } of readSse(response.body)) {
        if (data === "[DONE]") continue;
        const parsed = JSON.parse(data) as { error?: { message?: string }; detail?: string; choices?: { delta?: { content?: string }; finish_reason?: string | null }[]; usage?: typeof usage };
        if (parsed.error || event === "error") {
          throw new CommandFailure(`${this.label} failed mid-answer: ${parsed.detail ?? parsed.error?.message ?? "unknown error"}`);
        }
        if (parsed.usage) usage = parsed.usage;
        const choice = parsed.choices?.[0];
        if (choice?.finish_reason) finish = choice.finish_reason;
        const piece = choice?.delta?.content;
        if (piece) {
          firstAt ??= performance.now();
          text += piece;
          yield { type: "delta", text: piece };
        }
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    }
    const ended = performance.now();
    const result: GenerationResult = {
      model: this.model,
      text,
      finishReason: signal.aborted ? "cancelled" : finish === "length" ? "length" : "stop",
      usage: { promptTokens: usage.prompt_tokens, completionTokens: usage.completion_tokens },
      timings: {
        queueMs: 0,
        ttftMs: (firstAt ?? ended) - started,
        totalMs: ended - started,
        tokensPerSecond: firstAt && usage.completion_tokens > 1 ? (usage.completion_tokens - 1) / ((ended - firstAt) / 1000) : 0,
      },
    };
    yield { type: "done", ...result };
  }

  async close(): Promise<void> {}
}
