/**
 * The shortest ending that makes the start of a JSON value a whole value valid against its
 * schema: the open string closed, missing required properties given their smallest values,
 * open arrays and objects closed.
 *
 * Why: the grammar guarantees that every token keeps the text a valid start, not that the
 * text ever ends. A model may write one string for as long as it is let (a random model
 * always does), and the token budget (max_tokens, the context) then cuts the JSON short.
 * When the budget is about to run out, the generation stops and this ending is appended,
 * so that a constrained answer always parses and validates, whatever the model.
 */
import type { Schema } from "./json-schema.js";

/** Either the value ended at `end`, or the text ran out inside it and `rest` finishes it. */
type Parsed = { end: number } | { rest: string };

const DATE = "2000-01-01";
const TIME = "00:00:00Z";

export function completeJson(schema: Schema, text: string): string | undefined {
  const parser = new Parser(text, (schema.$defs ?? {}) as Record<string, Schema>);
  const parsed = parser.value(schema, 0);
  if (!parsed) return undefined;
  return "rest" in parsed ? parsed.rest : "";
}

class Parser {
  constructor(private readonly text: string, private readonly defs: Record<string, Schema>) {}

  value(schema: Schema, from: number): Parsed | undefined {
    const i = this.skip(from);
    const s = this.resolve(schema);
    if (i >= this.text.length) return { rest: minimal(s, this.defs) };
    if ("const" in s) return this.literal([JSON.stringify(s.const)], i);
    if (Array.isArray(s.enum)) return this.literal(s.enum.map((v) => JSON.stringify(v)), i);
    if (Array.isArray(s.oneOf)) return this.alternatives((s.oneOf as Schema[]).map((o) => () => this.value(o, i)));
    const { type } = s;
    if (Array.isArray(type)) return this.alternatives(type.map((t) => () => this.value({ ...s, type: t }, i)));
    switch (type) {
      case "null": return this.literal(["null"], i);
      case "boolean": return this.literal(["true", "false"], i);
      case "number": case "integer": return this.number(i, type === "integer");
      case "string": return this.string(s, i);
      case "object": return this.object(s, i);
      case "array": return this.array(s, i);
      default: return this.any(i);
    }
  }

  private resolve(schema: Schema): Schema {
    let s = schema;
    for (let hops = 0; typeof s.$ref === "string" && hops < 32; hops++) s = this.defs[s.$ref.replace("#/$defs/", "")] ?? {};
    return s;
  }

  private skip(i: number): number {
    while (i < this.text.length && " \t\n\r".includes(this.text[i]!)) i++;
    return i;
  }

  /** Of the alternatives that fit, one that ended (the longest), else the shortest ending. */
  private alternatives(options: (() => Parsed | undefined)[]): Parsed | undefined {
    let ended: { end: number } | undefined;
    let rest: { rest: string } | undefined;
    for (const option of options) {
      const parsed = option();
      if (!parsed) continue;
      if ("end" in parsed) { if (!ended || parsed.end > ended.end) ended = parsed; }
      else if (!rest || parsed.rest.length < rest.rest.length) rest = parsed;
    }
    return ended ?? rest;
  }

  private literal(candidates: string[], i: number): Parsed | undefined {
    const tail = this.text.slice(i);
    let rest: string | undefined;
    for (const candidate of candidates) {
      if (tail.startsWith(candidate)) return { end: i + candidate.length };
      if (candidate.startsWith(tail) && (rest === undefined || candidate.length - tail.length < rest.length)) rest = candidate.slice(tail.length);
    }
    return rest === undefined ? undefined : { rest };
  }

  private number(i: number, integer: boolean): Parsed | undefined {
    // integers may have an exponent too (1e3), as the grammar lets them
    const match = (integer ? /^-?(?:0|[1-9]\d*)?(?:[eE][+-]?\d*)?/ : /^-?(?:0|[1-9]\d*)?(?:\.\d*)?(?:[eE][+-]?\d*)?/).exec(this.text.slice(i))!;
    const written = match[0];
    if (written === "") return undefined;
    if (i + written.length < this.text.length) return /\d$/.test(written) ? { end: i + written.length } : undefined;
    // the text ends in the number: only a digit may be missing ("-", "1.", "1e", "1e+")
    return { rest: /\d$/.test(written) ? "" : "0" };
  }

