// Validate before you schedule: everything that can be checked without the model (sampling
// ranges, schemas and their keywords, tools and tool_choice, message shapes, refused
// parameters) is refused before a model is acquired. A real daemon with several models and
// none loaded answers a set of bad requests on every generating route with 400 in its API's
// envelope, and loads nothing (its /v1/ps/events say so, up to a request that does load).
// Beside it: the pure wire-to-core translators and the core's checks, unit by unit; the
// JSON grammar's number rewrites against the installed node-llama-cpp; a full queue as 503.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { writeTinyModel } from "../dist/core/gguf-writer.js";
import { CoreError } from "../dist/core/types.js";
import { checkChatRequest, checkCompletionRequest, checkCountRequest, checkEmbeddingRequest } from "../dist/core/request-checks.js";
import { prepareSchema } from "../dist/core/json-schema.js";
import { jsonGrammarText, rewriteNumberRules, NUMBER_REWRITES } from "../dist/core/json-grammar.js";
import { chatRequestOf, completionRequestOf, embeddingRequestOf } from "../dist/server/openai.js";
import { messagesCountOf, messagesRequestOf } from "../dist/server/anthropic.js";
import { responsesRequestOf } from "../dist/server/responses.js";
import { HttpProblem, toProblem } from "../dist/server/problem.js";
import { KeyLimits } from "../dist/server/key-limits.js";
import { TEST_MODEL, httpCall, jsonRequest, startServer, tempDir, waitFor, followLifecycle } from "./helpers.js";

/** Text of the client's that no error may quote. */
const MARKER = "Zq7secretMarker";
const user = (content = `hello ${MARKER}`) => [{ role: "user", content }];

/** Runs `fn`, expecting it to throw `Class`; returns the error. */
function refusal(fn, Class) {
  try {
    fn();
  } catch (error) {
    assert.instance(error, Class, `${error?.constructor?.name}: ${error?.message}`);
    assert.not.ok(error.message.includes(MARKER), `the message quotes the request: ${error.message}`);
    return error;
  }
  assert.unreachable("no error");
}

const core = suite("core checks (no model)");

core("sampling ranges, schemas, tools, tool_choice and messages: invalid_request naming the field, never quoting the request", () => {
  const ok = { messages: user() };
  checkChatRequest(ok);
  const cases = [
    [{ temperature: 5 }, "temperature", /^temperature must be a number from 0 to 2$/],
    [{ topP: 2 }, "topP", /^topP must be a number from 0 to 1$/],
    [{ maxTokens: 0 }, "maxTokens", /^maxTokens /],
    [{ seed: 1.5 }, "seed", /an integer/],
    [{ stop: Array(17).fill(MARKER) }, "stop", /at most 16/],
    [{ responseFormat: { type: "json_schema", schema: { type: "object", properties: { [MARKER]: { type: "string", pattern: `^${MARKER}$` } } } } }, "responseFormat", /"pattern" is not supported/],
    [{ responseFormat: { type: "yaml" } }, "responseFormat", /must be text, json_object or json_schema/],
    [{ tools: [{ name: "get", parameters: { type: "object", properties: { n: { type: "integer", multipleOf: 3 } } } }] }, "tools", /"multipleOf" is not supported/],
    [{ tools: [{ name: `bad name ${MARKER}` }] }, "tools", /tools\[0\]\.name must be 1 to 64/],
    [{ tools: [{ name: "get" }], toolChoice: { name: MARKER } }, "toolChoice", /names a function that is not among the tools/],
    [{ toolChoice: "required" }, "toolChoice", /required needs tools/],
    [{ toolChoice: MARKER }, "toolChoice", /must be auto, none, required or a function/],
    [{ parallelToolCalls: "yes" }, "parallelToolCalls", /true or false/],
    [{ messages: [] }, "messages", /non-empty list/],
    [{ messages: [{ role: MARKER, content: "x" }] }, "messages", /messages\[0\]\.role must be/],
    [{ messages: [{ role: "user", content: { text: MARKER } }] }, "messages", /messages\[0\]\.content must be text/],
    [{ messages: [{ role: "tool", content: MARKER, toolCallId: MARKER }] }, "messages", /toolCallId must be the id of a call in an earlier assistant message/],
    [{ messages: [{ role: "assistant", content: "", toolCalls: [{ id: "c1", name: "get" }] }] }, "messages", /toolCalls\[0\] must have an id, a name and arguments/],
    [{ keepAliveMs: "forever" }, "keepAliveMs", /milliseconds/],
    [{ model: 42 }, "model", /served model/],
  ];
  for (const [extra, param, message] of cases) {
    const error = refusal(() => checkChatRequest({ ...ok, ...extra }), CoreError);
    assert.is(error.kind, "invalid_request", error.message);
    assert.is(error.param, param, error.message);
    assert.match(error.message, message);
  }
  // a conversation with a call and its result passes
  checkChatRequest({
    messages: [...user(), { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "get", arguments: "{}" }] }, { role: "tool", toolCallId: "c1", content: "sunny" }],
    tools: [{ name: "get", parameters: { type: "object", properties: {} } }], toolChoice: { name: "get" }, parallelToolCalls: false, temperature: 0, topP: 1, keepAliveMs: -1,
  });
});

