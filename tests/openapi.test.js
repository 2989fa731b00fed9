// Conformance to OpenAI's own OpenAPI document (openai/openai-openapi, vendored and cut to
// what mlxs serves in tests/fixtures/openai-openapi): a response of every OpenAI route,
// streamed and not, each event of each stream, and the error bodies, validated with Ajv
// against the schema the spec names for that route, status and content type. When the
// spec moves (extract.js vendors a newer commit) or mlxs drifts, this fails and says where.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2019 from "ajv/dist/2019.js";
import { ROOT, httpCall, jsonRequest, startServer, tempDir, testModel } from "./helpers.js";

const spec = JSON.parse(readFileSync(join(ROOT, "tests/fixtures/openai-openapi/openapi.subset.json"), "utf8"));

/**
 * The document is OpenAPI 3.1 (JSON Schema 2019-09's $recursiveRef included) but still
 * writes some nullable values the 3.0 way, `nullable: true` beside a type or a $ref;
 * that means "or null", which JSON Schema says with anyOf.
 */
function jsonSchemaOf(node) {
  if (Array.isArray(node)) return node.map(jsonSchemaOf);
  if (node === null || typeof node !== "object") return node;
  const out = Object.fromEntries(Object.entries(node).map(([key, value]) => [key, jsonSchemaOf(value)]));
  if (out.nullable !== true) return out;
  const { nullable, ...rest } = out;
  return { anyOf: [rest, { type: "null" }] };
}

// formats (unixtime, float, date ...) are the spec's annotations, not checks clients make
const ajv = new Ajv2019({ strict: false, validateFormats: false, allErrors: true });
ajv.addSchema({ ...spec, components: jsonSchemaOf(spec.components) }, "openai");
const { schemas } = spec.components;
const refOf = (schema) => schema.$ref.replace(/^#/, "openai#");

/** The validator of what the spec says `METHOD path` answers with `status` as `type`. */
function responseSchema(method, path, status = "200", type = "application/json") {
  let response = spec.paths[path]?.[method.toLowerCase()]?.responses?.[status];
  assert.ok(response, `the spec declares ${method} ${path} ${status}`);
  if (response.$ref) response = spec.components.responses[response.$ref.split("/").pop()];
  const schema = response.content?.[type]?.schema;
  assert.ok(schema, `the spec declares ${method} ${path} ${status} as ${type}`);
  return ajv.getSchema(refOf(schema));
}
const schemaNamed = (name) => ajv.getSchema(`openai#/components/schemas/${name}`);

/** ResponseStreamEvent is a union: each event is checked against its own member, found by `type`. */
const streamEventSchemas = new Map(schemas.ResponseStreamEvent.anyOf.map((member) => {
  const name = member.$ref.split("/").pop();
  const type = schemas[name].properties?.type;
  return [type?.enum?.[0] ?? type?.const, name];
}));

const validated = { bodies: 0, events: 0 };

/** Fails with Ajv's errors and the body's start unless `value` conforms. */
function conforms(validate, value, what, kind = "bodies") {
  const ok = validate(value);
  assert.ok(ok, `${what} does not conform to the OpenAPI spec:\n${(validate.errors ?? []).map((e) => `  ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)} (${e.schemaPath})`).join("\n")}\nin ${JSON.stringify(value).slice(0, 1500)}`);
  validated[kind]++;
}

/** A POST whose answer is server-sent events: each event's name (if any) and parsed data, [DONE] left out. */
async function sseCall(url, body, headers) {
  const res = await httpCall(url, jsonRequest({ ...body, stream: true }, headers));
  assert.is(res.status, 200, res.text.slice(0, 500));
  assert.match(res.headers["content-type"], /^text\/event-stream/);
  const events = res.text.split(/\n\n/).map((block) => ({
    event: /^event: ?(.*)$/m.exec(block)?.[1],
    data: block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.replace(/^data: ?/, "")).join("\n"),
  })).filter((e) => e.data);
  assert.is(events.at(-1).data === "[DONE]", !url.endsWith("/v1/responses"), "chat and completions streams end with [DONE], Responses streams with their last event");
  return events.filter((e) => e.data !== "[DONE]").map((e) => ({ event: e.event, data: JSON.parse(e.data) }));
}

const KEY = "openapi-conformance-key-1";
const LIMITED = "openapi-one-request-key-2";
const auth = (key = KEY) => ({ authorization: `Bearer ${key}` });
const state = {};
const post = (path, body, key) => httpCall(`${state.server.url}${path}`, jsonRequest(body, auth(key)));
const get = (path, key) => httpCall(`${state.server.url}${path}`, { headers: auth(key) });

