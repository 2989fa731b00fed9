// Agents' requests on every API, through the clients agents use: structured output,
// tool calls (forced ones validated 50 times with different seeds), the Responses API,
// and an audit log that keeps their counts and kinds, never their content.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Ajv from "ajv";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import Anthropic from "@anthropic-ai/sdk";
import { z } from "zod";
import { generateObject, streamObject, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { ChatOpenAI } from "@langchain/openai";
import { ChatAnthropic } from "@langchain/anthropic";
import { STRICT_SCHEMA } from "./fixtures/schemas.js";
import { assertNoMarker, httpCall, jsonRequest, runCli, startServer, tempDir, testModel, waitForRows } from "./helpers.js";

const SEEDS = 50;
// the AI SDK warns on stderr of what it deprecates (generateObject in 7); the test asserts what it needs
globalThis.AI_SDK_LOG_WARNINGS = false;
const ajv = new Ajv({ strict: false, formats: { date: /^\d{4}-\d{2}-\d{2}$/, time: true, "date-time": true } });
const validator = (schema) => {
  const validate = ajv.compile(schema);
  return (value, what = "the value") => assert.ok(validate(value), `${what}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(value).slice(0, 300)}`);
};

const WEATHER = {
  name: "get_weather",
  description: "The weather in a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" }, days: { type: "integer" }, unit: { type: "string", enum: ["c", "f"] } },
    required: ["city", "days", "unit"],
    additionalProperties: false,
  },
};
const SEARCH = {
  name: "search",
  description: "Search the web",
  parameters: { type: "object", properties: { query: { type: "string" }, filters: { type: "array", items: { type: "string" } }, safe: { type: ["boolean", "null"] } }, required: ["query", "filters", "safe"], additionalProperties: false },
};
const checkArgs = { get_weather: validator(WEATHER.parameters), search: validator(SEARCH.parameters) };
const checkCall = (name, args) => {
  assert.ok(checkArgs[name], `a call of an offered function, not ${name}`);
  checkArgs[name](args, `${name}'s arguments`);
};
const checkStrict = validator(STRICT_SCHEMA);
/** Every value bounded, so that even a random model's answer ends before its budget (clients refuse a cut answer). */
const Bounded = z.object({ city: z.string().max(12), count: z.number().int(), mood: z.enum(["good", "bad"]), tags: z.array(z.string().max(8)).max(2) });
const checkBounded = (value) => assert.ok(Bounded.safeParse(value).success, JSON.stringify(value));

/** Runs `fn` for each seed, two at a time (the server has two sequences). */
async function eachSeed(fn) {
  for (let seed = 1; seed <= SEEDS; seed += 2) await Promise.all([fn(seed), fn(seed + 1)]);
}

const state = {};
const openai = () => state.openai;
const anthropic = () => state.anthropic;

const structured = suite("structured output");
structured.before(async () => {
  state.server = await startServer(["--model", await testModel(), "--parallel", "2"]);
  state.openai = new OpenAI({ baseURL: `${state.server.url}/v1`, apiKey: "none", maxRetries: 0 });
  state.anthropic = new Anthropic({ baseURL: state.server.url, apiKey: "none", maxRetries: 0 });
});

const jsonSchema = (schema) => ({ type: "json_schema", json_schema: { name: "answer", schema, strict: true } });
const ask = (extra = {}) => ({ model: "tiny", messages: [{ role: "user", content: "Describe someone." }], max_tokens: 120, ...extra });

structured(`json_schema: ${SEEDS} answers with different seeds, each valid against OpenAI strict mode's schema (nested, $defs, anyOf, nullable)`, async () => {
  await eachSeed(async (seed) => {
    const r = await openai().chat.completions.create(ask({ seed, temperature: 0.9, response_format: jsonSchema(STRICT_SCHEMA) }));
    checkStrict(JSON.parse(r.choices[0].message.content), `seed ${seed}`);
  });
});

