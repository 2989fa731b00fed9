import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import Anthropic from "@anthropic-ai/sdk";
import { jsonSchemaOutputFormat } from "@anthropic-ai/sdk/helpers/json-schema";
import Ajv from "ajv";
import { assertNoMarker, startServer, testModel, waitForRows } from "./helpers.js";

const KEY = "anthropic-test-key-1";
const post = async (server, path, body, headers = { "x-api-key": KEY }) => {
  const res = await request(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.body.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.statusCode, headers: res.headers, body: json, text };
};
const ask = (extra = {}) => ({ model: "tiny", max_tokens: 16, temperature: 0, messages: [{ role: "user", content: "hello there" }], ...extra });


async function expectSdkError(promise, ErrorClass, type) {
  try {
    await promise;
    assert.unreachable("no error");
  } catch (error) {
    assert.instance(error, ErrorClass, `${error?.constructor?.name}: ${error?.message}`);
    assert.is(error.error?.error?.type ?? error.error?.type, type);
    assert.ok(error.message.length > 0);
    return error;
  }
}

const messages = suite("messages");
messages.before(async (ctx) => {
  ctx.server = await startServer(["--model", await testModel(), "--api-key", KEY, "--parallel", "2"]);
  ctx.client = new Anthropic({ baseURL: ctx.server.url, apiKey: KEY, maxRetries: 0 });
});
messages.after(async (ctx) => { assert.is(await ctx.server.stop(), 0); });

messages("create: Anthropic's shape, stop reasons, usage", async ({ client }) => {
  const m = await client.messages.create(ask());
  assert.match(m.id, /^msg_/);
  assert.is(m.type, "message");
  assert.is(m.role, "assistant");
  assert.is(m.model, "tiny");
  assert.is(m.content.length, 1);
  assert.is(m.content[0].type, "text");
  assert.ok(m.content[0].text.length > 0);
  assert.ok(["end_turn", "max_tokens"].includes(m.stop_reason));
  assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);
  const capped = await client.messages.create(ask({ max_tokens: 3 }));
  assert.is(capped.stop_reason, "max_tokens");
  assert.is(capped.usage.output_tokens, 3);
  assert.is(capped.stop_sequence, null);
  const free = (await client.messages.create(ask({ max_tokens: 30 }))).content[0].text;
  const stop = ` ${free.split(" ")[3]}`;
  const stopped = await client.messages.create(ask({ max_tokens: 30, stop_sequences: ["zzzz", stop] }));
  assert.is(stopped.stop_reason, "stop_sequence");
  assert.is(stopped.stop_sequence, stop);
  assert.is(stopped.content[0].text, free.slice(0, free.indexOf(stop)));
});

messages("stream: the event order, and the same text as without streaming", async ({ client, server }) => {
  const whole = await client.messages.create(ask({ max_tokens: 20 }));
  const raw = await post(server, "/v1/messages", ask({ max_tokens: 20, stream: true }));
  assert.match(raw.headers["content-type"], /^text\/event-stream/);
  const events = raw.text.split("\n\n").filter(Boolean).map((block) => ({
    event: /^event: (.*)$/m.exec(block)[1],
    data: JSON.parse(/^data: (.*)$/m.exec(block)[1]),
  }));
  for (const e of events) assert.is(e.data.type, e.event);
  const names = events.map((e) => e.event);
  assert.equal(names.slice(0, 3), ["message_start", "content_block_start", "ping"]);
  assert.equal(names.slice(-3), ["content_block_stop", "message_delta", "message_stop"]);
  assert.ok(names.slice(3, -3).every((n) => n === "content_block_delta"));
  assert.is(events[0].data.message.usage.input_tokens, whole.usage.input_tokens);
  const delta = events.at(-2).data;
  assert.is(delta.delta.stop_reason, whole.stop_reason);
  assert.is(delta.usage.output_tokens, whole.usage.output_tokens);
  const text = events.filter((e) => e.event === "content_block_delta").map((e) => e.data.delta.text).join("");
  assert.is(text, whole.content[0].text);
  // and through the SDK's own stream helper
  const stream = client.messages.stream(ask({ max_tokens: 20 }));
  const final = await stream.finalMessage();
  assert.is(final.content[0].text, whole.content[0].text);
});