core("completions, counts and embeddings: what each reads is checked", () => {
  checkCompletionRequest({ prompt: MARKER, temperature: 2 });
  for (const [extra, param] of [[{ temperature: 2.5 }, "temperature"], [{ prompt: 42 }, "prompt"], [{ responseFormat: { type: "json_schema", schema: { not: {} } } }, "responseFormat"]]) {
    assert.is(refusal(() => checkCompletionRequest({ prompt: MARKER, ...extra }), CoreError).param, param);
  }
  // a count samples nothing: its sampling fields are not its concern, its tools are
  checkCountRequest({ messages: user(), temperature: 9 });
  assert.is(refusal(() => checkCountRequest({ messages: user(), tools: [{ name: "f", parameters: { allOf: [] } }] }), CoreError).param, "tools");
  checkEmbeddingRequest({ input: [MARKER] });
  for (const input of [[], [""], [MARKER, 7], Array(2049).fill("x"), MARKER]) {
    assert.is(refusal(() => checkEmbeddingRequest({ input }), CoreError).param, "input");
  }
});

core("schemas: what node-llama-cpp's grammar builder would quietly change is refused; a tuple with items: false is kept", () => {
  const refused = [
    [{ type: "object", properties: { a: { $ref: `#/$defs/${MARKER}` } } }, /"\$ref" points to no definition/],
    [{ type: "string", minLength: 5, maxLength: 2 }, /"minLength" is greater than "maxLength"/],
    [{ type: "array", minItems: 3, maxItems: 1 }, /"minItems" is greater than "maxItems"/],
    [{ type: "object", minProperties: 2, maxProperties: 1 }, /"minProperties" is greater/],
    [{ type: "object", properties: { a: { type: "string" }, b: { type: "string" } }, maxProperties: 1 }, /"maxProperties" is below the number of properties/],
    [{ type: "array", prefixItems: [{ type: "string" }, { type: "string" }], maxItems: 1 }, /"maxItems" is below the number of prefixItems/],
  ];
  for (const [schema, message] of refused) {
    const error = refusal(() => prepareSchema(schema, "responseFormat"), CoreError);
    assert.is(error.kind, "invalid_request");
    assert.match(error.message, message);
  }
  const tuple = prepareSchema({ type: "array", prefixItems: [{ type: "string" }, { type: "integer" }], items: false }, "schema");
  assert.is(tuple.maxItems, 2, "items: false with prefixItems: exactly the prefix");
  assert.is(prepareSchema({ type: "array", items: false }, "schema").maxItems, 0);
  const defs = prepareSchema({ type: "object", properties: { p: { $ref: "#/definitions/P" } }, definitions: { P: { type: "string" } } }, "schema");
  assert.equal(defs.properties.p, { $ref: "#/$defs/P" });
});

core.run();

const wire = suite("wire-to-core translators (pure)");

