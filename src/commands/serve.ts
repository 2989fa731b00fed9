/** `mlxs serve`: the HTTP daemon over the core and the audit log. */
import type { Command } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { pathToFileURL } from "node:url";
import { DEFAULTS, loadConfig } from "../config.js";
import { warnKeyOnCommandLine } from "./api-key.js";
import { openAuditStore, type AuditLogStore } from "../audit/open-store.js";
import { setInstance } from "../audit/track.js";
import { AuditWriter } from "../audit/writer.js";
import { KEY_SCOPES, MlxsServer, currentRequestId, hostnameOf, type ApiKey, type KeyScope, type Route } from "../server/http.js";
import { apiRoutes } from "../server/routes.js";
import { adminRoutes } from "../server/admin.js";
import { ServerMetrics, metricsRoute } from "../server/metrics.js";
import { CommandFailure, UsageError } from "../errors.js";
import { STOP_SIGNALS, onOutputClosed } from "./io.js";
import { describeFatalContext, flushBeforeFatalExit } from "./last-resort.js";
import { configFlagsFrom } from "./options.js";
import { openCore } from "./open-core.js";
import type { ModelInfo } from "../core/types.js";
import { formatDuration } from "../durations.js";

const DAY_MS = 86_400_000;
/** past --drain-timeout, what the rest of a stop (freeing the models, a runner killed when it will not leave, the last audit flush) may take */
const STOP_MARGIN_MS = 25_000;
/** once the models are closed: how long the requests they still held get to end and be recorded */
const SETTLE_MS = 2_000;

