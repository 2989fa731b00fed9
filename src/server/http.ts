/**
 * The HTTP layer: request ids, routing, auth, CORS, body limits and JSON parsing, the
 * audit record of every request, and draining. Protocol adapters (openai, admin ...)
 * receive a parsed request context and never see a raw socket.
 *
 * It is also the boundary of fault isolation: whatever a request holds (method, path,
 * query, headers, body, timing) and whatever a handler throws, the request ends in one
 * answer (problem+json, 4xx when the request is at fault, 500 otherwise) and one audit
 * record, and the process goes on. Bytes that are not HTTP at all get a problem too.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { AsyncLocalStorage } from "node:async_hooks";
import { createHash, timingSafeEqual } from "node:crypto";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { InferenceCore } from "../core/index.js";
import type { ChatRequest, CompletionRequest, EmbeddingRequest, EmbeddingResult, GenerationEvent } from "../core/types.js";
import { newRequestId, track, type Outcome, type Tracker } from "../audit/track.js";
import type { AuditWriter } from "../audit/writer.js";
import type { AuditRecord } from "../audit/schema.js";
import type { ServerMetrics } from "./metrics.js";
import { KeyLimits } from "./key-limits.js";
import { HttpProblem, cancelledBy, problemBody, timeoutProblem, titleOf, toProblem } from "./problem.js";
import { recorded } from "./recorded.js";
import { BodyWriter, DEFAULT_STALL_TIMEOUT_MS, SseStream } from "./sse.js";

/** What a key may do: use the models, read the audit log, or everything (model control too). */
export type KeyScope = "inference" | "audit" | "admin";
export const KEY_SCOPES: readonly KeyScope[] = ["inference", "audit", "admin"];

export interface ApiKey {
  label: string;
  key: string;
  /** default: inference */
  scope?: KeyScope;
  /** requests per minute (a sliding window) */
  rpm?: number;
  /** requests running or queued at once */
  concurrency?: number;
  /** prompt and completion tokens per minute, counted as answers end */
  tpm?: number;
}

/** The key a request came with, as the routes see it: never the key itself. */
export interface Caller {
  label: string;
  scope: KeyScope;
}

export interface ServerOptions {
  core: InferenceCore;
  backend: string;
  writer?: AuditWriter;
  apiKeys: ApiKey[];
  corsOrigins: string[];
  /**
   * The Host names answered (besides loopback ones when `loopback`): a request for any
   * other gets 403 before routing, so a page that rebinds its own domain to this address
   * (DNS rebinding) reaches nothing. Empty and not `loopback`: any Host (behind a proxy).
   */
  allowedHosts?: string[];
  /** listening on a loopback address: only loopback Host names (and allowedHosts) are answered */
  loopback?: boolean;
  maxBodyBytes: number;
  requestTimeoutMs: number;
  /** a client must send its headers within this (slow or half-open connections get 408) */
  headersTimeoutMs?: number;
  /** and its whole request, body included, within this (default 60 s; a body trickled past it gets 408) */
  bodyTimeoutMs?: number;
  /** a streamed response whose reader takes nothing for this long is ended */
  stallTimeoutMs?: number;
  /** a 500's stack on stderr (MLXS_DEBUG) */
  debug?: boolean;
  /** --metrics: every request's record is counted there too */
  metrics?: ServerMetrics;
}

