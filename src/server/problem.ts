/**
 * Every error the server answers: an RFC 7807 problem+json body that also carries the
 * `error` member OpenAI clients read (and, for the Anthropic routes, Anthropic's envelope).
 * A problem's text comes from mlxs, never from the request.
 */
import { CoreError, type ErrorKind } from "../core/types.js";
import { wireName } from "../core/sampling.js";

export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    /** machine-readable, e.g. `model_not_found`; also the audit record's error type */
    readonly code: string,
    message: string,
    readonly options: { param?: string; headers?: Record<string, string>; type?: string } = {},
  ) {
    super(message);
    this.name = "HttpProblem";
  }
}

const TITLES: Record<number, string> = {
  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
  413: "Content Too Large", 415: "Unsupported Media Type", 417: "Expectation Failed", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
  499: "Client Closed Request", 500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout",
};

/** The reason phrase of a status. */
export const titleOf = (status: number): string => TITLES[status] ?? "Error";

/** OpenAI's error `type` for a status. */
function openAiType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  if (status >= 500) return "api_error";
  return "invalid_request_error";
}

const KIND_STATUS: Record<ErrorKind, [number, string]> = {
  invalid_request: [400, "invalid_request"],
  not_found: [404, "not_found"],
  // the sequence queue or the load queue is full: busy, try again or elsewhere (a load balancer reads 503 so); a key's own limits are 429 (key-limits.ts)
  overloaded: [503, "overloaded"],
  unavailable: [503, "model_unavailable"],
  unloaded: [503, "model_unloaded"],
  timeout: [504, "timeout"],
  cancelled: [499, "cancelled"],
  internal: [500, "internal_error"],
};


/** A model that is not served here (or not at all). */
export function modelNotFound(): HttpProblem {
  return new HttpProblem(404, "model_not_found", "The model does not exist or is not served here; GET /v1/models lists the served models.", { param: "model" });
}

/** The problem of a generation that outlived the request timeout. */
export function timeoutProblem(): HttpProblem {
  return new HttpProblem(504, "timeout", "The generation took longer than the request timeout.");
}

/** The problem for anything a handler threw; unexpected errors become a bare 500. */
export function toProblem(error: unknown): HttpProblem {
  if (error instanceof HttpProblem) return error;
  if (error instanceof CoreError) {
    const [status, code] = KIND_STATUS[error.kind];
    if (error.kind === "not_found" && error.param === "model") return modelNotFound();
    const headers = error.kind === "overloaded" ? { "Retry-After": String(error.retryAfterS ?? 1) } : error.kind === "unavailable" && error.retryAfterS ? { "Retry-After": String(error.retryAfterS) } : undefined;
    const param = error.param ? wireName(error.param) : undefined;
    // the core names fields in camelCase; the wire in snake_case
    const message = error.kind === "internal" ? "The server could not complete the request."
      : error.param && param ? error.message.replace(error.param, param) : error.message;
    return new HttpProblem(status, code, message, { param, headers });
  }
  return new HttpProblem(500, "internal_error", "The server could not complete the request.");
}

export function problemBody(problem: HttpProblem, requestId: string) {
  const { status, code, message } = problem;
  return {
    type: `urn:mlxs:problem:${code}`,
    title: titleOf(status),
    status,
    detail: message,
    instance: `urn:mlxs:request:${requestId}`,
    request_id: requestId,
    code,
    error: { message, type: problem.options.type ?? openAiType(status), code, param: problem.options.param ?? null },
  };
}

/** A request ended by the server's operator (its model unloaded by force): recorded as cancelled, not as an error. */
export function cancelledBy(problem: HttpProblem): boolean {
  return problem.code === "model_unloaded";
}