export async function run(_opts: unknown, command: Command): Promise<void> {
  const opts = command.optsWithGlobals();
  const config = loadConfig(configFlagsFrom(opts));
  const { host = DEFAULTS.host, port = DEFAULTS.port } = config;
  if (opts.apiKey) warnKeyOnCommandLine("--api-key", "MLXS_API_KEYS or --api-keys-file FILE");
  const apiKeys = apiKeysFrom(opts, config.apiKeys);
  if (!isLoopback(host) && apiKeys.length === 0 && !opts.allowUnauthenticated) {
    throw new UsageError(`refusing to listen on ${host} without an API key: give --api-key KEY (or MLXS_API_KEYS), or --allow-unauthenticated`);
  }

  const core = await openCore(config, opts.model as string[] | undefined, { spareRunner: true });
  if (opts.instance !== undefined) setInstance(String(opts.instance));
  const writer = opts.audit === false ? undefined : AuditWriter.forLocation(config.auditDb, { sealKey: config.sealKey });
  // a bug that escapes every request's boundary ends the process, but not before the
  // records it holds are written, and its one line names the request it struck
  if (writer) flushBeforeFatalExit(() => writer.close());
  // with a sealing key: this interval's seal now (covering what a daemon that died left
  // unsealed), then one as each interval ends
  if (writer) void writer.seal().then(() => writer.startSealing());
  describeFatalContext(currentRequestId);
  let reader: Promise<AuditLogStore> | undefined;
  const openReader = async () => {
    // when the file was moved or deleted, the writer begins a new one: read that one once
    // it is there (creating it here could race the writer's finishing of the old one)
    const current = await reader?.catch(() => undefined);
    if (current?.isDetached() && existsSync(config.auditDb)) {
      reader = undefined;
      // an export may still be reading the old file: closed once it surely has finished
      setTimeout(() => void current.close().catch(() => undefined), 10 * 60_000).unref();
    }
    reader ??= openAuditStore(config.auditDb).then((s) => s!);
    reader.catch(() => { reader = undefined; });
    return reader;
  };
  // the backend is known once llama.cpp starts, before any model is loaded
  const backend = await core.backend();
  if (opts.metricsPublic && !opts.metrics) throw new UsageError("--metrics-public goes with --metrics");
  const metrics = opts.metrics ? new ServerMetrics(core, writer) : undefined;
  const server: MlxsServer = new MlxsServer({
    core, backend, writer, apiKeys, debug: config.debug, metrics,
    loopback: isLoopback(host),
    allowedHosts: ((opts.allowedHost as string[] | undefined) ?? []).map((name) => hostnameOf(name)),
    corsOrigins: (opts.corsOrigin as string[] | undefined) ?? [],
    maxBodyBytes: opts.maxBody as number,
    requestTimeoutMs: (opts.requestTimeout as number) * 1000,
    headersTimeoutMs: (opts.headerTimeout as number) * 1000,
    bodyTimeoutMs: (opts.bodyTimeout as number) * 1000,
    stallTimeoutMs: (opts.stallTimeout as number) * 1000,
  }, [
    ...adminRoutes(openReader, () => server.state), ...apiRoutes(() => server.state),
    ...(metrics ? [metricsRoute(metrics, opts.metricsPublic === true)] : []), ...await testRoutes(),
  ]);

  let address;
  try {
    address = await server.listen(host, port);
  } catch (error) {
    await core.close();
    throw new CommandFailure(listenFailure(host, port, error as NodeJS.ErrnoException));
  }
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  // serve /health (503 "loading") while the models load
  process.stderr.write(`mlxs: loading the models it was started with; http://${shownHost}:${address.port}/health answers 503 until they are ready\n`);
  const preloaded = await core.preload(config.maxLoaded);
  server.state = "ready";
  const onDemand = core.models().length - preloaded.length;
  process.stderr.write(`mlxs listening on http://${shownHost}:${address.port} (models: ${[preloaded.join(", "), onDemand > 0 ? `${onDemand}${preloaded.length > 0 ? " more" : ""} on demand` : ""].filter(Boolean).join(" and ")}, backend: ${backend}, ${threadsNote(core.models().filter((m) => m.loaded), config.threads)}, keep-alive: ${formatDuration(config.keepAlive)})\n`);

  const retentionMs = config.auditRetentionDays * DAY_MS;
  const prune = async () => {
    if (retentionMs <= 0 || !writer) return;
    try {
      const store = await openAuditStore(config.auditDb);
      const pruned = await store!.prune(Date.now() - retentionMs);
      await store!.close();
      if (pruned > 0) process.stderr.write(`mlxs: pruned ${pruned} audit records older than ${config.auditRetentionDays} days\n`);
    } catch (error) {
      process.stderr.write(`mlxs: audit prune failed: ${(error as Error).message}\n`);
    }
  };
  void prune();
  const pruneTimer = setInterval(() => void prune(), DAY_MS);
  pruneTimer.unref();

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals | "output closed") => {
      if (stopping) {
        if (signal === "output closed") return;
        process.stderr.write(`mlxs: ${signal} again: exiting now\n`);
        process.exit(130);
      }
      stopping = true;
      process.stderr.write(`mlxs: ${signal}: draining (up to ${opts.drainTimeout} s)\n`);
      // draining is bounded by construction; this is the bound on everything after it (the
      // last audit flush, freeing the models), should a disk or a driver hang
      setTimeout(() => {
        process.stderr.write("mlxs: the stop took too long; exiting now\n");
        process.exit(1);
      }, (opts.drainTimeout as number) * 1000 + STOP_MARGIN_MS).unref();
      void (async () => {
        clearInterval(pruneTimer);
        await server.drain((opts.drainTimeout as number) * 1000);
        // the core before the writer: a request still running past the drain (a runner that
        // does not answer) ends when its runner is closed, and its record must find the writer open
        await core.close();
        await server.settled(SETTLE_MS);
        await writer?.close();
        const dropped = writer?.stats.dropped ?? 0;
        if (dropped > 0) process.stderr.write(`mlxs: ${dropped} audit records were dropped\n`);
        await (await reader?.catch(() => undefined))?.close().catch(() => undefined);
        process.stderr.write("mlxs: stopped\n");
        resolve();
      })();
    };
    // SIGHUP too: a terminal closing under a foreground daemon must not cost its records
    for (const signal of STOP_SIGNALS) process.on(signal, stop);
    // the log's reader went away (mlxs serve 2>&1 | head): stop as a signal would
    onOutputClosed(() => stop("output closed"));
  });
}