export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly requestId: string;
  url: URL;
  params: Record<string, string>;
  readonly options: ServerOptions;
  /** aborts when the client goes away, the request times out or the server stops waiting for it */
  readonly signal: AbortSignal;
  readonly timedOut: () => boolean;
  readonly clientGone: () => boolean;
  /** the drain stopped waiting for it (the server is shutting down): it ends as cancelled, answered 503 */
  readonly stopped: () => boolean;
  /** the API key's label and scope; null when no keys are configured */
  readonly caller: Caller | null;
  /** the audit record in the making (absent with --no-audit) */
  readonly tracker?: Tracker;
  /** a handler that answered 200 but failed later (mid-stream) says so here */
  outcome?: Outcome;
  /** the problem the request ended with, if any */
  problem?: HttpProblem;
  route?: Route;
  body?: unknown;
  json(status: number, body: unknown, headers?: Record<string, string>): void;
  /**
   * The core's work for this request, cancelled with it, and recorded as it goes: prompt and
   * completion tokens, the first token. Adapters call the core through these only, so that
   * no route can forget its record's figures.
   */
  chat(request: ChatRequest): AsyncGenerator<GenerationEvent>;
  complete(request: CompletionRequest): AsyncGenerator<GenerationEvent>;
  embed(request: EmbeddingRequest): Promise<EmbeddingResult>;
  countTokens(request: ChatRequest): Promise<number>;
  /** the response as a server-sent event stream (not yet started); the record says streamed */
  sse(): SseStream;
  /** the response body written in pieces, after the handler wrote the head */
  bodyWriter(): BodyWriter;
}

export type Handler = (ctx: RequestContext) => Promise<void>;

export interface Route {
  method: "GET" | "POST";
  /** `/v1/models/{id}` style */
  path: string;
  handler: Handler;
  /** POST routes read a JSON body first */
  body?: boolean;
  /** open without an API key (/health) */
  open?: boolean;
  /** the scope a key needs (default: inference); an admin key may do everything */
  scope?: KeyScope;
  /** an audit route an inference key may read with `?mine=true`: its own records only */
  mine?: boolean;
  /** false: no audit record when its handler answers (health checks and scrapes, sent every few seconds); its refusals are recorded */
  audited?: boolean;
  /** not bound by --request-timeout (a live stream that lasts as long as its reader) */
  longLived?: boolean;
  /** the error body of this route's protocol (default: problem+json with OpenAI's error member) */
  errorBody?: (problem: HttpProblem, requestId: string) => object;
}

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** the audit log's endpoint for a request that matched no route */
const UNKNOWN_ENDPOINT = "unknown";
/** once the drain timeout is over: how long cancelled requests get to end, and then their connections */
const DRAIN_GRACE_MS = 1_000;
/** the problem of a request the server stopped because it shuts down (see drain) */
const SHUTTING_DOWN = "shutting_down";

/** The answer to a request that came while the server drains. */
function drainingProblem(): HttpProblem {
  return new HttpProblem(503, "draining", "The server is shutting down.", { headers: { "Retry-After": "5", Connection: "close" } });
}

/** The answer to a request cancelled by a drain: the client may send it again, elsewhere or later. */
export function shutDownProblem(): HttpProblem {
  return new HttpProblem(503, SHUTTING_DOWN, "The server shut down before the request finished; send it again.", { headers: { "Retry-After": "5", Connection: "close" } });
}

const requestScope = new AsyncLocalStorage<string>();

/** The id of the request whose code is running now, if any: for the last-resort error handler. */
export function currentRequestId(): string | undefined {
  return requestScope.getStore();
}

export class MlxsServer {
  readonly server: Server;
  state: "loading" | "ready" | "draining" = "loading";
  private readonly compiled: { route: Route; pattern: RegExp; names: string[] }[];
  /** requests not yet answered and recorded */
  private readonly running = new Set<RequestContext>();
  private whenIdle?: () => void;
  /** aborted when a drain stops waiting: what still runs is cancelled (and answered 503) */
  private readonly stopping = new AbortController();
  /** each running request's context, by its response: for a connection error that strikes it */
  private readonly contexts = new WeakMap<ServerResponse, RequestContext>();
  private readonly keys: { label: string; scope: KeyScope; digest: Buffer }[];
  private readonly limits: KeyLimits;
  /**
   * Each open connection, with the bytes it had sent when its last request was whole and
   * answered, and that request: more bytes since are a request begun (see drain).
   */
  private readonly connections = new Map<Socket, { read: number; last?: IncomingMessage }>();

