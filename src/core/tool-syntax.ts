/**
 * Tool calls in the model's own syntax, as its chat wrapper defines it ("||call: name(params)"
 * for ChatML, "<tool_call>\n{"name": ..., "arguments": ...}</tool_call>" for Qwen, and so
 * on): the texts that begin a call (to notice one in a stream), what is fed to the model to
 * begin one (when a call is forced, or once one has begun), and the grammar of what follows:
 * a function's name, then its arguments as JSON valid against its parameters' schema.
 */
import type { ChatWrapper, Llama, LlamaGrammar, LlamaText } from "node-llama-cpp";
import type { Schema } from "./json-schema.js";
import { jsonGrammarText } from "./json-grammar.js";

export interface ToolSyntax {
  /** the texts (special tokens written out) that begin a call in the model's output */
  prefixes: string[];
  /** what begins a call, fed to the model */
  prefix: LlamaText;
  /** between a function's name and its arguments */
  paramsPrefix: string;
  /** what ends a call, appended after its arguments */
  suffix: string;
  /** between two calls in a row, fed to the model before it may begin another */
  betweenCalls: LlamaText;
}

export async function toolSyntax(wrapper: ChatWrapper): Promise<ToolSyntax> {
  const { LlamaText } = await import("node-llama-cpp");
  const { call, parallelism } = wrapper.settings.functions;
  const prefix = LlamaText(call.prefix);
  const text = (value: unknown) => textOf(LlamaText(value as never));
  const prefixes = [text(prefix), ...(call.prefixAlternateMatches ?? []).map(text)].filter(Boolean);
  return {
    prefixes: [...new Set(prefixes)],
    prefix,
    paramsPrefix: text(call.paramsPrefix),
    suffix: text(call.suffix),
    betweenCalls: LlamaText(parallelism?.call.betweenCalls ?? ""),
  };
}

/** A LlamaText as the text it stands for: special tokens written out, builtin ones (BOS) left out. */
export function textOf(text: LlamaText): string {
  const values = text.toJSON();
  return (Array.isArray(values) ? values : [values]).map((v) => (typeof v === "string" ? v : v.type === "specialTokensText" ? v.value : "")).join("");
}

/**
 * The grammar of a call's body: one of `names`, the params prefix, the arguments as JSON
 * valid against that function's schema. With `named`, only the arguments (the name is fed).
 * Each function's JSON grammar is node-llama-cpp's, its rules renamed apart.
 */
export async function callGrammar(llama: Llama, functions: { name: string; schema: Schema }[], syntax: ToolSyntax, named?: string): Promise<LlamaGrammar> {
  const rules: string[] = [];
  const alternatives: string[] = [];
  for (const [i, fn] of functions.entries()) {
    if (named !== undefined && fn.name !== named) continue;
    const root = renameRules(await jsonGrammarText(llama, fn.schema), `f${i}-`, rules);
    alternatives.push(named !== undefined ? root : `${literal(fn.name)} ${literal(syntax.paramsPrefix)} ${root}`);
  }
  return llama.createGrammar({ grammar: [`root ::= ( ${alternatives.join(" | ")} )`, ...rules].join("\n") });
}

/**
 * Adds `grammar`'s rules to `into`, each renamed with `prefix`, its root without the
 * newlines node-llama-cpp makes a whole answer end with; returns the root's new name.
 */
function renameRules(grammar: string, prefix: string, into: string[]): string {
  const lines = grammar.split("\n").filter((l) => l.includes("::="));
  const names = new Set(lines.map((l) => l.slice(0, l.indexOf("::=")).trim()));
  for (const line of lines) {
    const at = line.indexOf("::=");
    const name = line.slice(0, at).trim();
    let body = renameInBody(line.slice(at + 3), names, prefix);
    if (name === "root") body = body.replace(/\s*"(?:\\n)+"\s*\[\\n\]\*\s*$/, "");
    into.push(`${prefix}${name} ::=${body}`);
  }
  return `${prefix}root`;
}

/** Prefixes the rule names a GBNF body refers to, leaving its string literals and character classes alone. */
function renameInBody(body: string, names: Set<string>, prefix: string): string {
  let out = "";
  for (let i = 0; i < body.length;) {
    const c = body[i]!;
    if (c === '"' || c === "[") {
      const close = c === '"' ? '"' : "]";
      let j = i + 1;
      while (j < body.length && body[j] !== close) j += body[j] === "\\" ? 2 : 1;
      out += body.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    const word = /^[a-zA-Z0-9-]+/.exec(body.slice(i))?.[0];
    if (word) {
      out += names.has(word) ? `${prefix}${word}` : word;
      i += word.length;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

/** A GBNF string literal of `text`. */
export function literal(text: string): string {
  if (text === "") return '""';
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t")}"`;
}