messages("count_tokens equals the input_tokens of the real call; system and merged turns", async ({ client }) => {
  const body = { model: "tiny", system: [{ type: "text", text: "be brief" }], messages: [{ role: "user", content: "one" }, { role: "user", content: [{ type: "text", text: "two" }] }, { role: "assistant", content: "three" }, { role: "user", content: "four" }] };
  const counted = await client.messages.countTokens(body);
  const real = await client.messages.create({ ...body, max_tokens: 2 });
  assert.is(counted.input_tokens, real.usage.input_tokens);
  const merged = await client.messages.countTokens({ model: "tiny", system: "be brief", messages: [{ role: "user", content: "one\n\ntwo" }, { role: "assistant", content: "three" }, { role: "user", content: "four" }] });
  assert.is(merged.input_tokens, counted.input_tokens);
});

messages("refusals and errors: the Anthropic envelope, the SDK's matching exception, the request id", async ({ client, server }) => {
  const missing = await post(server, "/v1/messages", { model: "tiny", messages: [{ role: "user", content: "x" }] });
  assert.is(missing.status, 400);
  assert.is(missing.body.type, "error");
  assert.is(missing.body.error.type, "invalid_request_error");
  assert.match(missing.body.error.message, /max_tokens/);
  assert.is(missing.body.request_id, missing.headers["request-id"]);
  assert.is(missing.headers["x-request-id"], missing.headers["request-id"]);
  assert.is(missing.body.status, 400);
  await expectSdkError(client.messages.create({ model: "tiny", messages: [{ role: "user", content: "x" }] }), Anthropic.BadRequestError, "invalid_request_error");
  for (const [extra, name] of [
    [{ tools: [{ type: "web_search_20250305", name: "web_search" }] }, "tools.0.type"],
    [{ thinking: { type: "enabled", budget_tokens: 1024 } }, "thinking"],
    [{ messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } }] }] }, "messages.0.content.0"],
    [{ messages: [{ role: "user", content: [{ type: "document", source: { type: "text", media_type: "text/plain", data: "x" } }] }] }, "messages.0.content.0"],
  ]) {
    const e = await expectSdkError(client.messages.create(ask(extra)), Anthropic.BadRequestError, "invalid_request_error");
    assert.ok(e.message.includes(name), `${name}: ${e.message}`);
  }
  await expectSdkError(client.messages.create(ask({ model: "claude-sonnet-4" })), Anthropic.NotFoundError, "not_found_error");
  await expectSdkError(client.messages.create(ask({ temperature: 7 })), Anthropic.BadRequestError, "invalid_request_error");
  const unauth = new Anthropic({ baseURL: server.url, apiKey: "wrong-key-000", maxRetries: 0 });
  await expectSdkError(unauth.messages.create(ask()), Anthropic.AuthenticationError, "authentication_error");
  const bad = await post(server, "/v1/messages", "{ not json");
  assert.is(bad.status, 400);
  assert.is(bad.body.error.type, "invalid_request_error");
});

messages("auth by x-api-key and by Bearer; any anthropic-version and anthropic-beta", async ({ server }) => {
  const bearer = new Anthropic({ baseURL: server.url, authToken: KEY, apiKey: null, maxRetries: 0, defaultHeaders: { "anthropic-beta": "something-2099-01-01" } });
  const m = await bearer.messages.create(ask({ max_tokens: 2 }));
  assert.is(m.type, "message");
  const odd = await post(server, "/v1/messages", ask({ max_tokens: 2 }), { "x-api-key": KEY, "anthropic-version": "1999-01-01", "anthropic-beta": "x,y" });
  assert.is(odd.status, 200);
});