  constructor(readonly options: ServerOptions, routes: Route[]) {
    this.compiled = routes.map((route) => {
      const names: string[] = [];
      const source = route.path.split("/").map((segment) => {
        const param = /^\{(\w+)\}$/.exec(segment);
        if (!param) return segment.replace(/[.*+?^$()|[\]\\]/g, "\\$&");
        names.push(param[1]!);
        return "([^/]+)";
      }).join("/");
      return { route, pattern: new RegExp(`^${source}$`), names };
    });
    this.keys = options.apiKeys.map(({ label, key, scope = "inference" }) => ({ label, scope, digest: digest(key) }));
    this.limits = new KeyLimits(options.apiKeys);
    const headersTimeout = options.headersTimeoutMs ?? 10_000;
    this.server = createServer({
      // slow or idle clients: headers within 10 s, the whole request within 60 s, checked
      // often enough that a crowd of half-open connections does not linger (each is answered
      // 408 and recorded by clientError)
      headersTimeout,
      requestTimeout: Math.max(options.bodyTimeoutMs ?? 60_000, headersTimeout),
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: Math.min(1_000, headersTimeout),
      // checked inside the boundary, so that the refusal is a problem with a record
      requireHostHeader: false,
    }, (req, res) => this.accept(req, res));
    // an Expect other than 100-continue: refused inside the boundary (Node's own 417 is bare)
    this.server.on("checkExpectation", (req: IncomingMessage, res: ServerResponse) => this.accept(req, res, true));
    this.server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => this.clientError(error, socket));
    // CONNECT would otherwise have its connection dropped without a word
    this.server.on("connect", (_req: IncomingMessage, socket: Duplex) => this.refuseConnect(socket));
    this.server.on("connection", (socket: Socket) => {
      this.connections.set(socket, { read: 0 });
      socket.once("close", () => this.connections.delete(socket));
    });
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  private accept(req: IncomingMessage, res: ServerResponse, unmetExpectation = false): void {
    const socket = req.socket;
    const seen = this.connections.get(socket);
    if (seen) {
      seen.last = req;
      // what the connection had sent once this request was whole, and once it was answered
      const mark = () => { seen.read = socket.bytesRead; };
      req.once("end", mark);
      res.once("close", mark);
    }
    const requestId = requestIdOf(req);
    // everything the request sets off runs in its scope, so a last-resort handler can name it
    requestScope.run(requestId, () => void this.handle(req, res, requestId, unmetExpectation));
  }

  /**
   * Lets running requests finish for up to `timeoutMs` while every new request is answered
   * 503 (and recorded), then cancels what still runs (answered 503, recorded as cancelled),
   * then answers 503 (and records) the requests still arriving (headers not yet whole), then
   * stops listening and closes the connections still open (readers that never read).
   * Bounded whatever the handlers and the readers do: it returns within `timeoutMs` plus two
   * short graces. A request whose handler is still stuck then (a runner that does not answer)
   * has its answer and its outcome; its record comes when its handler ends, which closing the
   * core brings about: so the audit writer is closed after the core, once `settled()`.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.state = "draining";
    this.server.closeIdleConnections();
    await this.idle(timeoutMs);
    this.stopping.abort();
    await this.idle(DRAIN_GRACE_MS);
    for (const ctx of this.running) this.stopRunning(ctx);
    // a request whose bytes were still coming (its headers not yet whole) is one too: answered and recorded before its connection closes
    for (const [socket, { read, last }] of this.connections) {
      const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (socket.bytesRead > read && !inFlight && (last?.complete ?? true) && socket.writable) this.answerRaw(socket, drainingProblem());
    }
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await Promise.race([closed, delay(DRAIN_GRACE_MS)]);
  }

  /** Resolves once every request has ended and been recorded, or after `ms`. */
  settled(ms: number): Promise<void> {
    return this.idle(ms);
  }

