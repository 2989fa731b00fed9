/**
 * node-llama-cpp's grammar for a JSON schema, with numbers as a JavaScript client reads
 * them: its rules let a number carry a 16-digit exponent, which JSON.parse turns into
 * Infinity (no longer a number, nor an integer, to a validator). So integers are kept
 * within JavaScript's safe range (at most 15 digits, no exponent: what zod's bounds ask),
 * and exponents to two digits. The answer is still valid against the schema; only the
 * range the grammar lets the model write is narrower.
 *
 * node-llama-cpp has no option for this (its JSON-schema grammar takes the schema alone),
 * so its number rules are rewritten in the text. Each rewrite must match the rule exactly
 * as node-llama-cpp 3.21 writes it: a rule that reads otherwise (an upgrade changed it), or
 * an exponent in a rule no rewrite knows, is an internal error naming the rewrite, never
 * the grammar (whose text holds the client's schema), rather than a patch that silently
 * does nothing. tests/json.test.js checks that they match the installed node-llama-cpp.
 */
import type { Llama } from "node-llama-cpp";
import type { Schema } from "./json-schema.js";
import { CoreError } from "./types.js";

interface NumberRewrite {
  /** the rule it rewrites (node-llama-cpp's reserved names: GbnfNumber) */
  rule: string;
  /** what it does, for the error that says it no longer matches */
  name: string;
  /** the rule's whole definition line, as node-llama-cpp writes it */
  from: string;
  to: string;
}

const DIGITS = '"-"? ("0" | [1-9] [0-9]{0,15})';
const EXPONENT = ' ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';

export const NUMBER_REWRITES: readonly NumberRewrite[] = [
  {
    rule: "integer-number-rule",
    name: "integers: at most 15 digits, no exponent",
    from: `integer-number-rule ::= ${DIGITS}${EXPONENT}`,
    to: 'integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,14})',
  },
  {
    rule: "fractional-number-rule",
    name: "numbers: an exponent of at most 2 digits",
    from: `fractional-number-rule ::= ${DIGITS} ("." [0-9]{1,16})?${EXPONENT}`,
    to: 'fractional-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?',
  },
];

export async function jsonGrammarText(llama: Llama, schema: Schema): Promise<string> {
  const { grammar } = await llama.createGrammarForJsonSchema(schema as never);
  return rewriteNumberRules(grammar);
}

/** A grammar text's number rules rewritten (see above); throws `internal` when node-llama-cpp's text is not what the rewrites expect. */
export function rewriteNumberRules(grammar: string): string {
  return grammar.split("\n").map((line) => {
    const rewrite = NUMBER_REWRITES.find((r) => line.startsWith(`${r.rule} ::=`));
    if (rewrite) {
      if (line.trimEnd() !== rewrite.from) throw patchFailed(`the rewrite "${rewrite.name}" does not match node-llama-cpp's ${rewrite.rule}`);
      return rewrite.to;
    }
    // an exponent outside the known rules (their names changed, a rule of a new kind): the range it allows is not narrowed
    if (writesExponent(line)) throw patchFailed("a rule outside the number rewrites writes an exponent");
    return line;
  }).join("\n");
}

/**
 * Whether a rule's text has the character class `[eE]` (an exponent), its string literals
 * (which hold the schema's property names and constants) and other classes skipped whole,
 * as GBNF reads them.
 */
function writesExponent(line: string): boolean {
  for (let i = 0; i < line.length;) {
    const c = line[i]!;
    if (c !== '"' && c !== "[") {
      i++;
      continue;
    }
    const close = c === '"' ? '"' : "]";
    let j = i + 1;
    while (j < line.length && line[j] !== close) j += line[j] === "\\" ? 2 : 1;
    if (c === "[" && line.slice(i, j + 1) === "[eE]") return true;
    i = j + 1;
  }
  return false;
}

function patchFailed(what: string): CoreError {
  return new CoreError("internal", `JSON grammar: ${what} (was node-llama-cpp upgraded? see src/core/json-grammar.ts)`);
}
