/**
 * track(): one request's lifecycle -> one AuditRecord. A door starts a tracker when a
 * request arrives, marks the first token, adds the token counts, and ends it once with
 * the outcome; the record then goes to the writer. Ending twice records once.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { AuditRecord, AuditStatus, ResponseFormatType } from "./schema.js";

export const MAX_ERROR_MESSAGE = 500;

/** Where this process serves: each record says so (`mlxs serve --instance NAME`, else the host name). */
let instance = hostname();
export function setInstance(name: string): void {
  instance = name;
}
export function currentInstance(): string {
  return instance;
}

export interface TrackStart {
  endpoint: string;
  requestId?: string;
  model?: string | null;
  backendType?: string | null;
  stream?: boolean;
  client?: string | null;
}

/** What ended the request. Error messages must already be free of request content. */
export type Outcome =
  | { status: "success"; statusCode?: number }
  | { status: Exclude<AuditStatus, "success">; statusCode?: number; errorType?: string; errorMessage?: string };

/**
 * `req_` + the time (so ids sort, and sit in the unique index, in time order: inserts and
 * prunes touch its pages in sequence) + 64 random bits.
 */
export function newRequestId(): string {
  return `req_${Date.now().toString(36).padStart(9, "0")}${randomBytes(8).toString("hex")}`;
}

export class Tracker {
  readonly requestId: string;
  private readonly startedAt = Date.now();
  private readonly startedHr = performance.now();
  private firstTokenHr?: number;
  private promptTokens: number | null = null;
  private completionTokens: number | null = null;
  private ended = false;
  /** the route, once known (a request may fail before its route is) */
  endpoint: string;
  model: string | null;
  backendType: string | null;
  stream: boolean;
  /** set by a generation: the shape asked of its answer, and the calls the answer made */
  responseFormat: ResponseFormatType | null = null;
  toolCalls: number | null = null;
  /** set by a door once its model is ready: the time to first token then leaves the load out */
  loadMs: number | null = null;

  constructor(private readonly start: TrackStart, private readonly sink: (record: AuditRecord) => void) {
    this.requestId = start.requestId ?? newRequestId();
    this.endpoint = start.endpoint;
    this.model = start.model ?? null;
    this.backendType = start.backendType ?? null;
    this.stream = start.stream ?? false;
  }

  firstToken(): void {
    this.firstTokenHr ??= performance.now();
  }

  tokens(prompt: number | null, completion: number | null = null): void {
    this.promptTokens = prompt;
    this.completionTokens = completion;
  }

  /** The tokens counted so far, prompt and answer together. */
  get totalTokens(): number {
    return (this.promptTokens ?? 0) + (this.completionTokens ?? 0);
  }

  /** Records the request once; later calls do nothing. */
  end(outcome: Outcome): AuditRecord | undefined {
    if (this.ended) return undefined;
    this.ended = true;
    const failed = outcome.status !== "success";
    const total = this.promptTokens === null && this.completionTokens === null ? null : this.totalTokens;
    const record: AuditRecord = {
      request_id: this.requestId,
      timestamp: this.startedAt,
      model: this.model,
      backend_type: this.backendType,
      endpoint: this.endpoint,
      duration_ms: round(performance.now() - this.startedHr),
      ttft_ms: this.firstTokenHr === undefined ? null : round(this.firstTokenHr - this.startedHr - (this.loadMs ?? 0)),
      status: outcome.status,
      status_code: outcome.statusCode ?? null,
      prompt_tokens: this.promptTokens,
      completion_tokens: this.completionTokens,
      total_tokens: total,
      error_type: failed ? outcome.errorType ?? outcome.status : null,
      error_message: failed && outcome.errorMessage ? outcome.errorMessage.slice(0, MAX_ERROR_MESSAGE) : null,
      stream: this.stream,
      client: this.start.client ?? null,
      tool_calls: this.toolCalls,
      response_format: this.responseFormat,
      load_ms: this.loadMs === null ? null : round(this.loadMs),
      instance,
    };
    this.sink(record);
    return record;
  }
}

export function track(start: TrackStart, sink: (record: AuditRecord) => void): Tracker {
  return new Tracker(start, sink);
}

const round = (ms: number) => Math.round(ms * 100) / 100;