  /** A request the drain gave up on: answered 503 if nothing was sent yet, recorded as cancelled by the shutdown. */
  private stopRunning(ctx: RequestContext): void {
    const problem = shutDownProblem();
    const { res } = ctx;
    ctx.outcome ??= { status: "cancelled", statusCode: res.headersSent ? res.statusCode : 503, errorType: problem.code, errorMessage: problem.message };
    if (!res.writableEnded) this.fail(ctx, problem);
  }

  /** Resolves when no request is running, or after `ms`. */
  private idle(ms: number): Promise<void> {
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() { clearTimeout(timer); resolve(); }
      this.whenIdle = done;
    });
  }

  /** The route for this method and path; else the methods the path allows, and the template it matched. */
  private match(method: string, path: string) {
    let allowed: string[] = [];
    let template: string | undefined;
    for (const { route, pattern, names } of this.compiled) {
      const m = pattern.exec(path);
      if (!m) continue;
      if (route.method !== method) {
        allowed.push(route.method);
        template ??= route.path;
        continue;
      }
      return { route, params: () => paramsOf(names, m), allowed, template: route.path };
    }
    allowed = [...new Set(allowed)];
    return { route: undefined, params: () => ({}), allowed, template };
  }

  private async handle(req: IncomingMessage, res: ServerResponse, requestId: string, unmetExpectation: boolean): Promise<void> {
    const method = req.method ?? "GET";
    const clientGone = new AbortController();
    // a timer cleared when the response closes: AbortSignal.timeout would keep every
    // request's signal alive for the whole timeout, long after it was answered
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.options.requestTimeoutMs);
    timer.unref();
    const signal = AbortSignal.any([clientGone.signal, timeout.signal, this.stopping.signal]);
    const auth = this.authenticate(req);
    // the endpoint as the audit log names it: the route's template, never the raw path
    const tracker = this.recording()
      ? track({ endpoint: UNKNOWN_ENDPOINT, requestId, client: auth.label, backendType: this.options.backend }, this.sink)
      : undefined;
    const stallTimeoutMs = this.options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;

    const ctx: RequestContext = {
      req, res, requestId, url: new URL("http://mlxs.invalid/"), params: {}, options: this.options, signal, tracker,
      caller: auth.ok && auth.label !== null ? { label: auth.label, scope: auth.scope! } : null,
      timedOut: () => timeout.signal.aborted,
      clientGone: () => clientGone.signal.aborted,
      stopped: () => this.stopping.signal.aborted,
      json: (status, body, headers = {}) => {
        const text = JSON.stringify(body);
        res.writeHead(status, { ...headers, "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
        res.end(method === "HEAD" ? undefined : text);
      },
      chat: (request) => recorded(tracker, request, this.options.core.chat(request, signal)),
      complete: (request) => recorded(tracker, request, this.options.core.complete(request, signal)),
      embed: async (request) => {
        const result = await this.options.core.embed(request, signal);
        tracker?.tokens(result.usage.promptTokens, 0);
        if (tracker) tracker.loadMs = result.loadMs ?? 0;
        return result;
      },
      countTokens: async (request) => {
        const count = await this.options.core.countTokens(request);
        tracker?.tokens(count, 0);
        return count;
      },
      sse: () => {
        if (tracker) tracker.stream = true;
        return new SseStream(res, { signal, stallTimeoutMs });
      },
      bodyWriter: () => new BodyWriter(res, { signal, stallTimeoutMs }),
    };
    this.running.add(ctx);
    this.contexts.set(res, ctx);
    /** the key's place under its limits, given back when the handler is done */
    let release: (() => void) | undefined;
    /** the route's handler answered (an unaudited route's refusals are still recorded) */
    let routeAnswered = false;
    let handled!: () => void;
    const handlerDone = new Promise<void>((resolve) => { handled = resolve; });
    res.once("close", () => {
      clearTimeout(timer);
      if (!res.writableFinished) clientGone.abort();
      // the record waits for the handler: a cancelled generation still reports its tokens
      void handlerDone.then(() => {
        if (ctx.route?.audited !== false || !routeAnswered) tracker?.end(ctx.outcome ?? outcomeOf(res, clientGone.signal.aborted, ctx.problem));
        this.running.delete(ctx);
        if (this.running.size === 0) this.whenIdle?.();
      });
    });

    try {
      // a browser must never read an answer as anything but what it says it is
      res.setHeader("X-Content-Type-Options", "nosniff");
      res.setHeader("X-Request-ID", requestId);
      // Anthropic's clients read it from here
      res.setHeader("Request-Id", requestId);
      ctx.url = targetOf(req.url);
      const { route, params, allowed, template } = this.match(method === "HEAD" ? "GET" : method, ctx.url.pathname);
      ctx.route = route;
      if (tracker && template) tracker.endpoint = template;
      // decoded once the route is known: a bad escape is then recorded against that route
      ctx.params = params();
      // HTTP/1.1 requires a Host (Node's own refusal of its absence would not be a problem+json)
      if (req.httpVersion === "1.1" && req.headers.host === undefined) throw new HttpProblem(400, "missing_host", "An HTTP/1.1 request must carry a Host header.");
      if (unmetExpectation) throw new HttpProblem(417, "expectation_failed", "The only Expect this server meets is 100-continue.");
      // before any route, /health included: a page that rebinds its domain to this address
      // sends its own name as the Host, and a page in a browser always sends its Origin
      if (!this.hostAllowed(req.headers.host)) throw new HttpProblem(403, "host_not_allowed", "This server does not answer for that Host name; an operator can allow it with --allowed-host.");
      const origin = req.headers.origin;
      if (origin !== undefined && method !== "OPTIONS" && !this.options.corsOrigins.includes(origin)) {
        throw new HttpProblem(403, "origin_not_allowed", "Requests from web pages of that origin are refused; an operator can allow it with --cors-origin.");
      }
      if (route?.path.startsWith("/v1/audit/")) res.setHeader("Cache-Control", "no-store");
      if (route?.longLived) clearTimeout(timer);
      this.cors(req, res);
      if (method === "OPTIONS") {
        res.writeHead(204, { Allow: allowed.length ? allowed.join(", ") : "GET, POST" });
        res.end();
        return;
      }
      if (this.state === "draining") throw drainingProblem();
      if (!route) {
        if (allowed.length) throw new HttpProblem(405, "method_not_allowed", `Use ${allowed.join(" or ")} on this path.`, { headers: { Allow: allowed.join(", ") } });
        throw ctx.url.pathname === "/v1" || ctx.url.pathname.startsWith("/v1/")
          ? new HttpProblem(404, "not_found", "There is no such route: nothing of this API answers this path with this method (GET /v1/models lists the models).")
          : new HttpProblem(404, "not_found", "There is no such route. The API lives under /v1 (see /v1/models).");
      }
      if (!route.open && !auth.ok) {
        throw new HttpProblem(401, "invalid_api_key", "A valid API key is required: send Authorization: Bearer KEY or x-api-key: KEY.");
      }
      if (!route.open && ctx.caller && !permits(ctx.caller, route, ctx.url)) {
        throw new HttpProblem(403, "insufficient_scope", route.mine
          ? `This key's scope is ${ctx.caller.scope}: it may read its own records only, with ?mine=true.`
          : `This key's scope is ${ctx.caller.scope}; this route needs ${route.scope ?? "inference"} (or admin).`);
      }
      if (!route.open && ctx.caller) release = this.limits.admit(ctx.caller.label);
      if (route.body) ctx.body = await this.readJson(req);
      routeAnswered = true;
      await route.handler(ctx);
    } catch (error) {
      this.fail(ctx, error);
    } finally {
      // charged here, before the client can have read the answer's end, so that its next
      // request already meets the key's tokens-a-minute limit (the record comes on close)
      if (release && ctx.caller) this.limits.used(ctx.caller.label, tracker?.totalTokens ?? 0);
      release?.();
      handled();
    }
  }

  /** The answer to a request that failed, and what its record will say. Never throws. */
  private fail(ctx: RequestContext, error: unknown): void {
    let problem = toProblem(error);
    // cancelled by the drain, not by its client: the client is told, and may send it again
    if (problem.status === 499 && ctx.stopped() && !ctx.clientGone()) problem = shutDownProblem();
    // cancelled by the request timeout (while it waited for a sequence, or for a runner that did not answer): a timeout, not a client that left
    else if (problem.status === 499 && ctx.timedOut() && !ctx.clientGone()) problem = timeoutProblem();
    if (problem.status === 500 && this.options.debug) process.stderr.write(`mlxs: ${(error as Error)?.stack ?? String(error)}\n`);
    ctx.problem = problem;
    const { res } = ctx;
    try {
      if (res.headersSent || res.destroyed) {
        // the status line already said 200: the record must still say the request failed
        if (!ctx.clientGone()) ctx.outcome ??= { status: stoppedBy(problem) ? "cancelled" : "error", statusCode: res.statusCode, errorType: problem.code, errorMessage: problem.message };
        // an event stream ends cleanly (its reader sees no closing event); any other body cut
        // short must not look whole to its reader
        if (!res.destroyed) {
          if (String(res.getHeader("Content-Type") ?? "").startsWith("text/event-stream")) res.end();
          else res.destroy();
        }
        return;
      }
      const text = JSON.stringify((ctx.route?.errorBody ?? problemBody)(problem, ctx.requestId));
      res.writeHead(problem.status, {
        ...problem.options.headers,
        "Content-Type": "application/problem+json",
        "Content-Length": Buffer.byteLength(text),
        "Cache-Control": "no-store",
      });
      res.end(text);
      // an unread body (short of a too large one, which is not read on) is drained so the
      // connection can serve the next request
      if (!ctx.req.complete && problem.status !== 413) ctx.req.resume();
    } catch {
      // the answer itself could not be written: the connection is all that is left to end
      res.destroy();
    }
  }

  /**
   * Bytes that are not HTTP (a bad request line, a header too large, headers that never
   * came, a body framed in a way this server does not read, a body that never came): answered
   * with a problem where the connection allows it, and recorded.
   */
  private clientError(error: NodeJS.ErrnoException, socket: Duplex): void {
    // the peer is gone: nothing more can be said
    if (error.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const problem = connectionProblem(error);
    const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage;
    if (inFlight) {
      this.failInFlight(inFlight, problem, socket);
      return;
    }
    // node:http only times out a connection that began a request: slow headers are one
    this.answerRaw(socket, problem);
  }

  /** Answers a request that never reached the router (written on its connection, which then closes), and records it. */
  private answerRaw(socket: Duplex, problem: HttpProblem): void {
    const { status, code, message } = problem;
    const requestId = newRequestId();
    const text = JSON.stringify(problemBody(problem, requestId));
    const extra = Object.entries(problem.options.headers ?? {}).filter(([name]) => name.toLowerCase() !== "connection").map(([name, value]) => `${name}: ${value}\r\n`).join("");
    socket.end(`HTTP/1.1 ${status} ${titleOf(status)}\r\n${extra}Content-Type: application/problem+json\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nX-Request-ID: ${requestId}\r\nConnection: close\r\n\r\n${text}`);
    this.recordRefusal(requestId, status, code, message);
  }

  /**
   * The connection of a routed request broke after its headers (a Transfer-Encoding it
   * cannot read, a body past the body timeout): the request is answered with the problem
   * unless it already was, and the connection, which cannot be read on, ends after the answer.
   */
  private failInFlight(res: ServerResponse, problem: HttpProblem, socket: Duplex): void {
    const ctx = this.contexts.get(res);
    if (ctx && !res.headersSent && !res.destroyed) {
      // what the handler does next (its body read fails) cannot change what the request was
      ctx.outcome ??= { status: "error", statusCode: problem.status, errorType: problem.code, errorMessage: problem.message };
      this.fail(ctx, problem);
    }
    // the handler may still be reading the body, which will never come whole: it is told so
    const end = () => { socket.destroy(); res.req.destroy(); };
    if (res.writableFinished || res.destroyed) end();
    else res.once("close", end);
  }

  private refuseConnect(socket: Duplex): void {
    const requestId = newRequestId();
    const text = JSON.stringify(problemBody(new HttpProblem(405, "method_not_allowed", "This server is not a proxy: use GET or POST."), requestId));
    socket.on("error", () => socket.destroy());
    socket.end(`HTTP/1.1 405 ${titleOf(405)}\r\nAllow: GET, POST\r\nContent-Type: application/problem+json\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nX-Request-ID: ${requestId}\r\nConnection: close\r\n\r\n${text}`);
    this.recordRefusal(requestId, 405, "method_not_allowed", "This server is not a proxy: use GET or POST.");
  }

  /** The record of a request that never reached a route. */
  private recordRefusal(requestId: string, statusCode: number, errorType: string, errorMessage: string): void {
    if (!this.recording()) return;
    track({ endpoint: UNKNOWN_ENDPOINT, requestId, backendType: this.options.backend }, this.sink)
      .end({ status: "error", statusCode, errorType, errorMessage });
  }

  /** Whether requests are tracked at all: for the audit log, the metrics, or both. */
  private recording(): boolean {
    return this.options.writer !== undefined || this.options.metrics !== undefined || this.limits.countsTokens;
  }

  /** Where each request's record goes once it ends. */
  private readonly sink = (record: AuditRecord): void => {
    this.options.writer?.record(record);
    this.options.metrics?.observe(record);
  };

  /** Whether the Host header names this server (see ServerOptions.allowedHosts). */
  private hostAllowed(header: string | undefined): boolean {
    // HTTP/1.0 may leave it out; no browser does
    if (header === undefined) return true;
    const name = hostnameOf(header);
    const allowed = this.options.allowedHosts ?? [];
    if (allowed.includes(name)) return true;
    return this.options.loopback ? isLoopbackName(name) : allowed.length === 0;
  }

  private authenticate(req: IncomingMessage): { ok: boolean; label: string | null; scope?: KeyScope } {
    if (this.keys.length === 0) return { ok: true, label: null };
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const header = req.headers["x-api-key"];
    const offered = bearer ?? (typeof header === "string" ? header : undefined);
    if (!offered) return { ok: false, label: null };
    const offeredDigest = digest(offered.trim());
    let found: { label: string; scope: KeyScope } | undefined;
    // compare with every key, in constant time each, so timing tells nothing
    for (const key of this.keys) if (timingSafeEqual(key.digest, offeredDigest)) found = key;
    return { ok: found !== undefined, label: found?.label ?? null, scope: found?.scope };
  }

  private cors(req: IncomingMessage, res: ServerResponse): void {
    const origin = req.headers.origin;
    if (!origin || !this.options.corsOrigins.includes(origin)) return;
    res.setHeader("Access-Control-Allow-Origin", origin);
    res.setHeader("Vary", "Origin");
    res.setHeader("Access-Control-Expose-Headers", "X-Request-ID, Request-Id, Retry-After");
    if (req.method === "OPTIONS") {
      res.setHeader("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.setHeader("Access-Control-Allow-Headers", "Authorization, Content-Type, X-API-Key, X-Request-ID, Anthropic-Version, Anthropic-Beta");
      res.setHeader("Access-Control-Max-Age", "600");
    }
  }

  /** Reads a JSON body: 415 for another content type, 413 past the limit (without reading on), 400 for bad JSON. */
  private async readJson(req: IncomingMessage): Promise<unknown> {
    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    if (type !== "application/json" && !type.endsWith("+json")) {
      throw new HttpProblem(415, "unsupported_media_type", "Send the request body as JSON, with Content-Type: application/json.");
    }
    const limit = this.options.maxBodyBytes;
    const tooLarge = () => new HttpProblem(413, "request_too_large", `The request body is larger than the limit of ${limit} bytes.`, { headers: { Connection: "close" } });
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) throw tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > limit) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    try {
      return JSON.parse(text);
    } catch {
      // JSON.parse's own message quotes the input: it never goes out
      throw new HttpProblem(400, "invalid_json", "The request body is not valid JSON.");
    }
  }
}

