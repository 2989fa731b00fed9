/**
 * GET /metrics (`--metrics`): Prometheus's text format, through prom-client, with
 * OpenTelemetry's GenAI semantic conventions in Prometheus form.
 *
 * Every figure is taken from the request's audit record as it ends (one place for every
 * route, so the log and the metrics never disagree), and the daemon's gauges are read at
 * scrape time. Label values come from closed sets only: the served models' names (any other
 * name a client sends counts as "unknown"), the route templates, the audit statuses. No
 * client can mint a series or put its text into a label.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { AuditRecord } from "../audit/schema.js";
import type { AuditWriter } from "../audit/writer.js";
import type { InferenceCore } from "../core/index.js";
import type { Route } from "./http.js";

/** gen_ai.operation.name of each inference route */
const OPERATIONS: Readonly<Record<string, string>> = {
  "/v1/chat/completions": "chat",
  "/v1/messages": "chat",
  "/v1/responses": "chat",
  "/v1/completions": "text_completion",
  "/v1/embeddings": "embeddings",
};
const UNKNOWN = "unknown";
const GEN_AI_LABELS = ["gen_ai_operation_name", "gen_ai_request_model", "http_route", "status"] as const;

// the buckets OpenTelemetry's GenAI conventions advise for each
const DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
const TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5];
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
const WRITE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly duration: Histogram<(typeof GEN_AI_LABELS)[number]>;
  private readonly ttft: Histogram<(typeof GEN_AI_LABELS)[number]>;
  private readonly tpot: Histogram<(typeof GEN_AI_LABELS)[number]>;
  private readonly tokens: Histogram<(typeof GEN_AI_LABELS)[number] | "gen_ai_token_type">;
  private readonly requests: Counter<"http_route" | "status">;
  /** the audit writer's flushes, in seconds (observed by the writer) */
  readonly auditWrite: Histogram;

  constructor(core: InferenceCore, writer: AuditWriter | undefined) {
    const registers = [this.registry];
    const labelNames = GEN_AI_LABELS;
    this.duration = new Histogram({ name: "gen_ai_server_request_duration_seconds", help: "Time from a request's arrival to its last byte, per GenAI operation.", labelNames, buckets: DURATION_BUCKETS, registers });
    this.ttft = new Histogram({ name: "gen_ai_server_time_to_first_token_seconds", help: "Time to the first generated token, once the model was ready.", labelNames, buckets: TTFT_BUCKETS, registers });
    this.tpot = new Histogram({ name: "gen_ai_server_time_per_output_token_seconds", help: "Time per generated token after the first.", labelNames, buckets: TPOT_BUCKETS, registers });
    this.tokens = new Histogram({ name: "gen_ai_client_token_usage", help: "Tokens per request, input (prompt) and output (completion).", labelNames: [...labelNames, "gen_ai_token_type"], buckets: TOKEN_BUCKETS, registers });
    this.requests = new Counter({ name: "mlxs_requests_total", help: "Requests answered, by route and outcome (answered health checks and scrapes excepted).", labelNames: ["http_route", "status"], registers });
    this.auditWrite = new Histogram({ name: "mlxs_audit_write_seconds", help: "Time of each write of a batch of audit records.", buckets: WRITE_BUCKETS, registers });
    const loaded = () => core.loadedModels();
    new Gauge({ name: "mlxs_queue_depth", help: "Requests waiting for a model or a sequence.", registers, collect() { this.set(loaded().reduce((sum, m) => sum + m.queued, 0)); } });
    new Gauge({ name: "mlxs_sequences_busy", help: "Sequences generating now, over all loaded models.", registers, collect() { this.set(loaded().reduce((sum, m) => sum + m.running, 0)); } });
    new Gauge({ name: "mlxs_models_loaded", help: "Models in memory.", registers, collect() { this.set(loaded().filter((m) => m.state === "loaded").length); } });
    new Gauge({ name: "mlxs_audit_pending", help: "Audit records waiting to be written.", registers, collect() { this.set(writer?.stats.pending ?? 0); } });
    // the writer's own running totals, counted as they grow
    const writerTotal = (name: string, help: string, total: () => number) => {
      let seen = 0;
      new Counter({
        name, help, registers,
        collect() {
          const now = total();
          if (now > seen) this.inc(now - seen);
          seen = now;
        },
      });
    };
    writerTotal("mlxs_audit_written_total", "Audit records the store holds, as it counted them.", () => writer?.stats.written ?? 0);
    writerTotal("mlxs_audit_dropped_total", "Audit records dropped because they could not be written.", () => writer?.stats.dropped ?? 0);
    collectDefaultMetrics({ register: this.registry });
    // gauges that prom-client names like counters: `promtool check metrics` refuses them
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
    if (writer) writer.onWrite = (seconds) => this.auditWrite.observe(seconds);
    this.served = (name) => core.has(name);
  }

  private readonly served: (name: string) => boolean;

  /** Counts a request from its audit record. */
  observe(record: AuditRecord): void {
    this.requests.inc({ http_route: record.endpoint, status: record.status });
    const operation = OPERATIONS[record.endpoint];
    if (!operation) return;
    const labels = {
      gen_ai_operation_name: operation,
      gen_ai_request_model: record.model !== null && this.served(record.model) ? record.model : UNKNOWN,
      http_route: record.endpoint,
      status: record.status,
    };
    this.duration.observe(labels, record.duration_ms / 1000);
    if (record.ttft_ms !== null) this.ttft.observe(labels, record.ttft_ms / 1000);
    const output = record.completion_tokens ?? 0;
    if (record.ttft_ms !== null && output > 1) this.tpot.observe(labels, (record.duration_ms - record.ttft_ms - (record.load_ms ?? 0)) / 1000 / (output - 1));
    if (record.prompt_tokens !== null) this.tokens.observe({ ...labels, gen_ai_token_type: "input" }, record.prompt_tokens);
    if (record.completion_tokens !== null && operation !== "embeddings") this.tokens.observe({ ...labels, gen_ai_token_type: "output" }, record.completion_tokens);
  }
}

/** GET /metrics: behind the API key when keys are set, unless `open` (--metrics-public). */
export function metricsRoute(metrics: ServerMetrics, open: boolean): Route {
  return {
    // a scrape is not recorded; a refused one (a key guessed, a scope too small) is, by the boundary
    method: "GET", path: "/metrics", open, audited: false, scope: "audit",
    handler: async (ctx) => {
      const text = await metrics.registry.metrics();
      ctx.res.writeHead(200, { "Content-Type": metrics.registry.contentType, "Content-Length": Buffer.byteLength(text) });
      ctx.res.end(ctx.req.method === "HEAD" ? undefined : text);
    },
  };
}