structured("json_schema streamed, json_object, and /v1/completions", async () => {
  const stream = await openai().chat.completions.create(ask({ stream: true, seed: 7, response_format: jsonSchema(STRICT_SCHEMA) }));
  let text = "";
  let pieces = 0;
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.delta?.content;
    if (piece) { text += piece; pieces++; }
  }
  assert.ok(pieces > 3, "the answer streams");
  checkStrict(JSON.parse(text));
  const object = await openai().chat.completions.create(ask({ seed: 3, max_tokens: 60, response_format: { type: "json_object" } }));
  const value = JSON.parse(object.choices[0].message.content);
  assert.ok(value !== null && typeof value === "object" && !Array.isArray(value), "a JSON object");
  const completion = await openai().completions.create({ model: "tiny", prompt: "Data:", max_tokens: 100, seed: 5, response_format: jsonSchema(STRICT_SCHEMA) });
  checkStrict(JSON.parse(completion.choices[0].text));
});

structured("the official client's parse() with a zod schema: parsed, validated, finished", async () => {
  for (let seed = 1; seed <= 5; seed++) {
    const r = await openai().chat.completions.parse(ask({ seed, temperature: 1, max_tokens: 200, response_format: zodResponseFormat(Bounded, "weather") }));
    assert.is(r.choices[0].finish_reason, "stop");
    checkBounded(r.choices[0].message.parsed);
  }
});

structured("a keyword the grammar cannot enforce: 400 naming it, never ignored", async () => {
  for (const [keyword, property] of [["pattern", { type: "string", pattern: "^a+$" }], ["multipleOf", { type: "integer", multipleOf: 3 }], ["allOf", { allOf: [{ type: "string" }] }]]) {
    const r = await httpCall(`${state.server.url}/v1/chat/completions`, jsonRequest(ask({ response_format: jsonSchema({ type: "object", properties: { x: property } }) })));
    assert.is(r.status, 400, r.text);
    assert.is(r.body.error.param, "response_format");
    assert.match(r.body.detail, new RegExp(`"${keyword}" is not supported`));
    assert.match(r.headers["content-type"], /problem\+json/);
    assert.ok(r.body.request_id);
  }
});

structured.run();

const chatTools = suite("tool calls: OpenAI chat");
const tools = [WEATHER, SEARCH].map((fn) => ({ type: "function", function: fn }));

chatTools(`tool_choice required: ${SEEDS} answers, each a call of an offered function with valid arguments`, async () => {
  await eachSeed(async (seed) => {
    const r = await openai().chat.completions.create(ask({ seed, temperature: 1, max_tokens: 80, tools, tool_choice: "required" }));
    const { message, finish_reason: finish } = r.choices[0];
    assert.is(finish, "tool_calls");
    assert.is(message.content, null);
    assert.ok(message.tool_calls.length >= 1);
    for (const call of message.tool_calls) {
      assert.match(call.id, /^call_/);
      assert.is(call.type, "function");
      checkCall(call.function.name, JSON.parse(call.function.arguments));
    }
  });
});

chatTools("a named function is the one called; parallel_tool_calls false makes one call", async () => {
  for (let seed = 1; seed <= 6; seed++) {
    const r = await openai().chat.completions.create(ask({ seed, temperature: 1, tools, tool_choice: { type: "function", function: { name: "search" } }, parallel_tool_calls: false }));
    const calls = r.choices[0].message.tool_calls;
    assert.is(calls.length, 1);
    assert.is(calls[0].function.name, "search");
    checkCall("search", JSON.parse(calls[0].function.arguments));
  }
});

chatTools("streamed calls arrive in OpenAI's delta format and the client's stream helper puts them together", async () => {
  const stream = openai().chat.completions.stream(ask({ seed: 11, tools, tool_choice: "required" }));
  let argumentPieces = 0;
  stream.on("chunk", (chunk) => { if (chunk.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments) argumentPieces++; });
  const done = [];
  stream.on("tool_calls.function.arguments.done", (event) => done.push(event));
  const final = await stream.finalChatCompletion();
  assert.ok(argumentPieces > 2, "arguments come in pieces");
  const calls = final.choices[0].message.tool_calls;
  assert.is(final.choices[0].finish_reason, "tool_calls");
  assert.is(done.length, calls.length);
  for (const call of calls) checkCall(call.function.name, JSON.parse(call.function.arguments));
});

