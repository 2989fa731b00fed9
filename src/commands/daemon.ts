/**
 * A running `mlxs serve`, as the commands that talk to one (`ps`, `chat --url`, `audit tail
 * --url`) find and read it: one place that says where it is and why there, and one GET with
 * the API key whose failures are one line naming the address tried.
 * Undefined when `signal` aborted (Ctrl-C): the caller just stops.
 */
import type { Dispatcher } from "undici";
import { isIP } from "node:net";
import { DEFAULTS, type Config } from "../config.js";
import { CommandFailure } from "../errors.js";

const DEFAULT_DAEMON_URL = `http://${DEFAULTS.host}:${DEFAULTS.port}`;

/** Where the daemon is, and where that came from (said when it cannot be reached). */
export interface DaemonAddress {
  url: string;
  from: string;
}

/**
 * `--url URL`, else MLXS_URL or the config file's "url", else where `mlxs serve` would
 * listen by the same settings (MLXS_HOST/MLXS_PORT or the config file's "host"/"port"),
 * else http://127.0.0.1:10242. `flag`: the --url value (true: given without one).
 */
export function daemonAddress(flag: unknown, config: Config, env: NodeJS.ProcessEnv = process.env): DaemonAddress {
  if (typeof flag === "string") return { url: flag.replace(/\/+$/, ""), from: "--url" };
  if (config.url !== undefined) return { url: config.url, from: env.MLXS_URL ? "MLXS_URL" : `"url" in ${config.configFile}` };
  if (config.host !== undefined || config.port !== undefined) {
    const from = env.MLXS_HOST || env.MLXS_PORT ? "MLXS_HOST/MLXS_PORT" : `"host"/"port" in ${config.configFile}`;
    return { url: `http://${connectable(config.host ?? DEFAULTS.host)}:${config.port ?? DEFAULTS.port}`, from };
  }
  return { url: DEFAULT_DAEMON_URL, from: "the default" };
}

/** A daemon listening on every address is reached on loopback; an IPv6 address goes in brackets. */
function connectable(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::") return "[::1]";
  return isIP(host) === 6 ? `[${host}]` : host;
}

/** Why a connection to `address` failed, in one line that names it and where it came from. */
export function unreachable(address: DaemonAddress, error: unknown): CommandFailure {
  const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
  const why = code === "ECONNREFUSED" ? "connection refused (is mlxs serve running there? give --url, or set MLXS_URL)"
    : code === "ENOTFOUND" || code === "EAI_AGAIN" ? "the host name does not resolve"
      : code ?? (error as Error).message;
  return new CommandFailure(`cannot reach ${address.url} (from ${address.from}): ${why}`);
}

export async function daemonGet(address: DaemonAddress, path: string, { apiKey, signal, query }: { apiKey?: string; signal?: AbortSignal; query?: URLSearchParams } = {}): Promise<Dispatcher.ResponseData | undefined> {
  const { request } = await import("undici");
  let response;
  try {
    response = await request(new URL(`${path}${query ? `?${query}` : ""}`, `${address.url}/`), { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, signal });
  } catch (error) {
    if (signal?.aborted) return undefined;
    throw unreachable(address, error);
  }
  if (response.statusCode !== 200) {
    const body = (await response.body.json().catch(() => ({}))) as { detail?: string };
    const what = response.statusCode === 401 ? "it refused the API key (give --api-key-file, MLXS_API_KEY or --api-key)" : body.detail ?? "";
    throw new CommandFailure(`${address.url} answered ${response.statusCode}${what ? `: ${what}` : ""}`);
  }
  return response;
}