  private string(schema: Schema, i: number): Parsed | undefined {
    if (this.text[i] !== '"') return undefined;
    let j = i + 1;
    let length = 0;
    while (j < this.text.length) {
      const c = this.text[j]!;
      if (c === '"') return { end: j + 1 };
      if (c === "\\") {
        const escape = /^\\(?:u[0-9a-fA-F]{0,4}|.)?/.exec(this.text.slice(j))![0];
        if (j + escape.length >= this.text.length && !/^\\(?:u[0-9a-fA-F]{4}|[^u])$/.test(escape)) {
          // the text ends inside an escape: finish it
          return { rest: (escape === "\\" ? "n" : "0".repeat(6 - escape.length)) + this.pad(schema, length + 1) + '"' };
        }
        j += escape.length;
      } else j += c.length;
      length++;
    }
    const format = schema.format === "date" ? DATE : schema.format === "time" ? TIME : schema.format === "date-time" ? `${DATE}T${TIME}` : undefined;
    if (format) return { rest: format.slice(Math.min(length, format.length)) + '"' };
    return { rest: this.pad(schema, length) + '"' };
  }

  private pad(schema: Schema, length: number): string {
    return "a".repeat(Math.max(0, ((schema.minLength as number | undefined) ?? 0) - length));
  }

  private object(schema: Schema, i: number): Parsed | undefined {
    if (this.text[i] !== "{") return undefined;
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    const required = (schema.required ?? []) as string[];
    const seen = new Set<string>();
    const propertySchema = (name: string): Schema =>
      properties[name] ?? (typeof schema.additionalProperties === "object" ? schema.additionalProperties as Schema : {});
    // what must still follow the members written so far, and then the closing brace
    const closing = (pending: string[]) => {
      const members = required.filter((name) => !seen.has(name) && !pending.includes(name));
      const lead = seen.size > 0 || pending.length > 0 ? "," : "";
      return members.map((name, k) => `${k === 0 ? lead : ","}${JSON.stringify(name)}:${minimal(propertySchema(name), this.defs)}`).join("") + "}";
    };
    let j = this.skip(i + 1);
    let afterMember = false;
    for (;;) {
      if (j >= this.text.length) return { rest: closing([]) };
      if (this.text[j] === "}") return { end: j + 1 };
      if (afterMember) {
        if (this.text[j] !== ",") return undefined;
        j = this.skip(j + 1);
        if (j >= this.text.length) {
          // a member must follow the comma: the first required one missing, else any
          const name = required.find((n) => !seen.has(n)) ?? Object.keys(properties).find((n) => !seen.has(n)) ?? "_";
          return { rest: `${JSON.stringify(name)}:${minimal(propertySchema(name), this.defs)}${closing([name])}` };
        }
      }
      const key = this.string({}, j);
      if (!key) return undefined;
      if ("rest" in key) {
        // the text ends inside a key: finish it as a property's name that begins so
        const written = JSON.parse(`"${this.text.slice(j + 1).replace(/\\$/, "")}"`) as string;
        const names = [...required, ...Object.keys(properties)].filter((n) => !seen.has(n) && n.startsWith(written));
        const name = names[0] ?? (schema.additionalProperties ? written : undefined);
        if (name === undefined) return undefined;
        return { rest: `${JSON.stringify(name).slice(1 + JSON.stringify(written).length - 2)}:${minimal(propertySchema(name), this.defs)}${closing([name])}` };
      }
      const name = JSON.parse(this.text.slice(j, key.end)) as string;
      j = this.skip(key.end);
      if (j >= this.text.length) return { rest: `:${minimal(propertySchema(name), this.defs)}${closing([name])}` };
      if (this.text[j] !== ":") return undefined;
      const value = this.value(propertySchema(name), j + 1);
      if (!value) return undefined;
      if ("rest" in value) return { rest: value.rest + closing([name]) };
      seen.add(name);
      afterMember = true;
      j = this.skip(value.end);
    }
  }

