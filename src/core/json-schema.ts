/**
 * JSON schemas for constrained output: what a client sends (OpenAI's strict mode, zod's
 * output, hand-written schemas) checked against what the grammar can enforce, and
 * rewritten into the form node-llama-cpp's JSON-schema grammar takes. A keyword the
 * grammar cannot enforce is refused, naming it: never silently ignored. Messages name
 * only keywords of JSON Schema itself, never a property name or value of the client's:
 * they reach the audit log.
 */
import { CoreError } from "./types.js";

/** A schema as node-llama-cpp's grammar takes it (and as json-completion.ts reads it). */
export type Schema = Record<string, unknown>;

/** Keywords the grammar enforces. */
const ENFORCED = new Set([
  "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
  "minLength", "maxLength", "minProperties", "maxProperties", "enum", "const", "oneOf", "anyOf", "$ref", "$defs", "definitions", "format",
]);
/** Keywords that say something about a value without constraining it: dropped. */
const ANNOTATIONS = new Set([
  "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "nullable",
]);
/** JSON Schema's validation keywords that the grammar cannot enforce: refused by name. */
const KNOWN_UNENFORCEABLE = new Set([
  "pattern", "multipleOf", "exclusiveMinimum", "exclusiveMaximum", "allOf", "not", "if", "then", "else", "dependentRequired",
  "dependentSchemas", "patternProperties", "propertyNames", "uniqueItems", "contains", "minContains", "maxContains",
  "unevaluatedProperties", "unevaluatedItems", "contentEncoding", "contentMediaType", "contentSchema", "$dynamicRef", "$anchor",
]);
const FORMATS = new Set(["date", "time", "date-time"]);
const SIMPLE_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
const TYPES = new Set([...SIMPLE_TYPES, "object", "array"]);
/** JavaScript's safe integers: the bounds zod writes on every integer, which every grammar keeps (json-grammar.ts) */
const SAFE = Number.MAX_SAFE_INTEGER;
const MAX_DEPTH = 48;

/**
 * Checks `input` and returns it in the grammar's form; throws `invalid_request` naming the
 * first keyword the grammar cannot enforce, or whose meaning node-llama-cpp's grammar
 * builder would quietly change (a `$ref` to no definition becomes "any value"; a maximum
 * below its minimum is raised to it). Needs no model: the core calls it before it acquires
 * one. `param` names the schema in messages.
 */
export function prepareSchema(input: unknown, param: string): Schema {
  if (!isObject(input)) throw refuse(param, "", "must be a JSON schema object");
  const names = new Set<string>();
  for (const key of ["$defs", "definitions"]) {
    const list = input[key];
    if (list === undefined) continue;
    if (!isObject(list)) throw refuse(param, key, "must be an object of schemas");
    for (const name of Object.keys(list)) names.add(name);
  }
  const state = { param, names };
  const defs: Record<string, Schema> = {};
  for (const key of ["$defs", "definitions"]) {
    const list = input[key] as Record<string, unknown> | undefined;
    for (const [name, def] of Object.entries(list ?? {})) defs[name] = convert(def, state, 1);
  }
  const schema = convert(input, state, 0);
  if (Object.keys(defs).length > 0) schema.$defs = defs;
  return schema;
}

/** `names`: the definitions a `$ref` may point to (the root's `$defs` and `definitions`). */
interface State {
  param: string;
  names: Set<string>;
}

/** Bounds whose minimum above the maximum the grammar builder would not refuse but quietly raise the maximum to. */
const BOUNDS = [["minLength", "maxLength"], ["minItems", "maxItems"], ["minProperties", "maxProperties"]] as const;

