// The schema checks, the number rules and the JSON ending that constrained answers rely
// on: every start of a valid value must end, by the ending completeJson gives, in JSON
// that the schema validates (checked by Ajv, as clients check it).
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import Ajv from "ajv";
import { prepareSchema } from "../dist/core/json-schema.js";
import { completeJson } from "../dist/core/json-completion.js";
import { jsonGrammarText } from "../dist/core/json-grammar.js";
import { STRICT_SCHEMA } from "./fixtures/schemas.js";

const CASES = [
  [STRICT_SCHEMA, { name: "Al \"x\" \\ \u00e9", age: -12, tags: ["red", "green"], ok: true, nested: { x: 1.5e3, when: "2024-05-06" }, choice: { id: 1, label: "one" }, note: null }],
  [{ type: "object", properties: { list: { type: "array", items: { $ref: "#/definitions/P" }, minItems: 2 } }, required: ["list"], definitions: { P: { type: "object", properties: { n: { type: "number" } }, required: ["n"] } } },
    { list: [{ n: 1 }, { n: -2.5 }, { n: 3e-2 }] }],
  [{ type: "object", additionalProperties: true }, { free: [1, { x: "y" }, null, true], other: "z" }],
];

/**
 * Whether the grammar accepts `text` as a whole answer (node-llama-cpp's JSON grammars end
 * an answer with blank lines). _testText is internal to node-llama-cpp (pinned exactly):
 * the only way to run text through the native grammar itself.
 */
const accepts = (grammar, text) => grammar._testText(`${text}\n\n\n\n`);

const completion = suite("JSON endings");
completion.before(async (ctx) => {
  ctx.llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
});
completion.after(async ({ llama }) => { await llama.dispose(); });

completion("every start of a valid value ends in JSON that the schema validates", async () => {
  const ajv = new Ajv({ strict: false, formats: { date: /^\d{4}-\d{2}-\d{2}$/, time: true, "date-time": true } });
  let checked = 0;
  for (const [raw, example] of CASES) {
    const schema = prepareSchema(raw, "schema");
    const validate = ajv.compile(raw);
    assert.ok(validate(example), "the example fits its own schema");
    for (const text of [JSON.stringify(example), JSON.stringify(example, null, 4), JSON.stringify(example, null, "\t")]) {
      for (let n = 0; n <= text.length; n++) {
        const prefix = text.slice(0, n);
        const rest = completeJson(schema, prefix);
        assert.type(rest, "string", `no ending for ${JSON.stringify(prefix)}`);
        const whole = prefix + rest;
        assert.ok(validate(JSON.parse(whole)), `${JSON.stringify(whole)}: ${ajv.errorsText(validate.errors)}`);
        checked++;
      }
    }
  }
  assert.ok(checked > 600);
});

completion("numbers stay finite and integers safe: no value a JavaScript client would read as Infinity", async ({ llama }) => {
  const schema = prepareSchema({ type: "object", properties: { i: { type: "integer" }, n: { type: "number" } }, required: ["i", "n"] }, "schema");
  const grammar = await llama.createGrammar({ grammar: await jsonGrammarText(llama, schema) });
  assert.ok(accepts(grammar, '{"i": -123456789012345, "n": -1.5e-99}'));
  for (const bad of ['{"i": 1e3, "n": 1}', '{"i": 1234567890123456, "n": 1}', '{"i": 1, "n": 1e999}', '{"i": 1, "n": 1E+308}']) {
    assert.not.ok(accepts(grammar, bad), bad);
  }
});

completion("text that is not a start of a valid value has no ending", () => {
  const schema = prepareSchema(STRICT_SCHEMA, "schema");
  for (const bad of ["[", "{\"name\": 1", "nul", "{\"name\": \"a\" ]"]) assert.is(completeJson(schema, bad), undefined, bad);
});

const schemas = suite("schemas");

schemas("OpenAI's strict mode and zod's output are accepted; annotations go, constraints stay", () => {
  const schema = prepareSchema(STRICT_SCHEMA, "schema");
  assert.not.ok("minimum" in schema.properties.age, "zod's safe-integer bounds are kept by every grammar, not refused");
  assert.not.ok("$schema" in schema);
  assert.not.ok("description" in schema.properties.name);
  assert.ok(schema.$defs.Item, "$defs stay, for $ref");
  assert.ok(Array.isArray(schema.properties.choice.oneOf), "anyOf becomes the grammar's oneOf");
});

schemas("a keyword the grammar cannot enforce is refused by name, never ignored", () => {
  for (const keyword of ["pattern", "multipleOf", "allOf", "not", "uniqueItems", "patternProperties", "exclusiveMinimum"]) {
    const property = keyword === "allOf" || keyword === "not" ? { [keyword]: keyword === "allOf" ? [{ type: "string" }] : { type: "string" } } : { type: "string", [keyword]: keyword === "uniqueItems" ? true : keyword === "patternProperties" ? {} : keyword === "pattern" ? "^a" : 2 };
    try {
      prepareSchema({ type: "object", properties: { secretField: property } }, "response_format");
      assert.unreachable(`${keyword} accepted`);
    } catch (error) {
      assert.is(error.kind, "invalid_request");
      assert.match(error.message, new RegExp(`"${keyword}" is not supported`));
      assert.not.match(error.message, /secretField/, "the client's property names stay out of messages (they reach the audit log)");
    }
  }
});

schemas("an unknown keyword is refused without quoting it; a non-object is refused", () => {
  for (const [input, pattern] of [
    [{ type: "object", properties: { a: { type: "string", secretWord: 1 } } }, /not JSON Schema.s/],
    [[1, 2], /must be a JSON schema object/],
    [{ type: "tuple" }, /type/],
  ]) {
    try {
      prepareSchema(input, "schema");
      assert.unreachable("accepted");
    } catch (error) {
      assert.match(error.message, pattern);
      assert.not.match(error.message, /secret/);
    }
  }
});

completion.run();
schemas.run();