wire("OpenAI chat: fields to the core's names; refusals name the wire field and never quote it", () => {
  const request = chatRequestOf({
    messages: [{ role: "developer", content: "be brief" }, { role: "user", content: [{ type: "text", text: "hi" }] }],
    temperature: 0.5, top_p: 0.9, max_completion_tokens: 12, stop: "END", seed: 3,
    response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } },
    tools: [{ type: "function", function: { name: "get", parameters: { type: "object" } } }], tool_choice: { type: "function", function: { name: "get" } },
    parallel_tool_calls: false, keep_alive: "5m",
  }, "tiny");
  assert.equal(request, {
    model: "tiny",
    messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }],
    temperature: 0.5, topP: 0.9, seed: 3, maxTokens: 12, stop: ["END"],
    responseFormat: { type: "json_schema", schema: { type: "object" } },
    tools: [{ name: "get", description: undefined, parameters: { type: "object" } }], toolChoice: { name: "get" }, parallelToolCalls: false,
    keepAliveMs: 300_000,
  });
  checkChatRequest(request);
  const cases = [
    [{ messages: MARKER }, "messages", "invalid_parameter"],
    [{ messages: [{ role: MARKER, content: "x" }] }, "messages[0].role", "invalid_parameter"],
    [{ messages: user(), tools: [{ type: "function", function: { name: "get" } }], tool_choice: { type: "function", function: { name: MARKER } } }, "tool_choice", "invalid_parameter"],
    [{ messages: user(), temperature: MARKER }, "temperature", "invalid_parameter"],
    [{ messages: user(), n: 3 }, "n", "unsupported_parameter"],
    [{ messages: user(), x_temperature: 1 }, "x_temperature", "unsupported_parameter"],
  ];
  for (const [body, param, code] of cases) {
    const error = refusal(() => chatRequestOf(body, "tiny"), HttpProblem);
    assert.is(error.status, 400);
    assert.is(error.code, code);
    assert.is(error.options.param, param);
  }
});

wire("OpenAI completions and embeddings", () => {
  assert.equal(completionRequestOf({ prompt: [MARKER], max_tokens: 4 }, "tiny"), { model: "tiny", prompt: MARKER, maxTokens: 4, stop: undefined, responseFormat: undefined });
  assert.is(refusal(() => completionRequestOf({ prompt: 42 }, "tiny"), HttpProblem).options.param, "prompt");
  assert.is(refusal(() => completionRequestOf({ prompt: [MARKER, MARKER] }, "tiny"), HttpProblem).code, "unsupported_parameter");
  assert.equal(embeddingRequestOf({ input: MARKER, encoding_format: "base64" }, "tiny"), { request: { model: "tiny", input: [MARKER] }, format: "base64" });
  assert.is(refusal(() => embeddingRequestOf({ input: [] }, "tiny"), HttpProblem).options.param, "input");
  assert.is(refusal(() => embeddingRequestOf({ input: [[1, 2]] }, "tiny"), HttpProblem).code, "unsupported_parameter");
  assert.is(refusal(() => embeddingRequestOf({ input: "x", encoding_format: MARKER }, "tiny"), HttpProblem).options.param, "encoding_format");
});

