/**
 * The API key a command sends to a daemon. A key on the command line is in every user's
 * `ps` and in shell history: said so on stderr, with the two ways that keep it out of
 * sight, a file (`--api-key-file`) and the environment (`MLXS_API_KEY`).
 */
import { readFileSync, statSync } from "node:fs";
import { UsageError } from "../errors.js";

/** `--api-key`, else `--api-key-file`, else MLXS_API_KEY; none: undefined. */
export function clientApiKey(opts: { apiKey?: unknown; apiKeyFile?: unknown }, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (opts.apiKey !== undefined && opts.apiKeyFile !== undefined) throw new UsageError("give --api-key or --api-key-file, not both");
  if (opts.apiKey !== undefined) {
    warnKeyOnCommandLine("--api-key", "MLXS_API_KEY or --api-key-file FILE");
    return String(opts.apiKey);
  }
  if (opts.apiKeyFile !== undefined) return readKeyFile(String(opts.apiKeyFile));
  return env.MLXS_API_KEY || undefined;
}

/** The one-line warning for a secret given as a flag; `instead`: what keeps it out of sight. */
export function warnKeyOnCommandLine(flag: string, instead: string): void {
  process.stderr.write(`mlxs: warning: a key given with ${flag} is visible to every user of this machine (ps, /proc); use ${instead}\n`);
}

/** The key alone on one line (a final newline is not part of it); warns when every user may read the file. */
function readKeyFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`--api-key-file: cannot read ${file} (${code ?? "unreadable"})`);
  }
  const key = text.trim();
  if (key === "") throw new UsageError(`--api-key-file: ${file} is empty`);
  // never quote the file: it is a secret
  if (/\s/.test(key)) throw new UsageError(`--api-key-file: ${file} must hold the key alone, on one line`);
  if (statSync(file).mode & 0o004) process.stderr.write(`mlxs: warning: ${file} is readable by every user of this machine; chmod 600 it\n`);
  return key;
}