const WEATHER = {
  name: "get_weather",
  description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 }, days: { type: "integer" } }, required: ["city", "days"], additionalProperties: false },
};
const PERSON = { type: "object", properties: { name: { type: "string", maxLength: 10 }, age: { type: "integer" } }, required: ["name", "age"], additionalProperties: false };
// budgets well past what the bounded schemas need, so that answers end by themselves
const chat = (extra = {}) => ({ model: "tiny", messages: [{ role: "user", content: "Say hello." }], max_tokens: 12, temperature: 0, ...extra });

const test = suite("OpenAI's OpenAPI spec");
test.before(async () => {
  const keys = join(tempDir(), "keys");
  writeFileSync(keys, `conformance ${KEY}\nlimited ${LIMITED} rpm=1\n`);
  state.server = await startServer(["--model", await testModel(), "--parallel", "2", "--api-keys-file", keys]);
});
test.after(async () => {
  await state.server?.stop();
  console.log(`validated ${validated.bodies} bodies and ${validated.events} stream events against openai-openapi ${spec.info["x-mlxs-source"].commit.slice(0, 7)}`);
});

test("GET /v1/models and GET /v1/models/{model}", async () => {
  const list = await get("/v1/models");
  assert.is(list.status, 200);
  conforms(responseSchema("GET", "/models"), list.body, "GET /v1/models");
  const one = await get(`/v1/models/${list.body.data[0].id}`);
  assert.is(one.status, 200);
  conforms(responseSchema("GET", "/models/{model}"), one.body, "GET /v1/models/{model}");
});

test("POST /v1/chat/completions: text, tool calls, json_schema; no system_fingerprint null", async () => {
  const validate = responseSchema("POST", "/chat/completions");
  const plain = await post("/v1/chat/completions", chat());
  assert.is(plain.status, 200, plain.text);
  assert.not.ok("system_fingerprint" in plain.body && plain.body.system_fingerprint === null, "the spec allows a string or nothing, never null");
  conforms(validate, plain.body, "chat completion");

  const tools = await post("/v1/chat/completions", chat({ max_tokens: 200, tools: [{ type: "function", function: WEATHER }], tool_choice: "required" }));
  assert.is(tools.status, 200, tools.text);
  assert.is(tools.body.choices[0].finish_reason, "tool_calls");
  assert.ok(tools.body.choices[0].message.tool_calls.length >= 1);
  conforms(validate, tools.body, "chat completion with tool_calls");

  const json = await post("/v1/chat/completions", chat({ max_tokens: 200, response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON, strict: true } } }));
  assert.is(json.status, 200, json.text);
  JSON.parse(json.body.choices[0].message.content);
  conforms(validate, json.body, "chat completion with response_format json_schema");
});

test("POST /v1/chat/completions streamed: every chunk, tool call deltas and the include_usage chunk", async () => {
  const validate = responseSchema("POST", "/chat/completions", "200", "text/event-stream");
  const chunks = await sseCall(`${state.server.url}/v1/chat/completions`, chat({ stream_options: { include_usage: true } }), auth());
  assert.ok(chunks.length >= 3, "a role chunk, text, a finish chunk");
  for (const [i, { data }] of chunks.entries()) conforms(validate, data, `chat chunk ${i}`, "events");
  const last = chunks.at(-1).data;
  assert.equal(last.choices, [], "the usage chunk has no choices");
  assert.ok(last.usage.total_tokens > 0);

  const calls = await sseCall(`${state.server.url}/v1/chat/completions`, chat({ max_tokens: 200, tools: [{ type: "function", function: WEATHER }], tool_choice: "required" }), auth());
  assert.ok(calls.some(({ data }) => data.choices[0]?.delta?.tool_calls), "tool call deltas");
  for (const [i, { data }] of calls.entries()) conforms(validate, data, `chat chunk ${i} with tool calls`, "events");
  assert.is(calls.at(-1).data.choices[0].finish_reason, "tool_calls");
});