function convert(input: unknown, state: State, depth: number): Schema {
  if (depth > MAX_DEPTH) throw refuse(state.param, "", `nests deeper than ${MAX_DEPTH} levels`);
  // `true` and `{}` accept any value
  if (input === true) return {};
  if (!isObject(input)) throw refuse(state.param, "", "has a subschema that is not a schema object");
  const out: Schema = {};
  for (const [key, value] of Object.entries(input)) {
    if (key.startsWith("x-") || ANNOTATIONS.has(key) || key === "$defs" || key === "definitions") continue;
    if (key === "minimum" || key === "maximum") {
      // zod writes JavaScript's safe-integer bounds on every integer: kept by every grammar
      if (input.type === "integer" && Math.abs(value as number) >= SAFE) continue;
      throw refuse(state.param, key, "is not supported: the grammar cannot enforce numeric bounds");
    }
    if (!ENFORCED.has(key)) {
      // a keyword of JSON Schema's own is named; anything else is the client's text, and is not
      if (KNOWN_UNENFORCEABLE.has(key)) throw refuse(state.param, key, "is not supported: the grammar cannot enforce it");
      throw refuse(state.param, "", "holds a keyword that is not JSON Schema's (extensions must start with x-)");
    }
    switch (key) {
      case "properties": {
        if (!isObject(value)) throw refuse(state.param, key, "must be an object of schemas");
        out.properties = Object.fromEntries(Object.entries(value).map(([name, s]) => [name, convert(s, state, depth + 1)]));
        break;
      }
      case "items":
        // false: no item past prefixItems (set below, once prefixItems and maxItems are read)
        if (value !== false) out.items = convert(value, state, depth + 1);
        break;
      case "additionalProperties":
        out.additionalProperties = typeof value === "boolean" ? value : convert(value, state, depth + 1);
        break;
      case "prefixItems": case "anyOf": case "oneOf": {
        if (!Array.isArray(value) || value.length === 0) throw refuse(state.param, key, "must be a non-empty list of schemas");
        // for generating, anyOf and oneOf are the same: one of the alternatives is written
        out[key === "anyOf" ? "oneOf" : key] = value.map((s) => convert(s, state, depth + 1));
        break;
      }
      case "$ref": {
        const match = typeof value === "string" ? /^#\/(?:\$defs|definitions)\/([^/]+)$/.exec(value) : null;
        if (!match) throw refuse(state.param, key, "is supported only as #/$defs/NAME or #/definitions/NAME");
        if (!state.names.has(match[1]!)) throw refuse(state.param, key, "points to no definition in $defs or definitions");
        out.$ref = `#/$defs/${match[1]}`;
        break;
      }
      case "format":
        if (typeof value !== "string" || !FORMATS.has(value)) throw refuse(state.param, key, `is supported only as ${[...FORMATS].join(", ")}`);
        out.format = value;
        break;
      case "type": {
        const types = Array.isArray(value) ? value : [value];
        if (types.length === 0 || types.some((t) => typeof t !== "string" || !TYPES.has(t))) throw refuse(state.param, key, `must be one of ${[...TYPES].join(", ")} or a list of them`);
        out.type = value;
        break;
      }
      case "required":
        if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) throw refuse(state.param, key, "must be a list of property names");
        out.required = value;
        break;
      case "enum":
        if (!Array.isArray(value) || value.length === 0 || value.some((v) => v !== null && typeof v === "object")) throw refuse(state.param, key, "must be a non-empty list of strings, numbers, booleans or null");
        out.enum = value;
        break;
      case "const":
        if (value !== null && typeof value === "object") throw refuse(state.param, key, "must be a string, number, boolean or null");
        out.const = value;
        break;
      default:
        if (typeof value !== "number" || !Number.isInteger(value) || value < 0) throw refuse(state.param, key, "must be a non-negative integer");
        out[key] = value;
    }
  }
  if (input.items === false) {
    const prefix = Array.isArray(input.prefixItems) ? input.prefixItems.length : 0;
    out.maxItems = typeof out.maxItems === "number" ? Math.min(out.maxItems, prefix) : prefix;
  }
  checkBounds(out, state);
  if (input.nullable === true) return { oneOf: [splitTypes(out), { type: "null" }] };
  return splitTypes(out);
}

/**
 * Bounds the grammar can only meet by changing them, refused: a minimum above its maximum,
 * and a maximum below what the grammar always writes (every property of `properties`, every
 * item of `prefixItems`: node-llama-cpp writes them all, and would raise the maximum).
 */
function checkBounds(schema: Schema, state: State): void {
  for (const [min, max] of BOUNDS) {
    if (typeof schema[min] === "number" && typeof schema[max] === "number" && (schema[min] as number) > (schema[max] as number)) {
      throw refuse(state.param, min, `is greater than "${max}": no value can meet both`);
    }
  }
  if (typeof schema.maxProperties === "number" && isObject(schema.properties) && schema.maxProperties < Object.keys(schema.properties).length) {
    throw refuse(state.param, "maxProperties", "is below the number of properties, which the grammar always writes all of");
  }
  if (typeof schema.maxItems === "number" && Array.isArray(schema.prefixItems) && schema.maxItems < schema.prefixItems.length) {
    throw refuse(state.param, "maxItems", "is below the number of prefixItems, which the grammar always writes all of");
  }
}

/** `type: ["object", "null"]` as the grammar takes it: one alternative per type. */
function splitTypes(schema: Schema): Schema {
  const { type } = schema;
  if (!Array.isArray(type)) return schema;
  // the grammar takes a list of simple types alone; with other keywords, one alternative each
  if (type.every((t) => SIMPLE_TYPES.has(t as string)) && Object.keys(schema).length === 1) return schema;
  return { oneOf: type.map((t) => ({ ...schema, type: t })) };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `keyword`: one of JSON Schema's own, or "" for the schema as a whole. */
function refuse(param: string, keyword: string, message: string): CoreError {
  return new CoreError("invalid_request", `${param}${keyword ? `: "${keyword}"` : ""} ${message}`, { param });
}