/** Every value bounded, so that even the random model's answer ends before its budget. */
const MOOD = { type: "object", properties: { mood: { type: "string", enum: ["good", "bad", "so-so"] }, count: { type: "integer" }, sure: { type: "boolean" } }, required: ["mood", "count", "sure"], additionalProperties: false };
const checkMood = (() => {
  const validate = new Ajv({ strict: false }).compile(MOOD);
  return (value, what) => assert.ok(validate(value), `${what}: ${JSON.stringify(value)} ${JSON.stringify(validate.errors)}`);
})();

messages("structured outputs: output_config.format and the beta's output_format hold the answer to the schema (SDK parse, raw HTTP, streamed)", async ({ client, server }) => {
  const format = jsonSchemaOutputFormat(MOOD);
  for (let seed = 1; seed <= 4; seed++) {
    const m = await client.messages.parse(ask({ max_tokens: 120, temperature: 1, seed, output_config: { format } }), { headers: { "x-request-id": `format-parse-${seed}` } });
    assert.is(m.content[0].type, "text");
    checkMood(m.parsed_output, `parse, seed ${seed}`);
    assert.equal(JSON.parse(m.content[0].text), m.parsed_output);
  }
  const beta = await client.beta.messages.parse(ask({ max_tokens: 120, temperature: 1, seed: 9, output_format: format }));
  checkMood(beta.parsed_output, "beta parse");
  for (const shape of [{ output_config: { format: { type: "json_schema", schema: MOOD } } }, { output_format: { type: "json_schema", schema: MOOD } }]) {
    const raw = await post(server, "/v1/messages", ask({ max_tokens: 120, temperature: 1, seed: 3, ...shape }));
    assert.is(raw.status, 200, raw.text);
    checkMood(JSON.parse(raw.body.content[0].text), `raw ${Object.keys(shape)[0]}`);
    const streamed = await post(server, "/v1/messages", ask({ max_tokens: 120, temperature: 1, seed: 3, stream: true, ...shape }));
    const text = streamed.text.split("\n\n").filter((b) => b.includes("text_delta")).map((b) => JSON.parse(/^data: (.*)$/m.exec(b)[1]).delta.text).join("");
    assert.is(text, raw.body.content[0].text, "streamed as answered whole");
  }
  const rows = await waitForRows(server.db, (r) => r.filter((x) => x.request_id.startsWith("format-parse-")).length === 4);
  for (const row of rows.filter((x) => x.request_id.startsWith("format-parse-"))) assert.is(row.response_format, "json_schema");
});

messages("structured outputs: a schema the grammar cannot enforce, or two formats, are refused naming the field", async ({ server }) => {
  const pattern = { type: "object", properties: { x: { type: "string", pattern: "^a+$" } } };
  for (const [extra, param] of [
    [{ output_config: { format: { type: "json_schema", schema: pattern } } }, "output_config.format.schema"],
    [{ output_format: { type: "json_schema", schema: pattern } }, "output_format.schema"],
    [{ output_config: { format: { type: "json_object" } } }, "output_config.format.type"],
    [{ output_config: { format: { type: "json_schema", schema: MOOD } }, output_format: { type: "json_schema", schema: MOOD } }, "output_format"],
  ]) {
    const r = await post(server, "/v1/messages", ask(extra));
    assert.is(r.status, 400, r.text);
    assert.is(r.body.error.type, "invalid_request_error");
    assert.is(r.body.error.param, param);
    assert.ok(r.body.error.message.startsWith(param), r.body.error.message);
  }
});