test("POST /v1/completions, whole and streamed (the spec: both share one shape)", async () => {
  const validate = responseSchema("POST", "/completions");
  const body = { model: "tiny", prompt: "Once upon a time", max_tokens: 12, temperature: 0 };
  const whole = await post("/v1/completions", body);
  assert.is(whole.status, 200, whole.text);
  conforms(validate, whole.body, "text completion");
  const chunks = await sseCall(`${state.server.url}/v1/completions`, { ...body, stream_options: { include_usage: true } }, auth());
  assert.ok(chunks.length >= 2);
  // The spec declares no stream for /completions; its schema's description says a chunk has
  // the whole answer's shape. OpenAI's chunks (and so its clients) say finish_reason null
  // until the answer ends, where that shape has no null: the one difference let through,
  // and only before the last choice.
  const ends = chunks.filter(({ data }) => data.choices[0]?.finish_reason);
  assert.is(ends.length, 1, "one chunk ends the answer");
  for (const [i, { data }] of chunks.entries()) {
    const choices = data.choices.map((c) => (c.finish_reason === null && i < chunks.indexOf(ends[0]) ? { ...c, finish_reason: "length" } : c));
    conforms(validate, { ...data, choices }, `text completion chunk ${i}`, "events");
  }
});

test("POST /v1/embeddings, float and base64", async () => {
  const validate = responseSchema("POST", "/embeddings");
  const float = await post("/v1/embeddings", { model: "tiny", input: ["hello world", "the sea"] });
  assert.is(float.status, 200, float.text);
  conforms(validate, float.body, "embeddings (float)");
  const b64 = await post("/v1/embeddings", { model: "tiny", input: ["hello world", "the sea"], encoding_format: "base64" });
  assert.is(b64.status, 200, b64.text);
  // the spec types `embedding` as floats only, though its request documents base64 (and
  // OpenAI answers a string): the string must be those floats, little-endian float32
  const decoded = b64.body.data.map((d) => {
    assert.type(d.embedding, "string");
    const bytes = Buffer.from(d.embedding, "base64");
    return { ...d, embedding: Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)) };
  });
  decoded.forEach((d, i) => assert.equal(d.embedding, float.body.data[i].embedding.map(Math.fround)));
  conforms(validate, { ...b64.body, data: decoded }, "embeddings (base64, decoded)");
});

test("POST /v1/responses: text, function call, json_schema; usage with cache_write_tokens", async () => {
  const validate = responseSchema("POST", "/responses");
  const text = await post("/v1/responses", { model: "tiny", input: "Hello", instructions: "Be brief.", max_output_tokens: 12, temperature: 0 });
  assert.is(text.status, 200, text.text);
  assert.is(text.body.usage.input_tokens_details.cache_write_tokens, 0);
  conforms(validate, text.body, "response (text)");

  const call = await post("/v1/responses", { model: "tiny", input: "Weather?", tools: [{ type: "function", ...WEATHER, strict: true }], tool_choice: "required", max_output_tokens: 200, temperature: 0 });
  assert.is(call.status, 200, call.text);
  assert.ok(call.body.output.some((item) => item.type === "function_call"));
  conforms(validate, call.body, "response (function call)");

  const json = await post("/v1/responses", { model: "tiny", input: "Someone", max_output_tokens: 200, temperature: 0, text: { format: { type: "json_schema", name: "person", schema: PERSON, strict: true } } });
  assert.is(json.status, 200, json.text);
  conforms(validate, json.body, "response (json_schema)");
});

test("POST /v1/responses streamed: each event against its ResponseStreamEvent member", async () => {
  const union = responseSchema("POST", "/responses", "200", "text/event-stream");
  const check = (events, label) => {
    for (const [i, { event, data }] of events.entries()) {
      assert.is(event, data.type, "the SSE event name is the event's type");
      assert.is(data.sequence_number, i);
      const member = streamEventSchemas.get(data.type);
      assert.ok(member, `${data.type} is one of the spec's stream events`);
      conforms(schemaNamed(member), data, `${label} event ${i} (${data.type} as ${member})`, "events");
      assert.ok(union(data), `${data.type} conforms to the ResponseStreamEvent union`);
    }
  };
  const text = await sseCall(`${state.server.url}/v1/responses`, { model: "tiny", input: "Hi", max_output_tokens: 8, temperature: 0 }, auth());
  assert.ok(text.some((e) => e.data.type === "response.output_text.delta"));
  check(text, "text stream");
  const calls = await sseCall(`${state.server.url}/v1/responses`, { model: "tiny", input: "Weather?", tools: [{ type: "function", ...WEATHER, strict: true }], tool_choice: "required", max_output_tokens: 200, temperature: 0 }, auth());
  assert.ok(calls.some((e) => e.data.type === "response.function_call_arguments.delta"));
  assert.is(calls.at(-1).data.type, "response.completed");
  check(calls, "function call stream");
});

