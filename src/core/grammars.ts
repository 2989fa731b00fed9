/**
 * Grammars for constrained answers, built once per schema and kept (a grammar costs
 * milliseconds to build; an agent sends the same schema with every request).
 */
import type { Llama, LlamaGrammar } from "node-llama-cpp";
import { prepareSchema, type Schema } from "./json-schema.js";
import { jsonGrammarText } from "./json-grammar.js";
import { callGrammar, textOf, type ToolSyntax } from "./tool-syntax.js";
import type { ResponseFormat } from "./types.js";

/** A grammar and the schema it enforces (json-completion.ts finishes answers cut short against it). */
export interface Constraint {
  grammar: LlamaGrammar;
  schema: Schema;
}

/** json_object: any JSON object */
const ANY_OBJECT: Schema = { type: "object", additionalProperties: true };
const KEPT = 64;

export class Grammars {
  private readonly cache = new Map<string, Promise<Constraint>>();

  constructor(private readonly llama: Llama) {}

  /** The constraint of a response format (undefined for free text); throws `invalid_request` for a schema it cannot enforce. */
  async forFormat(format: ResponseFormat | undefined, param: string): Promise<Constraint | undefined> {
    if (!format || format.type === "text") return undefined;
    return this.forSchema(format.type === "json_object" ? ANY_OBJECT : prepareSchema(format.schema, param));
  }

  forSchema(schema: Schema): Promise<Constraint> {
    return this.kept(`json:${JSON.stringify(schema)}`, async () => ({ grammar: await this.llama.createGrammar({ grammar: await jsonGrammarText(this.llama, schema) }), schema }));
  }

  /** The grammar of a tool call's body, in the model's syntax (tool-syntax.ts). */
  async forCall(functions: { name: string; schema: Schema }[], syntax: ToolSyntax, named?: string): Promise<LlamaGrammar> {
    const key = `call:${JSON.stringify([functions, syntax.prefixes, syntax.paramsPrefix, textOf(syntax.prefix), named ?? null])}`;
    return (await this.kept(key, async () => ({ grammar: await callGrammar(this.llama, functions, syntax, named), schema: {} }))).grammar;
  }

  private kept(key: string, build: () => Promise<Constraint>): Promise<Constraint> {
    let constraint = this.cache.get(key);
    if (constraint) {
      // most recently used last: the first is the one to forget
      this.cache.delete(key);
      this.cache.set(key, constraint);
      return constraint;
    }
    constraint = build();
    constraint.catch(() => this.cache.delete(key));
    this.cache.set(key, constraint);
    if (this.cache.size > KEPT) this.cache.delete(this.cache.keys().next().value!);
    return constraint;
  }
}