chatTools("a conversation with calls and their results; tools: [] and tool_choice none change nothing", async () => {
  const first = await openai().chat.completions.create(ask({ seed: 2, tools, tool_choice: { type: "function", function: { name: "get_weather" } } }));
  const call = first.choices[0].message.tool_calls[0];
  const history = [{ role: "user", content: "Weather in Paris?" }, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "{\"sky\": \"clear\"}" }];
  const next = await openai().chat.completions.create({ model: "tiny", messages: history, tools, max_tokens: 8, temperature: 0 });
  assert.ok(["stop", "length", "tool_calls"].includes(next.choices[0].finish_reason));
  for (const extra of [{ tools: [] }, { tools, tool_choice: "none" }, { tool_choice: "none" }]) {
    const r = await openai().chat.completions.create(ask({ max_tokens: 6, temperature: 0, ...extra }));
    assert.is(r.choices[0].message.tool_calls, undefined);
    assert.ok(r.choices[0].message.content.length > 0);
  }
  const unknown = await httpCall(`${state.server.url}/v1/chat/completions`, jsonRequest(ask({ tools, tool_choice: { type: "function", function: { name: "nope" } } })));
  assert.is(unknown.status, 400);
  assert.is(unknown.body.error.param, "tool_choice");
  const orphan = await httpCall(`${state.server.url}/v1/chat/completions`, jsonRequest({ messages: [{ role: "tool", tool_call_id: "call_x", content: "r" }] }));
  assert.is(orphan.status, 400);
  assert.is(orphan.body.error.param, "messages[0].tool_call_id");
});

chatTools.run();

const anthropicTools = suite("tool calls: Anthropic Messages");
const anthropicToolList = [WEATHER, SEARCH].map(({ name, description, parameters }) => ({ name, description, input_schema: parameters }));
const askAnthropic = (extra = {}) => ({ model: "tiny", max_tokens: 80, messages: [{ role: "user", content: "Weather in Paris?" }], ...extra });

anthropicTools(`tool_choice any: ${SEEDS} answers of tool_use blocks with valid input`, async () => {
  // Anthropic has no seed: the temperature varies instead, and the prompt
  await eachSeed(async (seed) => {
    const m = await anthropic().messages.create(askAnthropic({ temperature: 1, tools: anthropicToolList, tool_choice: { type: "any" }, messages: [{ role: "user", content: `Question ${seed}?` }] }));
    assert.is(m.stop_reason, "tool_use");
    const uses = m.content.filter((b) => b.type === "tool_use");
    assert.ok(uses.length >= 1);
    for (const use of uses) {
      assert.match(use.id, /^toolu_/);
      checkCall(use.name, use.input);
    }
  });
});