wire("Anthropic messages and count_tokens", () => {
  const body = {
    system: [{ type: "text", text: "sys" }], max_tokens: 9, temperature: 1, top_k: -1, stop_sequences: ["x"],
    messages: [
      { role: "user", content: "q" },
      { role: "assistant", content: [{ type: "text", text: "a" }, { type: "tool_use", id: "toolu_1", name: "get", input: { city: "Oslo" } }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "sunny" }] },
    ],
    tools: [{ name: "get", input_schema: { type: "object" } }], tool_choice: { type: "any", disable_parallel_tool_use: true },
  };
  const request = messagesRequestOf(body, "tiny");
  assert.is(request.maxTokens, 9);
  assert.is(request.topK, undefined, "-1 is unset");
  assert.equal(request.messages.map((m) => m.role), ["system", "user", "assistant", "tool"]);
  assert.equal(request.messages[2].toolCalls, [{ id: "toolu_1", name: "get", arguments: '{"city":"Oslo"}' }]);
  assert.is(request.toolChoice, "required");
  assert.is(request.parallelToolCalls, false);
  checkChatRequest(request);
  const counted = messagesCountOf({ system: body.system, messages: body.messages, tools: body.tools }, "tiny");
  assert.equal(counted.messages, request.messages);
  checkCountRequest(counted);
  assert.is(refusal(() => messagesCountOf({ messages: body.messages, temperature: 1 }, "tiny"), HttpProblem).options.param, "temperature", "a count takes no sampling");
  const cases = [
    [{ ...body, max_tokens: undefined }, "max_tokens"],
    [{ ...body, tool_choice: { type: "tool", name: MARKER } }, "tool_choice.name"],
    [{ ...body, messages: [{ role: MARKER, content: "x" }] }, "messages.0.role"],
    [{ ...body, messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: MARKER }] }] }, "messages.0.content.0.tool_use_id"],
    [{ ...body, output_format: { type: "json_schema", schema: { type: "string", pattern: MARKER } } }, "output_format.schema"],
  ];
  for (const [wrong, param] of cases) {
    const error = refusal(() => messagesRequestOf(wrong, "tiny"), Error);
    assert.is(error.status ?? 400, 400);
    assert.is(error.options?.param ?? error.param, param, error.message);
  }
});

wire("Responses: input items, instructions, text.format, tools", () => {
  const { request, instructions } = responsesRequestOf({
    instructions: "sys", input: [{ role: "user", content: [{ type: "input_text", text: "q" }] }, { type: "function_call", call_id: "c1", name: "get", arguments: "{}" }, { type: "function_call_output", call_id: "c1", output: "ok" }],
    max_output_tokens: 20, text: { format: { type: "json_object" } }, tools: [{ type: "function", name: "get", parameters: { type: "object" } }], tool_choice: "required", max_tool_calls: 1,
  }, "tiny");
  assert.is(instructions, "sys");
  assert.equal(request.messages.map((m) => m.role), ["system", "user", "assistant", "tool"]);
  assert.is(request.maxTokens, 20);
  assert.equal(request.responseFormat, { type: "json_object" });
  assert.is(request.parallelToolCalls, false);
  checkChatRequest(request);
  for (const [body, param] of [
    [{ input: [] }, "input"],
    [{ input: "x", store: true }, "store"],
    [{ input: "x", tools: [{ type: "function", name: "get" }], tool_choice: { type: "function", name: MARKER } }, "tool_choice.name"],
    [{ input: [{ type: "function_call_output", call_id: MARKER, output: "x" }] }, "input[0].call_id"],
  ]) {
    assert.is(refusal(() => responsesRequestOf(body, "tiny"), HttpProblem).options.param, param);
  }
});

wire("a full queue is 503 with Retry-After (busy); a key's own limits stay 429", () => {
  const busy = toProblem(new CoreError("overloaded", "all sequences are busy and the queue is full (0 waiting)"));
  assert.is(busy.status, 503);
  assert.is(busy.code, "overloaded");
  assert.is(busy.options.headers["Retry-After"], "1");
  assert.is(toProblem(new CoreError("overloaded", "the load queue is full", { retryAfterS: 3 })).options.headers["Retry-After"], "3");
  const limits = new KeyLimits([{ label: "k", rpm: 1 }]);
  limits.admit("k", 0)();
  const limited = refusal(() => limits.admit("k", 1), HttpProblem);
  assert.is(limited.status, 429);
  assert.ok(Number(limited.options.headers["Retry-After"]) >= 1);
});

wire.run();

const grammar = suite("JSON grammar: the number rewrites");
grammar.before(async (ctx) => {
  ctx.llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
});
grammar.after(async ({ llama }) => { await llama.dispose(); });