/** The problem of a connection that node:http's parser or its timers gave up on. */
function connectionProblem(error: NodeJS.ErrnoException): HttpProblem {
  const close = { headers: { Connection: "close" } };
  switch (error.code) {
    case "HPE_HEADER_OVERFLOW": return new HttpProblem(431, "headers_too_large", "The request headers are too large.", close);
    case "ERR_HTTP_REQUEST_TIMEOUT": return new HttpProblem(408, "request_timeout", "The request did not arrive in time.", close);
    // a 400, not RFC 9112's 501: the request is at fault, and a 5xx would say the server was
    case "HPE_INVALID_TRANSFER_ENCODING": return new HttpProblem(400, "unsupported_transfer_encoding", "The only Transfer-Encoding this server reads is chunked.", close);
    default: return new HttpProblem(400, "bad_request", "The request is not valid HTTP.", close);
  }
}

/** The client's X-Request-ID when it is safe to echo and store, else a new one. */
function requestIdOf(req: IncomingMessage): string {
  const sent = req.headers["x-request-id"];
  return typeof sent === "string" && SAFE_REQUEST_ID.test(sent) ? sent : newRequestId();
}

/** The request target as a URL: origin-form (`/v1/models?x`) or absolute-form (`http://host/v1/models`). */
function targetOf(raw: string | undefined): URL {
  const target = raw ?? "/";
  try {
    // concatenated rather than resolved: `//host/path` is a path here, not another host
    return target.startsWith("/") ? new URL(`http://mlxs.invalid${target}`) : new URL(target);
  } catch {
    throw new HttpProblem(400, "invalid_path", "The request target is not a valid path.");
  }
}

