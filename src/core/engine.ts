/**
 * The one Llama instance of a process, created on first use. node-llama-cpp is imported
 * here and nowhere above the core, lazily, so that commands which never infer never load it.
 */
import { availableParallelism } from "node:os";
import type { Llama } from "node-llama-cpp";
import { CoreError, type GpuChoice } from "./types.js";

export class Engine {
  private llama?: Promise<Llama>;

  /** `threads`: undefined lets each model measure its own (threads.ts), up to all cores */
  constructor(private readonly gpu: GpuChoice, private readonly threads: number | undefined, private readonly debug = false) {}

  get(): Promise<Llama> {
    this.llama ??= this.create();
    return this.llama;
  }

  private async create(): Promise<Llama> {
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    const { debug } = this;
    try {
      return await getLlama({
        gpu: this.gpu === "cpu" ? false : this.gpu,
        // never compile or fetch a build at run time: use what the package ships
        build: "never",
        maxThreads: this.threads ?? availableParallelism(),
        logLevel: debug ? LlamaLogLevel.debug : LlamaLogLevel.error,
        // llama.cpp's own diagnostics are multi-line and may quote file paths; mlxs reports
        // its errors itself, so they are only shown when debugging
        logger: (level, message) => { if (debug) process.stderr.write(`[llama.cpp ${level}] ${message}\n`); },
        progressLogs: false,
      });
    } catch (error) {
      this.llama = undefined;
      throw new CoreError("internal", `cannot start llama.cpp with --gpu ${this.gpu}: ${firstLine(error)}`, { cause: error });
    }
  }

  /** The backend actually in use, as the audit log records it: `llama.cpp/cpu`, `llama.cpp/cuda` ... */
  async backend(): Promise<string> {
    const llama = await this.get();
    return `llama.cpp/${llama.gpu === false ? "cpu" : llama.gpu}`;
  }

  async dispose(): Promise<void> {
    const llama = this.llama;
    this.llama = undefined;
    if (llama) await (await llama.catch(() => undefined))?.dispose();
  }
}

export function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n")[0]!.trim();
}