grammar("each rewrite matches the installed node-llama-cpp's number rules, and no exponent of 16 digits is left", async ({ llama }) => {
  const schema = prepareSchema({ type: "object", properties: { i: { type: "integer" }, n: { type: "number" }, any: { type: "object", additionalProperties: true } } }, "schema");
  const text = await jsonGrammarText(llama, schema);
  for (const rewrite of NUMBER_REWRITES) assert.ok(text.split("\n").includes(rewrite.to), `${rewrite.name}: ${text}`);
  assert.not.ok(/\[eE\] \[-\+\]\? \("0" \| \[1-9\] \[0-9\]\{0,15\}\)/.test(text), text);
  // a schema with no number at all: nothing to rewrite, and no error
  assert.not.match(await jsonGrammarText(llama, prepareSchema({ type: "string" }, "schema")), /number-rule/);
});

grammar("a rule that no longer reads as expected is an internal error naming the rewrite, never quoting the grammar", async ({ llama }) => {
  const { grammar: original } = await llama.createGrammarForJsonSchema({ type: "object", properties: { [MARKER]: { type: "integer" } } });
  const changed = [
    original.replace("[0-9]{0,15}", "[0-9]{0,16}"),
    original.replaceAll("integer-number-rule", "int-rule"),
  ];
  for (const text of changed) {
    assert.is.not(text, original);
    const error = refusal(() => rewriteNumberRules(text), CoreError);
    assert.is(error.kind, "internal");
    assert.match(error.message, /^JSON grammar: /);
  }
  assert.match(refusal(() => rewriteNumberRules(changed[0]), CoreError).message, /"integers: at most 15 digits, no exponent"/);
  // a property named like an exponent's class is the client's text, not a rule
  const { grammar: named } = await llama.createGrammarForJsonSchema({ type: "object", properties: { "[eE]": { type: "string" } } });
  assert.is(rewriteNumberRules(named), named);
});

grammar.run();

/** Several models in a directory, none loaded at start. */
async function modelsDir() {
  const dir = join(tempDir(), "models");
  mkdirSync(dir, { recursive: true });
  await Promise.all([
    writeTinyModel(join(dir, "alpha.gguf"), { ...TEST_MODEL, seed: 1 }),
    writeTinyModel(join(dir, "beta.gguf"), { ...TEST_MODEL, embeddingLength: 96, seed: 2 }),
  ]);
  return dir;
}


const SCHEMA_PATTERN = { type: "object", properties: { [MARKER]: { type: "string", pattern: `^${MARKER}$` } } };
const SCHEMA_NO_DEF = { type: "object", properties: { a: { $ref: "#/$defs/Missing" } } };
const PARAMS_MULTIPLE = { type: "object", properties: { n: { type: "integer", multipleOf: 2 } } };
const chatBody = (extra) => ({ model: "beta", messages: user(), max_tokens: 4, ...extra });
const anthropicBody = (extra) => ({ model: "beta", messages: user(), max_tokens: 4, ...extra });
const responsesBody = (extra) => ({ model: "beta", input: `hi ${MARKER}`, ...extra });

