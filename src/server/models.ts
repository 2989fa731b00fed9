/**
 * The models of a daemon: what it can serve (GET /v1/models, in OpenAI's shape with what
 * an operator needs besides), what it has in memory (GET /v1/ps, and /v1/ps/events, a
 * live stream of loads, unloads and evictions for `mlxs ps -f`), and loading or unloading
 * one by hand (POST /v1/models/{id}/load | unload). Names only, never paths.
 */
import type { LoadedModelInfo, ModelInfo } from "../core/index.js";
import type { RequestContext, Route } from "./http.js";
import { HttpProblem } from "./problem.js";
import { keepAliveOf, servedModelOf } from "./validate.js";

const HEARTBEAT_MS = 15_000;
const STARTED = Math.floor(Date.now() / 1000);

const modelObject = (m: ModelInfo) => ({
  id: m.name,
  object: "model",
  created: STARTED,
  owned_by: "mlxs",
  loaded: m.loaded,
  size_bytes: m.sizeBytes ?? null,
  pinned: m.pinned,
  ...(m.loaded ? { context_size: m.contextSize ?? null, idle_seconds: m.idleMs === undefined ? null : Math.round(m.idleMs / 1000), running: m.busy ?? 0, queued: m.waiting ?? 0 } : {}),
});

const loadedObject = (m: LoadedModelInfo) => ({
  model: m.name,
  state: m.state,
  memory_bytes: m.memoryBytes,
  rss_bytes: m.rssBytes ?? null,
  pid: m.pid ?? null,
  context_size: m.contextSize ?? null,
  threads: m.threads ?? null,
  running: m.running,
  queued: m.queued,
  pinned: m.pinned,
  expires_at: m.expiresAt === null ? null : new Date(m.expiresAt).toISOString(),
  loaded_at: m.loadedAt === undefined ? null : new Date(m.loadedAt).toISOString(),
  load_ms: m.loadMs === undefined ? null : Math.round(m.loadMs),
});

/** The model a control route names (`{id}`), as the audit record names it. */
function namedModel(ctx: RequestContext): string {
  return servedModelOf(ctx, { model: ctx.params.id });
}

export function modelRoutes(state: () => string): Route[] {
  return [
    {
      method: "GET", path: "/v1/models",
      handler: async (ctx) => ctx.json(200, { object: "list", data: ctx.options.core.models().map(modelObject) }),
    },
    {
      method: "GET", path: "/v1/models/{id}",
      handler: async (ctx) => {
        const name = namedModel(ctx);
        ctx.json(200, modelObject(ctx.options.core.models().find((m) => m.name === name)!));
      },
    },
    {
      // `?keep_alive=10m`: how long it stays once idle (default: the daemon's keep-alive)
      method: "POST", path: "/v1/models/{id}/load", scope: "admin",
      handler: async (ctx) => {
        const name = namedModel(ctx);
        const { keepAliveMs } = keepAliveOf(Object.fromEntries(ctx.url.searchParams));
        const { loadMs } = await ctx.options.core.load(name, keepAliveMs);
        if (ctx.tracker) ctx.tracker.loadMs = loadMs;
        ctx.json(200, { id: name, object: "model", loaded: true, load_ms: Math.round(loadMs) });
      },
    },
    {
      // `?force=true` cancels the requests running on it instead of waiting for them
      method: "POST", path: "/v1/models/{id}/unload", scope: "admin",
      handler: async (ctx) => {
        const name = namedModel(ctx);
        const force = ctx.url.searchParams.get("force");
        if (force !== null && force !== "true" && force !== "false") throw new HttpProblem(400, "invalid_parameter", "force: must be true or false", { param: "force" });
        const wasLoaded = await ctx.options.core.unload(name, { force: force === "true" });
        ctx.json(200, { id: name, object: "model", loaded: false, was_loaded: wasLoaded });
      },
    },
    {
      method: "GET", path: "/v1/ps",
      handler: async (ctx) => ctx.json(200, { object: "list", data: ctx.options.core.loadedModels().map(loadedObject) }),
    },
    {
      // what is loaded now (event "snapshot"), then each load, unload and eviction as it happens
      method: "GET", path: "/v1/ps/events", longLived: true,
      handler: async (ctx) => {
        const sse = ctx.sse();
        sse.start();
        ctx.outcome = { status: "success", statusCode: 200 };
        const queue: object[] = [];
        let wake: (() => void) | undefined;
        const stop = ctx.options.core.onEvent((event) => {
          queue.push(event);
          wake?.();
        });
        try {
          await sse.send(JSON.stringify({ type: "snapshot", models: ctx.options.core.loadedModels().map(loadedObject) }), "snapshot");
          let lastSent = Date.now();
          while (sse.open && state() !== "draining") {
            const event = queue.shift();
            if (event) {
              await sse.send(JSON.stringify(event), (event as { type: string }).type);
              lastSent = Date.now();
              continue;
            }
            // woken by an event, or each second to notice a drain
            await new Promise<void>((resolve) => {
              wake = resolve;
              setTimeout(resolve, 1000).unref();
            });
            wake = undefined;
            if (queue.length === 0 && Date.now() - lastSent >= HEARTBEAT_MS) {
              await sse.comment("heartbeat");
              lastSent = Date.now();
            }
          }
        } finally {
          stop();
          sse.end();
        }
      },
    },
  ];
}
