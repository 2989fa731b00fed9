/** The chat's slash commands: parsed here, applied by the app. */
import { SAMPLING_FIELDS, samplingError, type SamplingKey } from "../core/sampling.js";
import type { SamplingOptions } from "../core/types.js";

export type SlashAction =
  | { kind: "help" }
  | { kind: "clear" }
  | { kind: "exit" }
  | { kind: "system"; text: string }
  | { kind: "set"; key: keyof SamplingOptions; value: number }
  | { kind: "show-settings" }
  | { kind: "model"; name: string }
  | { kind: "save"; file: string }
  | { kind: "error"; message: string };

const SLASH_COMMANDS = ["/help", "/clear", "/system TEXT", "/set NAME VALUE", "/model NAME", "/save FILE", "/exit"];

/** wire-style setting names, as people type them, to the core's */
const SETTINGS: Record<string, SamplingKey> = Object.fromEntries(SAMPLING_FIELDS.map((f) => [f.wire, f.key]));
const SETTING_NAMES = Object.keys(SETTINGS);

export const HELP = [
  "Commands:",
  "  /help                 this help",
  "  /clear                start a new conversation (the system prompt stays)",
  "  /system TEXT          set the system prompt (/system alone clears it)",
  `  /set NAME VALUE       sampling: ${SETTING_NAMES.join(", ")}; /set alone shows them`,
  "  /model NAME           answer with another served model",
  "  /save FILE            write the transcript to FILE as Markdown (nothing is saved otherwise)",
  "  /exit                 leave (also Ctrl-D, or Ctrl-C at an empty prompt)",
  "Keys: Enter sends; Ctrl-J (or a line ending in \\) starts a new line; Up/Down walk the history;",
  "      Ctrl-C stops an answer (a line sent meanwhile still goes out).",
].join("\n");

export function parseSlash(line: string): SlashAction {
  const [command = "", ...rest] = line.trim().split(/\s+/);
  const argument = line.trim().slice(command.length).trim();
  switch (command) {
    case "/help": case "/?": return { kind: "help" };
    case "/clear": return { kind: "clear" };
    case "/exit": case "/quit": case "/bye": return { kind: "exit" };
    case "/system": return { kind: "system", text: argument };
    case "/model":
      return argument ? { kind: "model", name: argument } : { kind: "error", message: "/model needs a name: /model NAME" };
    case "/save":
      return argument ? { kind: "save", file: argument } : { kind: "error", message: "/save needs a file: /save FILE" };
    case "/set": {
      if (rest.length === 0) return { kind: "show-settings" };
      const key = SETTINGS[rest[0]!.replace(/-/g, "_")];
      if (!key) return { kind: "error", message: `/set knows ${SETTING_NAMES.join(", ")}` };
      const value = Number(rest[1]);
      const error = samplingError(key, value);
      if (rest.length !== 2 || error) return { kind: "error", message: `/set ${rest[0]} ${(error ?? "must be given one value").replace(/^must be/, "takes")}` };
      return { kind: "set", key, value };
    }
    default:
      return { kind: "error", message: `unknown command ${command.slice(0, 40)}; the commands are ${SLASH_COMMANDS.map((c) => c.split(" ")[0]).join(" ")}` };
  }
}
