/**
 * The HTTP layer: request ids, routing, auth, CORS, body limits and JSON parsing, the
 * audit record of every /v1 request, and draining. Protocol adapters (openai, admin ...)
 * receive a parsed request context and never see a raw socket.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash, timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { InferenceCore } from "../core/index.js";
import { newRequestId, track, type Outcome, type Tracker } from "../audit/track.js";
import type { AuditWriter } from "../audit/writer.js";
import { HttpProblem, problemBody, toProblem } from "./problem.js";

export interface ApiKey {
  label: string;
  key: string;
}

export interface ServerOptions {
  core: InferenceCore;
  backend: string;
  writer?: AuditWriter;
  /** the audit database file, for /v1/audit/* */
  auditDb: string;
  apiKeys: ApiKey[];
  corsOrigins: string[];
  maxBodyBytes: number;
  requestTimeoutMs: number;
  /** a client must send its headers within this (slow or half-open connections are closed) */
  headersTimeoutMs?: number;
}

export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly requestId: string;
  readonly url: URL;
  readonly params: Record<string, string>;
  readonly options: ServerOptions;
  /** aborts when the client goes away or the request times out */
  readonly signal: AbortSignal;
  readonly timedOut: () => boolean;
  readonly clientGone: () => boolean;
  /** the audit record in the making, for /v1 routes */
  readonly tracker?: Tracker;
  /** a handler that answered 200 but failed later (mid-stream) says so here */
  outcome?: Outcome;
  /** the problem the request ended with, if any */
  problem?: HttpProblem;
  readonly route?: Route;
  body?: unknown;
  json(status: number, body: unknown, headers?: Record<string, string>): void;
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
  /** the error body of this route's protocol (default: problem+json with OpenAI's error member) */
  errorBody?: (problem: HttpProblem, requestId: string) => object;
}

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export class MlxsServer {
  readonly server: Server;
  state: "loading" | "ready" | "draining" = "loading";
  private readonly compiled: { route: Route; pattern: RegExp; names: string[] }[];
  private readonly running = new Set<AbortController>();
  private readonly keys: { label: string; digest: Buffer }[];

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
    this.keys = options.apiKeys.map(({ label, key }) => ({ label, digest: digest(key) }));
    const headersTimeout = options.headersTimeoutMs ?? 10_000;
    this.server = createServer({
      // slow or idle clients: headers within 10 s, the whole request within 60 s, checked
      // often enough that a crowd of half-open connections does not linger
      headersTimeout,
      requestTimeout: Math.max(60_000, headersTimeout),
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: Math.min(1_000, headersTimeout),
    }, (req, res) => { void this.handle(req, res); });
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

  /** Stops accepting, lets running requests finish for up to `timeoutMs`, then cancels them. */
  async drain(timeoutMs: number): Promise<void> {
    this.state = "draining";
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const deadline = Date.now() + timeoutMs;
    while (this.running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    for (const controller of this.running) controller.abort();
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 10));
    this.server.closeAllConnections();
    await closed;
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
      const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1]!)]));
      return { route, params, allowed, template: route.path };
    }
    allowed = [...new Set(allowed)];
    return { route: undefined, params: {}, allowed, template };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const sent = req.headers["x-request-id"];
    const requestId = typeof sent === "string" && SAFE_REQUEST_ID.test(sent) ? sent : newRequestId();
    res.setHeader("X-Request-ID", requestId);
    // Anthropic's clients read it from here
    res.setHeader("Request-Id", requestId);
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://mlxs.invalid");
    } catch {
      url = new URL("http://mlxs.invalid/");
    }
    const method = req.method ?? "GET";
    const { route, params, allowed, template } = this.match(method === "HEAD" ? "GET" : method, url.pathname);
    const isApi = url.pathname.startsWith("/v1/") || url.pathname === "/v1";

    const clientGone = new AbortController();
    // a timer cleared when the response closes: AbortSignal.timeout would keep every
    // request's signal alive for the whole timeout, long after it was answered
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.options.requestTimeoutMs);
    timer.unref();
    const signal = AbortSignal.any([clientGone.signal, timeout.signal]);
    this.running.add(clientGone);
    const auth = this.authenticate(req);
    // the endpoint as the audit log names it: the route, never the raw path
    const tracker = isApi && this.options.writer
      ? track({ endpoint: template ?? "unknown", requestId, client: auth.label, backendType: this.options.backend },
        (record) => this.options.writer!.record(record))
      : undefined;

    const ctx: RequestContext = {
      req, res, requestId, url, params, options: this.options, signal, tracker, route,
      timedOut: () => timeout.signal.aborted,
      clientGone: () => clientGone.signal.aborted,
      json: (status, body, headers = {}) => {
        const text = JSON.stringify(body);
        res.writeHead(status, { ...headers, "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
        res.end(method === "HEAD" ? undefined : text);
      },
    };
    let handled!: () => void;
    const handlerDone = new Promise<void>((resolve) => { handled = resolve; });
    res.once("close", () => {
      clearTimeout(timer);
      if (!res.writableFinished) clientGone.abort();
      // the record waits for the handler: a cancelled generation still reports its tokens
      void handlerDone.then(() => {
        this.running.delete(clientGone);
        tracker?.end(ctx.outcome ?? outcomeOf(res, clientGone.signal.aborted, ctx.problem));
      });
    });

    try {
      this.cors(req, res);
      if (method === "OPTIONS") {
        res.writeHead(204, { Allow: allowed.length ? allowed.join(", ") : "GET, POST" });
        res.end();
        return;
      }
      if (this.state === "draining") throw new HttpProblem(503, "draining", "The server is shutting down.", { headers: { "Retry-After": "5", Connection: "close" } });
      if (!route) {
        if (allowed.length) throw new HttpProblem(405, "method_not_allowed", `Use ${allowed.join(" or ")} on this path.`, { headers: { Allow: allowed.join(", ") } });
        throw new HttpProblem(404, "not_found", "There is no such route. The API lives under /v1 (see /v1/models).");
      }
      if (!route.open && !auth.ok) {
        throw new HttpProblem(401, "invalid_api_key", "A valid API key is required: send Authorization: Bearer KEY or x-api-key: KEY.");
      }
      if (route.body) ctx.body = await this.readJson(req);
      await route.handler(ctx);
    } catch (error) {
      this.fail(ctx, error);
    } finally {
      handled();
    }
  }

  private fail(ctx: RequestContext, error: unknown): void {
    const problem = toProblem(error);
    if (problem.status === 500 && process.env.MLXS_DEBUG) process.stderr.write(`mlxs: ${(error as Error)?.stack ?? String(error)}\n`);
    ctx.problem = problem;
    const { res } = ctx;
    if (res.headersSent || res.destroyed) {
      // the status line already said 200: the record must still say the request failed
      if (!ctx.clientGone()) ctx.outcome ??= { status: "error", statusCode: res.statusCode, errorType: problem.code, errorMessage: problem.message };
      if (!res.destroyed) res.end();
      return;
    }
    const text = JSON.stringify((ctx.route?.errorBody ?? problemBody)(problem, ctx.requestId));
    res.writeHead(problem.status, {
      ...problem.options.headers,
      "Content-Type": "application/problem+json",
      "Content-Length": Buffer.byteLength(text),
    });
    res.end(text);
    // an unread body (short of a too large one, which is not read on) is drained so the
    // connection can serve the next request
    if (!ctx.req.complete && problem.status !== 413) ctx.req.resume();
  }

  private authenticate(req: IncomingMessage): { ok: boolean; label: string | null } {
    if (this.keys.length === 0) return { ok: true, label: null };
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const header = req.headers["x-api-key"];
    const offered = bearer ?? (typeof header === "string" ? header : undefined);
    if (!offered) return { ok: false, label: null };
    const offeredDigest = digest(offered.trim());
    let found: string | null = null;
    // compare with every key, in constant time each, so timing tells nothing
    for (const key of this.keys) if (timingSafeEqual(key.digest, offeredDigest)) found = key.label;
    return { ok: found !== null, label: found };
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

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

function outcomeOf(res: ServerResponse, gone: boolean, problem?: HttpProblem): Outcome {
  if (gone) return { status: "cancelled", statusCode: 499, errorType: "cancelled" };
  const status = res.statusCode;
  if (status < 400) return { status: "success", statusCode: status };
  if (status === 504) return { status: "timeout", statusCode: status, errorType: "timeout", errorMessage: problem?.message };
  return { status: "error", statusCode: status, errorType: problem?.code ?? "http_error", errorMessage: problem?.message };
}