anthropicTools("streaming: a tool_use block, input_json_delta events, the SDK's final message; then the tool_result round trip", async () => {
  const stream = anthropic().messages.stream(askAnthropic({ tools: anthropicToolList, tool_choice: { type: "tool", name: "get_weather" } }));
  const types = [];
  stream.on("streamEvent", (event) => types.push(event.type === "content_block_delta" ? event.delta.type : event.type === "content_block_start" ? `start:${event.content_block.type}` : event.type));
  const final = await stream.finalMessage();
  assert.is(types[0], "message_start");
  assert.ok(types.includes("start:tool_use"));
  assert.ok(types.filter((t) => t === "input_json_delta").length > 2);
  assert.equal(types.slice(-3), ["content_block_stop", "message_delta", "message_stop"]);
  assert.is(final.stop_reason, "tool_use");
  const use = final.content.find((b) => b.type === "tool_use");
  assert.is(use.name, "get_weather");
  checkCall("get_weather", use.input);
  const next = await anthropic().messages.create(askAnthropic({
    max_tokens: 8,
    tools: anthropicToolList,
    messages: [
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: final.content },
      { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "clear" }, { type: "text", text: "And tomorrow?" }] },
    ],
  }));
  assert.ok(next.content.length > 0);
  const orphan = await httpCall(`${state.server.url}/v1/messages`, jsonRequest(askAnthropic({ messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_x", content: "r" }] }] })));
  assert.is(orphan.status, 400);
  assert.is(orphan.body.error.type, "invalid_request_error");
});

anthropicTools("count_tokens counts the tools; what changes nothing is accepted", async () => {
  const plain = await anthropic().messages.countTokens({ model: "tiny", messages: [{ role: "user", content: "Weather?" }] });
  const withTools = await anthropic().messages.countTokens({ model: "tiny", messages: [{ role: "user", content: "Weather?" }], tools: anthropicToolList });
  assert.ok(withTools.input_tokens > plain.input_tokens + 20, `${withTools.input_tokens} vs ${plain.input_tokens}`);
  const m = await anthropic().messages.create(askAnthropic({ max_tokens: 4, tools: [], tool_choice: { type: "none" }, thinking: { type: "disabled" }, top_k: -1, top_p: -1, metadata: { user_id: "u" } }));
  assert.is(m.content[0].type, "text");
  const none = await anthropic().messages.create(askAnthropic({ max_tokens: 4, tools: anthropicToolList, tool_choice: { type: "none" } }));
  assert.ok(none.content.every((b) => b.type === "text"));
});

anthropicTools.run();

const responses = suite("the Responses API");
const responseTools = [WEATHER, SEARCH].map((fn) => ({ type: "function", ...fn, strict: true }));

responses("text: the response object, its output message and usage", async () => {
  const r = await openai().responses.create({ model: "tiny", input: "Hello", instructions: "Be brief.", max_output_tokens: 6, temperature: 0 });
  assert.match(r.id, /^resp_/);
  assert.is(r.object, "response");
  assert.is(r.status, "incomplete");
  assert.is(r.incomplete_details.reason, "max_output_tokens");
  assert.is(r.output.length, 1);
  assert.is(r.output[0].type, "message");
  assert.is(r.output[0].content[0].type, "output_text");
  assert.ok(r.output_text.length > 0, "the client's output_text helper reads it");
  assert.is(r.usage.output_tokens, 6);
  assert.ok(r.usage.input_tokens > 0);
  assert.is(r.usage.total_tokens, r.usage.input_tokens + 6);
  assert.is(r.store, false);
});

responses(`tool_choice required: ${SEEDS} answers of function_call items with valid arguments`, async () => {
  await eachSeed(async (seed) => {
    const r = await openai().responses.create({ model: "tiny", input: "Weather?", tools: responseTools, tool_choice: "required", max_output_tokens: 80, temperature: 1, seed });
    const calls = r.output.filter((item) => item.type === "function_call");
    assert.ok(calls.length >= 1);
    for (const call of calls) {
      assert.match(call.call_id, /^call_/);
      assert.match(call.id, /^fc_/);
      checkCall(call.name, JSON.parse(call.arguments));
    }
  });
});

responses("streaming: the documented event sequence, and the client's stream helper", async () => {
  const stream = openai().responses.stream({ model: "tiny", input: "Hi", max_output_tokens: 5, temperature: 0 });
  const text = [];
  for await (const event of stream) text.push(event.type);
  const squeeze = (types) => types.filter((t, i) => t !== types[i - 1]);
  assert.equal(squeeze(text), [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.incomplete",
  ]);
  const calls = openai().responses.stream({ model: "tiny", input: "Weather?", tools: responseTools, tool_choice: { type: "function", name: "get_weather" }, max_output_tokens: 80 });
  const types = [];
  for await (const event of calls) types.push(event.type);
  assert.equal(squeeze(types), [
    "response.created", "response.in_progress", "response.output_item.added", "response.function_call_arguments.delta",
    "response.function_call_arguments.done", "response.output_item.done", "response.completed",
  ]);
  const final = await calls.finalResponse();
  const call = final.output.find((item) => item.type === "function_call");
  checkCall("get_weather", JSON.parse(call.arguments));
  // the call and its output sent back: the next turn
  const next = await openai().responses.create({
    model: "tiny", max_output_tokens: 6, tools: responseTools,
    input: [{ role: "user", content: "Weather?" }, { type: "function_call", call_id: call.call_id, name: call.name, arguments: call.arguments }, { type: "function_call_output", call_id: call.call_id, output: "clear" }],
  });
  assert.is(next.output[0].type, "message");
});

responses("text.format json_schema; store and previous_response_id refused with the reason", async () => {
  const r = await openai().responses.create({ model: "tiny", input: "Someone", max_output_tokens: 150, seed: 4, text: { format: { type: "json_schema", name: "person", schema: STRICT_SCHEMA, strict: true } } });
  checkStrict(JSON.parse(r.output_text));
  for (const [extra, param] of [[{ store: true }, "store"], [{ previous_response_id: "resp_123" }, "previous_response_id"]]) {
    const refused = await httpCall(`${state.server.url}/v1/responses`, jsonRequest({ model: "tiny", input: "x", ...extra }));
    assert.is(refused.status, 400);
    assert.is(refused.body.error.param, param);
    assert.match(refused.body.detail, /never keeps conversations/);
  }
  const unknown = await httpCall(`${state.server.url}/v1/responsez`, { method: "POST" });
  assert.is(unknown.status, 404);
  assert.match(unknown.body.detail, /no such route/i);
  assert.not.match(unknown.body.detail, /lives under/);
});

responses.run();

const libraries = suite("client libraries: the Vercel AI SDK (6 and 7) and LangChain");
const weatherTool = (make) => ({ get_weather: make({ description: "The weather in a city", inputSchema: z.object({ city: z.string(), days: z.number().int() }) }) });
const checkToolCalls = (calls) => {
  assert.ok(calls.length >= 1);
  for (const call of calls) {
    assert.is(call.toolName, "get_weather");
    assert.type(call.input.city, "string");
    assert.ok(Number.isInteger(call.input.days));
  }
};

libraries("AI SDK 6: generateObject and streamObject (Responses API and chat), streamText with tools, the Anthropic provider", async () => {
  const provider = createOpenAI({ baseURL: `${state.server.url}/v1`, apiKey: "none" });
  for (const model of [provider("tiny"), provider.chat("tiny")]) {
    const { object } = await generateObject({ model, schema: Bounded, prompt: "Weather", maxOutputTokens: 200, temperature: 1 });
    checkBounded(object);
  }
  const streamed = streamObject({ model: provider("tiny"), schema: Bounded, prompt: "Weather?", maxOutputTokens: 200 });
  let partials = 0;
  for await (const _ of streamed.partialObjectStream) partials++;
  assert.ok(partials > 1);
  checkBounded(await streamed.object);
  for (const model of [provider("tiny"), provider.chat("tiny"), createAnthropic({ baseURL: `${state.server.url}/v1`, apiKey: "none" })("tiny")]) {
    const result = streamText({ model, prompt: "Weather?", tools: weatherTool(tool), toolChoice: "required", maxOutputTokens: 80 });
    for await (const _ of result.fullStream);
    checkToolCalls(await result.toolCalls);
  }
});

libraries("LangChain: withStructuredOutput and bindTools, on OpenAI chat, the Responses API and Anthropic", async () => {
  const configuration = { baseURL: `${state.server.url}/v1` };
  const openaiChat = new ChatOpenAI({ model: "tiny", apiKey: "none", configuration, maxTokens: 200 });
  const responsesChat = new ChatOpenAI({ model: "tiny", apiKey: "none", configuration, maxTokens: 200, useResponsesApi: true });
  const anthropicChat = new ChatAnthropic({ model: "tiny", apiKey: "none", anthropicApiUrl: state.server.url, maxTokens: 200 });
  for (const model of [openaiChat, responsesChat, anthropicChat]) checkBounded(await model.withStructuredOutput(Bounded).invoke("Weather"));
  const weather = { name: "get_weather", description: "The weather in a city", schema: z.object({ city: z.string().max(20), days: z.number().int() }) };
  for (const [model, choice] of [[openaiChat, "required"], [anthropicChat, "any"], [responsesChat, "get_weather"]]) {
    const message = await model.bindTools([weather], { tool_choice: choice }).invoke("Weather in Paris?");
    assert.ok(message.tool_calls.length >= 1, `${model.constructor.name}: a call`);
    for (const call of message.tool_calls) {
      assert.is(call.name, "get_weather");
      assert.ok(weather.schema.safeParse(call.args).success, JSON.stringify(call.args));
    }
  }
});

libraries.run();

const audit = suite("audit: the number of calls and the kind of format, never a name, argument, schema or result");

audit("records carry tool_calls and response_format; the marker, everywhere in agents' requests, is nowhere in the data dir or the logs", async () => {
  const marker = "AGENT_MARKER_7Q";
  const server = await startServer(["--model", await testModel()]);
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
    const claude = new Anthropic({ baseURL: server.url, apiKey: "none", maxRetries: 0 });
    const fn = { name: marker, description: `${marker} tool`, parameters: { type: "object", properties: { [marker]: { type: "string", enum: [`${marker}-value`] } }, required: [marker], additionalProperties: false } };
    const forced = await client.chat.completions.create({
      model: "tiny", max_tokens: 40, seed: 1, tools: [{ type: "function", function: fn }], tool_choice: "required",
      messages: [{ role: "system", content: marker }, { role: "user", content: marker }],
    });
    const call = forced.choices[0].message.tool_calls[0];
    assert.ok(call.function.arguments.includes(marker), "the answer does hold the marker: it must stay out of the log");
    await client.chat.completions.create({
      model: "tiny", max_tokens: 4, tools: [{ type: "function", function: fn }],
      messages: [{ role: "user", content: marker }, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: `${marker} result` }],
    });
    await client.chat.completions.create({ model: "tiny", max_tokens: 40, messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: marker, schema: { type: "object", properties: { [marker]: { type: "string" } }, required: [marker] } } } });
    await client.chat.completions.create({ model: "tiny", max_tokens: 30, messages: [{ role: "user", content: "x" }], response_format: { type: "json_object" } });
    // refused: an unknown keyword whose name is the marker, a pattern holding it
    for (const property of [{ type: "string", [marker]: 1 }, { type: "string", pattern: marker }]) {
      const r = await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "n", schema: { type: "object", properties: { a: property } } } } }));
      assert.is(r.status, 400);
      assert.not.ok(r.text.includes(marker), "the refusal does not echo the schema");
    }
    const use = await claude.messages.create({ model: "tiny", max_tokens: 40, messages: [{ role: "user", content: marker }], tools: [{ name: marker, description: marker, input_schema: fn.parameters }], tool_choice: { type: "any" } });
    const block = use.content.find((b) => b.type === "tool_use");
    await claude.messages.create({ model: "tiny", max_tokens: 4, tools: [{ name: marker, input_schema: fn.parameters }], messages: [{ role: "user", content: "x" }, { role: "assistant", content: use.content }, { role: "user", content: [{ type: "tool_result", tool_use_id: block.id, content: marker, is_error: true }] }] });
    await client.responses.create({ model: "tiny", input: marker, instructions: marker, tools: [{ type: "function", ...fn }], tool_choice: "required", max_output_tokens: 40 });
    await client.responses.create({ model: "tiny", input: "x", max_output_tokens: 40, text: { format: { type: "json_schema", name: marker, schema: fn.parameters } } });
    const rows = await waitForRows(server.db, (r) => r.length >= 10);
    const generated = rows.filter((r) => r.status === "success");
    assert.equal(generated.map((r) => [r.endpoint, r.tool_calls, r.response_format]), [
      ["/v1/chat/completions", 1, "text"], ["/v1/chat/completions", 0, "text"], ["/v1/chat/completions", 0, "json_schema"], ["/v1/chat/completions", 0, "json_object"],
      ["/v1/messages", 1, "text"], ["/v1/messages", 0, "text"], ["/v1/responses", 1, "text"], ["/v1/responses", 0, "json_schema"],
    ]);
    assert.is(rows.filter((r) => r.status === "error").length, 2);
    assertNoMarker(server.home, marker);
    assert.not.ok(server.stderr().includes(marker));
  } finally {
    assert.is(await server.stop(), 0);
  }
});