/**
 * Extra routes from the module named by MLXS_TEST_ROUTES: the tests' way to put a handler
 * with a bug into a real daemon, to check that the daemon survives it. Not for production.
 */
async function testRoutes(): Promise<Route[]> {
  const module = process.env.MLXS_TEST_ROUTES;
  if (!module) return [];
  const { routes } = (await import(pathToFileURL(module).href)) as { routes: Route[] };
  return routes;
}

/** "threads: 2" as given, or as each model measured it. */
function threadsNote(models: ModelInfo[], given: number | undefined): string {
  if (given !== undefined) return `threads: ${given}`;
  if (models.length === 0) return "threads: measured at each load";
  const counts = new Set(models.map((m) => m.threads));
  return counts.size === 1 ? `threads: ${[...counts][0]} (measured)` : `threads: ${models.map((m) => `${m.name} ${m.threads}`).join(", ")} (measured)`;
}

/** Why the port could not be opened, in words an operator can act on. */
function listenFailure(host: string, port: number, error: NodeJS.ErrnoException): string {
  const where = `${host}:${port}`;
  switch (error.code) {
    case "EADDRINUSE": return `cannot listen on ${where}: the port is already in use (another mlxs serve?); choose another with --port`;
    case "EACCES": return `cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another with --port`;
    case "EADDRNOTAVAIL": return `cannot listen on ${where}: no network interface has that address; check --host`;
    case "ENOTFOUND": case "EAI_AGAIN": return `cannot listen on ${where}: the host name does not resolve; check --host`;
    default: return `cannot listen on ${where}: ${error.code ?? error.message}`;
  }
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}

/**
 * --api-key (repeatable) and the Config's keys (MLXS_API_KEYS, comma-separated, or the
 * config file's "apiKeys"): the operator's, admin; --api-keys-file: `LABEL KEY [OPTION...]`
 * per line, options `scope=inference|audit|admin` (default inference), `rpm=N`,
 * `concurrency=N`, `tpm=N`.
 */
function apiKeysFrom(opts: Record<string, unknown>, configured: string[]): ApiKey[] {
  const keys: ApiKey[] = [];
  ((opts.apiKey as string[] | undefined) ?? []).forEach((key, i) => keys.push({ label: `key-${i + 1}`, key, scope: "admin" }));
  configured.forEach((key, i) => keys.push({ label: `env-${i + 1}`, key, scope: "admin" }));
  if (opts.apiKeysFile) {
    const file = String(opts.apiKeysFile);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      throw new UsageError(`cannot read the API keys file ${file}`);
    }
    text.split(/\r?\n/).forEach((line, i) => {
      const trimmed = line.trim();
      if (trimmed === "" || trimmed.startsWith("#")) return;
      const [label, key, ...options] = trimmed.split(/\s+/);
      // never the line itself in the message: it holds a key
      const where = `${file}:${i + 1}`;
      if (!label || !key || key.includes("=")) throw new UsageError(`${where}: expected "LABEL KEY [scope=...] [rpm=N] [concurrency=N] [tpm=N]"`);
      const entry: ApiKey = { label, key, scope: "inference" };
      for (const option of options) {
        const [name, value = ""] = option.split("=", 2) as [string, string?];
        if (name === "scope") {
          if (!(KEY_SCOPES as readonly string[]).includes(value)) throw new UsageError(`${where}: scope must be one of ${KEY_SCOPES.join(", ")}`);
          entry.scope = value as KeyScope;
        } else if (name === "rpm" || name === "concurrency" || name === "tpm") {
          if (!/^[1-9]\d{0,8}$/.test(value)) throw new UsageError(`${where}: ${name} must be a whole number from 1`);
          entry[name] = Number(value);
        } else {
          throw new UsageError(`${where}: unknown option (the options are scope, rpm, concurrency and tpm)`);
        }
      }
      if (keys.some((k) => k.label === label)) throw new UsageError(`${where}: the label ${label} is used twice`);
      keys.push(entry);
    });
  }
  if (keys.some((k) => k.key.length < 8)) throw new UsageError("an API key must be at least 8 characters");
  return keys;
}