  private array(schema: Schema, i: number): Parsed | undefined {
    if (this.text[i] !== "[") return undefined;
    const prefixItems = (schema.prefixItems ?? []) as Schema[];
    const itemSchema = (k: number): Schema => prefixItems[k] ?? (schema.items as Schema | undefined) ?? {};
    const minItems = (schema.minItems as number | undefined) ?? prefixItems.length;
    const fill = (count: number) => {
      let out = "";
      for (let k = count; k < minItems; k++) out += `${k > 0 ? "," : ""}${minimal(itemSchema(k), this.defs)}`;
      return out + "]";
    };
    let j = this.skip(i + 1);
    let count = 0;
    for (;;) {
      if (j >= this.text.length) return { rest: fill(count) };
      if (this.text[j] === "]") return { end: j + 1 };
      if (count > 0) {
        if (this.text[j] !== ",") return undefined;
        j = this.skip(j + 1);
        if (j >= this.text.length) return { rest: minimal(itemSchema(count), this.defs) + fill(count + 1) };
      }
      const item = this.value(itemSchema(count), j);
      if (!item) return undefined;
      if ("rest" in item) return { rest: item.rest + fill(count + 1) };
      count++;
      j = this.skip(item.end);
    }
  }

  /** A value of any kind (an empty schema, json_object's members). */
  private any(i: number): Parsed | undefined {
    const c = this.text[i]!;
    if (c === "{") return this.object({ type: "object", additionalProperties: true }, i);
    if (c === "[") return this.array({ type: "array" }, i);
    if (c === '"') return this.string({}, i);
    if (c === "-" || (c >= "0" && c <= "9")) return this.number(i, false);
    return this.literal(["true", "false", "null"], i);
  }
}

/** The shortest value valid against `schema`. */
function minimal(schema: Schema, defs: Record<string, Schema>, depth = 0): string {
  if (depth > 32) return "null";
  const s = typeof schema.$ref === "string" ? defs[schema.$ref.replace("#/$defs/", "")] ?? {} : schema;
  if (s !== schema) return minimal(s, defs, depth + 1);
  const shortest = (values: string[]) => values.reduce((a, b) => (b.length < a.length ? b : a));
  if ("const" in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return shortest(s.enum.map((v) => JSON.stringify(v)));
  if (Array.isArray(s.oneOf)) return shortest((s.oneOf as Schema[]).map((o) => minimal(o, defs, depth + 1)));
  const { type } = s;
  if (Array.isArray(type)) return shortest(type.map((t) => minimal({ ...s, type: t }, defs, depth + 1)));
  switch (type) {
    case "null": return "null";
    case "boolean": return "false";
    case "number": case "integer": return "0";
    case "string": {
      if (s.format === "date") return `"${DATE}"`;
      if (s.format === "time") return `"${TIME}"`;
      if (s.format === "date-time") return `"${DATE}T${TIME}"`;
      return `"${"a".repeat((s.minLength as number | undefined) ?? 0)}"`;
    }
    case "array": {
      const prefixItems = (s.prefixItems ?? []) as Schema[];
      const count = (s.minItems as number | undefined) ?? prefixItems.length;
      return `[${Array.from({ length: count }, (_, k) => minimal(prefixItems[k] ?? (s.items as Schema | undefined) ?? {}, defs, depth + 1)).join(",")}]`;
    }
    case "object": {
      const properties = (s.properties ?? {}) as Record<string, Schema>;
      const required = (s.required ?? []) as string[];
      return `{${required.map((name) => `${JSON.stringify(name)}:${minimal(properties[name] ?? {}, defs, depth + 1)}`).join(",")}}`;
    }
    default: return "null";
  }
}