function paramsOf(names: string[], match: RegExpExecArray): Record<string, string> {
  try {
    return Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(match[i + 1]!)]));
  } catch {
    throw new HttpProblem(400, "invalid_path", "The request path holds a malformed percent-escape.");
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function outcomeOf(res: ServerResponse, gone: boolean, problem?: HttpProblem): Outcome {
  if (gone) return { status: "cancelled", statusCode: 499, errorType: "cancelled" };
  const status = res.statusCode;
  if (status < 400) return { status: "success", statusCode: status };
  if (status === 504) return { status: "timeout", statusCode: status, errorType: "timeout", errorMessage: problem?.message };
  if (problem && stoppedBy(problem)) return { status: "cancelled", statusCode: status, errorType: problem.code, errorMessage: problem.message };
  return { status: "error", statusCode: status, errorType: problem?.code ?? "http_error", errorMessage: problem?.message };
}

/** Whether the request was ended by the server's operator (a forced unload, a shutdown): cancelled, not an error. */
export function stoppedBy(problem: HttpProblem): boolean {
  return cancelledBy(problem) || problem.code === SHUTTING_DOWN;
}

/** The host name of a Host header, lower-cased, without its port or a final dot: `[::1]:80` is `::1`. */
export function hostnameOf(header: string): string {
  const host = header.trim().toLowerCase();
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(host);
  if (bracketed) return bracketed[1]!;
  return host.replace(/:\d*$/, "").replace(/\.$/, "");
}

/** localhost, 127.0.0.0/8 and ::1: the names a page on another domain cannot claim. */
function isLoopbackName(name: string): boolean {
  return name === "localhost" || name === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** Whether a key of `caller`'s scope may use `route` (an inference key reads audit routes with ?mine=true only). */
function permits(caller: Caller, route: Route, url: URL): boolean {
  const needed = route.scope ?? "inference";
  if (caller.scope === "admin" || caller.scope === needed) return true;
  return route.mine === true && caller.scope === "inference" && url.searchParams.get("mine") === "true";
}