test("more shapes, six seeds each, streamed and not: tool_choice auto, stop sequences, json_object", async () => {
  const chatWhole = responseSchema("POST", "/chat/completions");
  const chatChunk = responseSchema("POST", "/chat/completions", "200", "text/event-stream");
  const responseWhole = responseSchema("POST", "/responses");
  const tools = [{ type: "function", function: WEATHER }];
  const responseTools = [{ type: "function", ...WEATHER, strict: false }];
  const finishes = new Set();
  for (let seed = 1; seed <= 6; seed++) {
    const variants = [
      chat({ seed, temperature: 1, max_tokens: 200, tools, tool_choice: "auto" }),
      chat({ seed, temperature: 1, max_tokens: 40, stop: ["e", "\n"] }),
      chat({ seed, temperature: 1, max_tokens: 60, response_format: { type: "json_object" } }),
    ];
    for (const [v, body] of variants.entries()) {
      const whole = await post("/v1/chat/completions", body);
      assert.is(whole.status, 200, whole.text);
      finishes.add(whole.body.choices[0].finish_reason);
      conforms(chatWhole, whole.body, `chat completion, seed ${seed}, variant ${v}`);
      const chunks = await sseCall(`${state.server.url}/v1/chat/completions`, body, auth());
      for (const [i, { data }] of chunks.entries()) conforms(chatChunk, data, `chat chunk ${i}, seed ${seed}, variant ${v}`, "events");
    }
    const response = await post("/v1/responses", { model: "tiny", input: "Weather?", tools: responseTools, tool_choice: "auto", max_output_tokens: 200, temperature: 1, seed });
    assert.is(response.status, 200, response.text);
    conforms(responseWhole, response.body, `response, tool_choice auto, seed ${seed}`);
    const events = await sseCall(`${state.server.url}/v1/responses`, { model: "tiny", input: "Weather?", tools: responseTools, tool_choice: "auto", max_output_tokens: 200, temperature: 1, seed }, auth());
    for (const [i, { data }] of events.entries()) conforms(schemaNamed(streamEventSchemas.get(data.type)), data, `response event ${i} (${data.type}), seed ${seed}`, "events");
  }
  assert.ok(finishes.has("stop"), `a stop sequence ends an answer (finish reasons seen: ${[...finishes]})`);
});

test("error bodies: 400, 401, 404 as ErrorResponse; 429 as each route's declared TooManyRequests", async () => {
  const error = schemaNamed("ErrorResponse");
  const refusals = [
    ["/v1/chat/completions", chat({ messages: "not a list" })],
    ["/v1/chat/completions", chat({ stream: true, temperature: 9 })],
    ["/v1/completions", { model: "tiny", prompt: 42 }],
    ["/v1/embeddings", { model: "tiny", input: [] }],
    ["/v1/responses", { model: "tiny", input: "x", store: true }],
  ];
  for (const [path, body] of refusals) {
    const res = await post(path, body);
    assert.is(res.status, 400, `${path}: ${res.text}`);
    conforms(error, res.body, `400 from ${path}`);
  }
  const unknown = await post("/v1/chat/completions", chat({ model: "no-such-model" }));
  assert.is(unknown.status, 404);
  conforms(error, unknown.body, "404 from POST /v1/chat/completions");
  const missing = await get("/v1/models/no-such-model");
  assert.is(missing.status, 404);
  conforms(error, missing.body, "404 from GET /v1/models/{model}");
  const anonymous = await httpCall(`${state.server.url}/v1/models`);
  assert.is(anonymous.status, 401);
  conforms(error, anonymous.body, "401 without a key");

  // a key allowed one request a minute: its first is answered, every later one refused with 429
  assert.is((await get("/v1/models", LIMITED)).status, 200);
  const limited = [["/chat/completions", chat()], ["/completions", { model: "tiny", prompt: "x" }], ["/embeddings", { model: "tiny", input: "x" }], ["/responses", { model: "tiny", input: "x" }]];
  for (const [path, body] of limited) {
    for (const stream of path === "/embeddings" ? [false] : [false, true]) {
      const res = await post(`/v1${path}`, { ...body, ...(stream ? { stream } : {}) }, LIMITED);
      assert.is(res.status, 429, `${path}: ${res.text}`);
      assert.ok(Number(res.headers["retry-after"]) >= 1, "Retry-After, as the spec's TooManyRequests has it");
      conforms(responseSchema("POST", path, "429"), res.body, `429 from POST /v1${path}${stream ? " (stream)" : ""}`);
    }
  }
});

test.run();