/** [route, body, API]: each must be refused with 400 before any model is acquired. */
const BAD = [
  ["/v1/chat/completions", chatBody({ temperature: 5 }), "openai"],
  ["/v1/chat/completions", chatBody({ top_p: 2, stream: true }), "openai"],
  ["/v1/chat/completions", chatBody({ max_tokens: 0 }), "openai"],
  ["/v1/chat/completions", chatBody({ response_format: { type: "json_schema", json_schema: { name: "x", schema: SCHEMA_PATTERN } } }), "openai"],
  ["/v1/chat/completions", chatBody({ response_format: { type: "json_schema", json_schema: { name: "x", schema: SCHEMA_NO_DEF } }, stream: true }), "openai"],
  ["/v1/chat/completions", chatBody({ tools: [{ type: "function", function: { name: "get", parameters: PARAMS_MULTIPLE } }] }), "openai"],
  ["/v1/chat/completions", chatBody({ tools: [{ type: "function", function: { name: "get" } }], tool_choice: { type: "function", function: { name: "absent" } } }), "openai"],
  ["/v1/chat/completions", chatBody({ messages: [{ role: "robot", content: MARKER }] }), "openai"],
  ["/v1/chat/completions", chatBody({ logprobs: true }), "openai"],
  ["/v1/completions", { model: "beta", prompt: MARKER, temperature: 5 }, "openai"],
  ["/v1/completions", { model: "beta", prompt: MARKER, top_p: 2, stream: true }, "openai"],
  ["/v1/completions", { model: "beta", prompt: MARKER, response_format: { type: "json_schema", json_schema: { name: "x", schema: SCHEMA_PATTERN } } }, "openai"],
  ["/v1/completions", { model: "beta", prompt: 42 }, "openai"],
  ["/v1/embeddings", { model: "beta", input: ["", MARKER] }, "openai"],
  ["/v1/messages", anthropicBody({ temperature: 5 }), "anthropic"],
  ["/v1/messages", anthropicBody({ top_p: 2, stream: true }), "anthropic"],
  ["/v1/messages", anthropicBody({ output_config: { format: { type: "json_schema", schema: SCHEMA_PATTERN } } }), "anthropic"],
  ["/v1/messages", anthropicBody({ tools: [{ name: "get", input_schema: PARAMS_MULTIPLE }] }), "anthropic"],
  ["/v1/messages", anthropicBody({ tools: [{ name: "get", input_schema: { type: "object" } }], tool_choice: { type: "tool", name: "absent" } }), "anthropic"],
  ["/v1/messages", anthropicBody({ messages: [{ role: "robot", content: MARKER }] }), "anthropic"],
  ["/v1/messages/count_tokens", { model: "beta", messages: user(), tools: [{ name: "get", input_schema: SCHEMA_NO_DEF }] }, "anthropic"],
  ["/v1/responses", responsesBody({ temperature: 5 }), "openai"],
  ["/v1/responses", responsesBody({ top_p: 2, stream: true }), "openai"],
  ["/v1/responses", responsesBody({ max_output_tokens: 0 }), "openai"],
  ["/v1/responses", responsesBody({ text: { format: { type: "json_schema", name: "x", schema: SCHEMA_PATTERN } } }), "openai"],
  ["/v1/responses", responsesBody({ tools: [{ type: "function", name: "get", parameters: PARAMS_MULTIPLE }] }), "openai"],
  ["/v1/responses", responsesBody({ tools: [{ type: "function", name: "get" }], tool_choice: { type: "function", name: "absent" } }), "openai"],
  ["/v1/responses", responsesBody({ input: [{ type: "message", role: "robot", content: MARKER }] }), "openai"],
];

const daemon = suite("a daemon: bad requests load nothing");

daemon("every bad request on every route gets its 400 in its API's envelope, and 0 models load, evict or unload", async () => {
  const server = await startServer(["--models-dir", await modelsDir()]);
  try {
    const followed = await followLifecycle(server);
    assert.equal(followed.events[0], { type: "snapshot", models: [] }, "nothing loaded at start");
    for (const [path, body, api] of BAD) {
      const what = `${path} ${JSON.stringify(body).replaceAll(MARKER, "M").slice(0, 160)}`;
      const res = await httpCall(`${server.url}${path}`, jsonRequest(body));
      assert.is(res.status, 400, `${what}: ${res.text}`);
      assert.match(res.headers["content-type"], /problem\+json/, what);
      assert.not.ok(res.text.includes(MARKER), `${what}: the request is quoted: ${res.text}`);
      assert.ok(typeof res.body.error.message === "string" && res.body.error.message.length > 0, what);
      assert.is(res.body.error.type, "invalid_request_error", what);
      if (api === "anthropic") assert.is(res.body.type, "error", what);
    }
    assert.equal((await httpCall(`${server.url}/v1/ps`)).body.data, [], "nothing loaded, nothing loading");
    // a fence: a good request loads its model, and its load event comes after any the bad ones caused
    const good = await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ model: "alpha", messages: user(), max_tokens: 2 }));
    assert.is(good.status, 200, good.text);
    await waitFor(() => followed.events.some((e) => e.type === "load" && e.model === "alpha"), { what: "the fence's load event" });
    await followed.stop();
    const lifecycle = followed.events.slice(1);
    assert.equal(lifecycle.map((e) => `${e.type} ${e.model}`), ["load alpha"], "the only load is the good request's");
  } finally {
    assert.is(await server.stop(), 0, server.stderr());
  }
});

daemon.run();
