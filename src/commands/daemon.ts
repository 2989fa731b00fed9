/**
 * A running `mlxs serve`, read over HTTP by the commands that watch one (`audit tail
 * --url`, `ps`): one GET with the API key, its failures as one line that says what to do.
 * Undefined when `signal` aborted (Ctrl-C): the caller just stops.
 */
import type { Dispatcher } from "undici";
import { CommandFailure } from "../errors.js";

export const DEFAULT_DAEMON_URL = "http://127.0.0.1:10242";

export async function daemonGet(base: string, path: string, { apiKey, signal, query }: { apiKey?: string; signal?: AbortSignal; query?: URLSearchParams } = {}): Promise<Dispatcher.ResponseData | undefined> {
  const { request } = await import("undici");
  let response;
  try {
    response = await request(new URL(`${path}${query ? `?${query}` : ""}`, base), { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, signal });
  } catch (error) {
    if (signal?.aborted) return undefined;
    const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
    throw new CommandFailure(`cannot reach ${base}: ${code === "ECONNREFUSED" ? "connection refused (is mlxs serve running? give --url)" : code ?? (error as Error).message}`);
  }
  if (response.statusCode !== 200) {
    const body = (await response.body.json().catch(() => ({}))) as { detail?: string };
    const what = response.statusCode === 401 ? "it refused the API key (give --api-key)" : body.detail ?? "";
    throw new CommandFailure(`${base} answered ${response.statusCode}${what ? `: ${what}` : ""}`);
  }
  return response;
}