audit.run();

const cli = suite("mlxs chat --json-schema");

cli("the answer is JSON valid against the schema, in process and through --url; a schema it cannot enforce is one line and exit 2", async () => {
  const dir = tempDir();
  const file = join(dir, "schema.json");
  writeFileSync(file, JSON.stringify(STRICT_SCHEMA));
  const model = await testModel();
  const local = await runCli(["chat", "--model", model, "--json-schema", file, "--max-tokens", "150", "--seed", "3", "--json", "Someone"]);
  assert.is(local.code, 0, local.stderr);
  checkStrict(JSON.parse(JSON.parse(local.stdout).text));
  const plain = await runCli(["chat", "--url", state.server.url, "--json-schema", file, "--max-tokens", "150", "--seed", "4", "Someone"]);
  assert.is(plain.code, 0, plain.stderr);
  checkStrict(JSON.parse(plain.stdout));
  writeFileSync(file, JSON.stringify({ type: "object", properties: { a: { type: "string", pattern: "x" } } }));
  const refused = await runCli(["chat", "--model", model, "--json-schema", file, "Someone"]);
  assert.is(refused.code, 2);
  assert.match(refused.stderr.trim(), /^mlxs: --json-schema: .*"pattern" is not supported/);
  assert.is(refused.stderr.trim().split("\n").length, 1);
  const missing = await runCli(["chat", "--model", model, "--json-schema", join(dir, "nope.json"), "Someone"]);
  assert.is(missing.code, 2);
  assert.match(missing.stderr, /cannot read .*ENOENT/);
});

cli.after(async () => { assert.is(await state.server.stop(), 0); });
cli.run();