messages("thread: refused with the reason, so the SDK's tool runner sends the whole conversation and a thread of one's own fails clearly", async ({ client, server }) => {
  // what the tool runner of @anthropic-ai/sdk 1.14 sent as its second turn: the tool_result alone
  const continued = await post(server, "/v1/messages", ask({ thread: { type: "continue", previous_message_id: "msg_0123" }, messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_0123", content: "sunny" }] }] }));
  assert.is(continued.status, 400, continued.text);
  assert.is(continued.body.error.type, "invalid_request_error");
  assert.is(continued.body.error.param, "thread");
  assert.match(continued.body.error.message, /^thread: mlxs keeps no conversations; send the whole conversation/);
  assert.equal(continued.body.error.details, { error_code: "thread_unsupported_request", unsupported: ["thread"] });
  const text = await post(server, "/v1/messages", ask({ thread: { type: "continue", previous_message_id: "msg_0123" } }));
  assert.is(text.status, 400, "a text continuation is refused too, never answered without its context");
  const created = await post(server, "/v1/messages", ask({ thread: { type: "create" } }));
  assert.is(created.status, 400);
  const unthreaded = await post(server, "/v1/messages", ask({ thread: null, max_tokens: 2 }));
  assert.is(unthreaded.status, 200);

  const e = await expectSdkError(client.beta.messages.create(ask({ thread: { type: "continue", previous_message_id: "msg_0123" } })), Anthropic.BadRequestError, "invalid_request_error");
  assert.match(e.message, /send the whole conversation/);

  const ran = [];
  const runner = client.beta.messages.toolRunner({
    ...ask({ max_tokens: 60, temperature: 0 }),
    max_iterations: 3,
    tools: [{ name: "get_weather", description: "The weather in a city", input_schema: { type: "object", properties: { unit: { type: "string", enum: ["c", "f"] } }, required: ["unit"] }, run: async (input) => { ran.push(input); return "sunny"; } }],
    tool_choice: { type: "any" },
  });
  let turns = 0;
  for await (const message of runner) {
    turns++;
    assert.is(message.content.at(-1).type, "tool_use");
  }
  assert.is(turns, 3, "each turn answered, the tool results with their calls");
  assert.is(ran.length, 3);
  for (const input of ran) assert.ok(["c", "f"].includes(input.unit));
});

messages("audit: one record per call with the endpoint and tokens, and metadata never stored", async ({ client, server }) => {
  const id = (name) => ({ headers: { "x-request-id": `audit-${name}` } });
  await client.messages.create(ask({ max_tokens: 4, metadata: { user_id: "META-USER-77" } }), id("create"));
  await client.messages.countTokens({ model: "tiny", messages: [{ role: "user", content: "hi" }] }, id("count"));
  const stream = client.messages.stream(ask({ max_tokens: 5 }), id("stream"));
  await stream.finalMessage();
  const mine = (rows) => rows.filter((r) => r.request_id.startsWith("audit-"));
  const rows = mine(await waitForRows(server.db, (r) => mine(r).length === 3));
  assert.equal(rows.map((r) => r.endpoint), ["/v1/messages", "/v1/messages/count_tokens", "/v1/messages"]);
  assert.is(rows[0].completion_tokens, 4);
  assert.ok(rows[1].prompt_tokens > 0);
  assert.is(rows[2].stream, true);
  assert.is(rows[2].completion_tokens, 5);
  assert.ok(rows[2].ttft_ms > 0);
  assert.is(rows[0].client, "key-1");
  assert.not.ok(readFileSync(server.db).includes(Buffer.from("META-USER-77")));
});

messages.run();

const limits = suite("messages limits");
// the endless model is served as "endless"
const askEndless = (extra = {}) => ask({ model: "endless", ...extra });

limits("queue full is 503 overloaded_error (busy, not a rate limit); a dropped stream frees its sequence; a timeout ends the stream with an error event", async () => {
  const server = await startServer(["--model", await testModel({ endless: true }), "--parallel", "1", "--queue", "0", "--max-body", "2kb"]);
  const client = new Anthropic({ baseURL: server.url, apiKey: "unused-key", maxRetries: 0 });
  try {
    const controller = new AbortController();
    const res = await request(`${server.url}/v1/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...askEndless({ max_tokens: 100_000, temperature: 1 }), stream: true }), signal: controller.signal });
    const it = res.body[Symbol.asyncIterator]();
    let seen = "";
    while (!seen.includes("content_block_delta")) {
      const { value, done } = await it.next();
      if (done) throw new Error(`the stream ended early: ${seen}`);
      seen += value;
    }
    const busy = await expectSdkError(client.messages.create(askEndless({ max_tokens: 2 })), Anthropic.InternalServerError, "overloaded_error");
    assert.is(busy.status, 503);
    assert.is(busy.headers.get("retry-after"), "1");
    controller.abort();
    // the record is written once the generation has stopped and its sequence is free
    const rows = await waitForRows(server.db, (r) => r.some((x) => x.status === "cancelled"), { what: "the dropped stream's record" });
    const cancelled = rows.find((r) => r.status === "cancelled");
    assert.ok(cancelled.completion_tokens > 0 && cancelled.endpoint === "/v1/messages");
    const next = await client.messages.create(askEndless({ max_tokens: 2 }));
    assert.is(next.usage.output_tokens, 2);
    await expectSdkError(client.messages.create(askEndless({ messages: [{ role: "user", content: "x".repeat(4000) }] })), Anthropic.APIError, "request_too_large");
  } finally {
    assert.is(await server.stop(), 0);
  }
  const slow = await startServer(["--model", await testModel({ endless: true }), "--request-timeout", "0.1"]);
  const slowClient = new Anthropic({ baseURL: slow.url, apiKey: "unused-key", maxRetries: 0 });
  try {
    await expectSdkError(slowClient.messages.create(askEndless({ max_tokens: 1000, temperature: 1 })), Anthropic.APIError, "timeout_error");
    const raw = await post(slow, "/v1/messages", { ...askEndless({ max_tokens: 1000, temperature: 1 }), stream: true });
    assert.match(raw.text, /event: error\ndata: \{.*"type":"error".*"timeout_error"/);
    assert.not.ok(raw.text.includes("message_stop"));
  } finally {
    assert.is(await slow.stop(), 0);
  }
});

limits("privacy: a marker in every field and error path never reaches the database files", async () => {
  const marker = "ANTHROPIC-PRIVACY-MARKER-3";
  const server = await startServer(["--model", await testModel(), "--max-body", "4kb"]);
  try {
    const m = `${marker} text`;
    await post(server, "/v1/messages", { max_tokens: 3, system: m, messages: [{ role: "user", content: m }, { role: "assistant", content: [{ type: "text", text: m }] }, { role: "user", content: m }], stop_sequences: [marker], metadata: { user_id: marker } });
    await post(server, "/v1/messages", { max_tokens: 3, stream: true, messages: [{ role: "user", content: m }] });
    await post(server, "/v1/messages/count_tokens", { messages: [{ role: "user", content: m }] });
    await post(server, "/v1/messages", { messages: [{ role: "user", content: m }] });
    await post(server, "/v1/messages", { max_tokens: 3, model: marker, messages: [{ role: "user", content: m }] });
    await post(server, "/v1/messages", { max_tokens: 3, messages: [{ role: marker, content: m }] });
    await post(server, "/v1/messages", { max_tokens: 3, messages: [{ role: "user", content: [{ type: marker }] }] });
    await post(server, "/v1/messages", { max_tokens: 3, messages: [{ role: "user", content: m.repeat(300) }] });
    await post(server, "/v1/messages", `{"max_tokens": "${marker}`);
    await waitForRows(server.db, (rows) => rows.length >= 9);
    assertNoMarker(server.home, marker);
    assert.not.ok(server.stderr().includes(marker));
  } finally {
    assert.is(await server.stop(), 0);
  }
});

limits.run();
