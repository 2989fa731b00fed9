/** /health and the audit log over HTTP: /v1/audit/logs, stats, export and a live stream. */
import { FilterError, parseFilter, type AuditLogFilter } from "../audit/filter.js";
import { EXPORT_FORMATS, exportRows, presentRow, type ExportFormat } from "../audit/export.js";
import { STATS_GROUPS, type StatsGroup } from "../audit/queries.js";
import type { AuditLogStore } from "../audit/open-store.js";
import type { RequestContext, Route } from "./http.js";
import { HttpProblem } from "./problem.js";

const HEARTBEAT_MS = 15_000;
/** how long the model residency and each runner have to answer /health */
const HEALTH_DEADLINE_MS = 2_000;
const POLL_MS = 250;

/** The server's reading connection to the audit database, opened on first use. */
export type AuditReader = () => Promise<AuditLogStore>;

/**
 * The filter a request's query string asks for. `?mine=true` narrows it to the caller's own
 * records (the only way an inference key reads the audit log): whatever `client` it asked.
 */
function filterOf(ctx: RequestContext, defaults: { defaultLimit: number | null }, extra: string[] = []): AuditLogFilter {
  const input: Record<string, string> = {};
  for (const [key, value] of ctx.url.searchParams) if (!extra.includes(key) && key !== "mine") input[key] = value;
  const mine = ctx.url.searchParams.get("mine");
  if (mine !== null && mine !== "true" && mine !== "false") throw new HttpProblem(400, "invalid_parameter", "mine: true or false", { param: "mine" });
  if (mine === "true") {
    if (!ctx.caller) throw new HttpProblem(400, "invalid_parameter", "mine=true needs an API key: the records are those of its label", { param: "mine" });
    input.client = ctx.caller.label;
  }
  try {
    return parseFilter(input, defaults);
  } catch (error) {
    if (error instanceof FilterError) throw new HttpProblem(400, "invalid_parameter", error.message, { param: error.field });
    throw error;
  }
}

export function adminRoutes(reader: AuditReader, state: () => string): Route[] {
  return [
    {
      method: "GET", path: "/health", open: true, audited: false,
      handler: async (ctx) => {
        const { core } = ctx.options;
        const now = state();
        // the truth, not a liveness ping: the residency's queue of decisions and every loaded model's
        // runner must answer in time, or the daemon is not ok, whatever else it says
        const unresponsive = now === "ready" ? await core.check(HEALTH_DEADLINE_MS) : [];
        const ok = now === "ready" && unresponsive.length === 0;
        // what a load balancer needs to pick a daemon: is it up, and how busy is each loaded model
        const models = core.loadedModels().map(({ name, state: modelState, running, queued }) => ({ name, loaded: modelState === "loaded", busy: running, waiting: queued }));
        ctx.json(ok ? 200 : 503, {
          status: ok ? "ok" : now === "ready" ? "unresponsive" : now,
          models,
          queue: models.reduce((sum, m) => sum + m.waiting, 0),
          ...(unresponsive.length ? { unresponsive } : {}),
        });
      },
    },
    {
      method: "GET", path: "/v1/audit/logs", scope: "audit", mine: true,
      handler: async (ctx) => {
        const filter = filterOf(ctx, { defaultLimit: 100 });
        const rows = await (await reader()).query({ ...filter, limit: filter.limit! + 1 });
        ctx.json(200, { data: rows.slice(0, filter.limit).map(presentRow), has_more: rows.length > filter.limit! });
      },
    },
    {
      method: "GET", path: "/v1/audit/stats", scope: "audit", mine: true,
      handler: async (ctx) => {
        const by = ctx.url.searchParams.get("by");
        if (by !== null) {
          if (!(STATS_GROUPS as readonly string[]).includes(by)) throw new HttpProblem(400, "invalid_parameter", `by: one of ${STATS_GROUPS.join(", ")}`, { param: "by" });
          const groups = await (await reader()).statsBy(filterOf(ctx, { defaultLimit: null }, ["by"]), by as StatsGroup);
          return ctx.json(200, { by, data: groups });
        }
        const stats = await (await reader()).stats(filterOf(ctx, { defaultLimit: null }));
        const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
        ctx.json(200, { ...stats, first: iso(stats.first), last: iso(stats.last) });
      },
    },
    {
      method: "GET", path: "/v1/audit/export", scope: "audit", mine: true,
      handler: async (ctx) => {
        const format = (ctx.url.searchParams.get("format") ?? "jsonl") as ExportFormat;
        if (!EXPORT_FORMATS.includes(format)) throw new HttpProblem(400, "invalid_parameter", `format: expected one of ${EXPORT_FORMATS.join(", ")}`, { param: "format" });
        const filter = filterOf(ctx, { defaultLimit: null }, ["format"]);
        const store = await reader();
        const type = format === "csv" ? "text/csv; charset=utf-8" : format === "json" ? "application/json" : "application/x-ndjson";
        ctx.res.writeHead(200, { "Content-Type": type, "Content-Disposition": `attachment; filename="mlxs-audit.${format}"` });
        const body = ctx.bodyWriter();
        // a reader that stopped reading, left, or a server that stopped waiting: the export stops
        const { complete } = await exportRows(store, { ...filter, order: ctx.url.searchParams.get("order") === "desc" ? "desc" : "asc" }, format,
          (text) => (ctx.signal.aborted ? Promise.resolve(false) : body.write(text)));
        if (complete) return body.end();
        if (ctx.timedOut()) ctx.outcome = { status: "timeout", statusCode: 200, errorType: "timeout", errorMessage: "The export took longer than the request timeout." };
        body.abandon();
      },
    },
    {
      method: "GET", path: "/v1/audit/stream", longLived: true, scope: "audit", mine: true,
      handler: async (ctx) => {
        const filter = { ...filterOf(ctx, { defaultLimit: null }), limit: undefined, offset: 0 };
        let store = await reader();
        // this stream's own follower: what another stream was given is no business of this one
        let follower = store.follower();
        let cursor = await store.lastId();
        const sse = ctx.sse();
        sse.start();
        await sse.comment("mlxs audit stream");
        let lastSent = Date.now();
        // the stream ends when the client goes or the server drains; either is a normal end
        ctx.outcome = { status: "success", statusCode: 200 };
        while (sse.open && state() !== "draining") {
          // PostgreSQL tells when a writer stored records (LISTEN/NOTIFY); an SQLite file is polled
          await follower.waitForChange(POLL_MS, ctx.signal);
          // the file was moved or deleted and a new one begun: follow that one from its start
          const current = await reader();
          if (current !== store) [store, follower, cursor] = [current, current.follower(), 0];
          const rows = await follower.after(cursor, filter);
          for (const row of rows) {
            cursor = row.id;
            if (!(await sse.send(JSON.stringify(presentRow(row))))) break;
            lastSent = Date.now();
          }
          if (Date.now() - lastSent >= HEARTBEAT_MS) {
            await sse.comment("heartbeat");
            lastSent = Date.now();
          }
        }
        sse.end();
      },
    },
  ];
}
