/**
 * node-llama-cpp's grammar for a JSON schema, with numbers as a JavaScript client reads
 * them: its rules let a number carry a 16-digit exponent, which JSON.parse turns into
 * Infinity (no longer a number, nor an integer, to a validator). So integers are kept
 * within JavaScript's safe range (at most 15 digits, no exponent: what zod's bounds ask),
 * and exponents to two digits. The answer is still valid against the schema; only the
 * range the grammar lets the model write is narrower.
 */
import type { Llama } from "node-llama-cpp";
import type { Schema } from "./json-schema.js";

export async function jsonGrammarText(llama: Llama, schema: Schema): Promise<string> {
  const { grammar } = await llama.createGrammarForJsonSchema(schema as never);
  const exponent = /\(\[eE\] \[-\+\]\? \("0" \| \[1-9\] \[0-9\]\{0,15\}\)\)\?/;
  const integer = /^(integer-number-rule ::= .*?)\s*\(\[eE\][^\n]*\)\?$/m;
  return grammar
    .replace(integer, "$1")
    .replace(new RegExp(exponent.source, "g"), '([eE] [-+]? [0-9]{1,2})?')
    .replace(/^(integer-number-rule ::= .*?)\[1-9\] \[0-9\]\{0,15\}/m, "$1[1-9] [0-9]{0,14}");
}
