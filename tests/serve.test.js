import { suite } from "uvu";
import * as assert from "uvu/assert";
import { request } from "undici";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";
import { Agent, OpenAIResponsesModel, run as runAgent, setTracingDisabled } from "@openai/agents";
import { httpCall, jsonRequest, startServer, testModel, waitForRows } from "./helpers.js";

const json = (body) => jsonRequest(body);
const call = (server, path, options = {}) => httpCall(`${server.url}${path}`, options);
/** The events of an SSE body: [{event, data}] */
const sseEvents = (text) => text.split("\n\n").filter((b) => b.trim() && !b.startsWith(":")).map((block) => {
  const event = /^event: (.*)$/m.exec(block)?.[1];
  const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
  return { event, data };
});
const ask = (content, extra = {}) => ({ messages: [{ role: "user", content }], temperature: 0, max_tokens: 12, ...extra });


const api = suite("openai api");
api.before(async (ctx) => {
  ctx.server = await startServer(["--model", await testModel(), "--parallel", "2"]);
  ctx.client = new OpenAI({ baseURL: `${ctx.server.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
api.after(async (ctx) => { assert.is(await ctx.server.stop(), 0); });

api("health, models, one model, and the ready line", async ({ server }) => {
  assert.match(server.stderr(), /mlxs listening on http:\/\/127\.0\.0\.1:\d+ \(models: tiny, backend: llama\.cpp\/cpu, threads: 1, keep-alive: 5m\)/);
  const health = await call(server, "/health");
  assert.is(health.status, 200);
  assert.equal(health.body, { status: "ok", models: [{ name: "tiny", loaded: true, busy: 0, waiting: 0 }], queue: 0 });
  const models = await call(server, "/v1/models");
  assert.is(models.body.object, "list");
  assert.equal(models.body.data.map((m) => m.id), ["tiny"]);
  const one = await call(server, "/v1/models/tiny");
  assert.is(one.body.id, "tiny");
  assert.is((await call(server, "/v1/models/nope")).status, 404);
});

api("chat: OpenAI's shape, timings, and the same text streamed as SSE", async ({ server }) => {
  const plain = await call(server, "/v1/chat/completions", json(ask("hello there", { max_tokens: 16 })));
  assert.is(plain.status, 200);
  const b = plain.body;
  assert.match(b.id, /^chatcmpl-/);
  assert.is(b.object, "chat.completion");
  assert.is(b.model, "tiny");
  assert.ok(Number.isInteger(b.created));
  assert.is(b.choices[0].message.role, "assistant");
  assert.ok(b.choices[0].message.content.length > 0);
  assert.ok(["stop", "length"].includes(b.choices[0].finish_reason));
  assert.is(b.usage.total_tokens, b.usage.prompt_tokens + b.usage.completion_tokens);
  for (const key of ["queue_ms", "ttft_ms", "total_ms", "predicted_per_second"]) assert.type(b.timings[key], "number");
  assert.match(plain.headers["x-request-id"], /^req_/);

  const streamed = await call(server, "/v1/chat/completions", json(ask("hello there", { max_tokens: 16, stream: true, stream_options: { include_usage: true } })));
  assert.match(streamed.headers["content-type"], /^text\/event-stream/);
  const events = sseEvents(streamed.text);
  assert.is(events.at(-1).data, "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
  assert.is(chunks[0].choices[0].delta.role, "assistant");
  assert.ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id));
  const usage = chunks.at(-1);
  assert.equal(usage.choices, []);
  // the same prompt again: all of it but its last token found in the cache this time
  assert.equal(usage.usage, { ...b.usage, prompt_tokens_details: { cached_tokens: b.usage.prompt_tokens - 1 } });
  const last = chunks.at(-2);
  assert.is(last.choices[0].finish_reason, b.choices[0].finish_reason);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.is(text, b.choices[0].message.content);
});

api("chat parameters: stop (string or list), max_completion_tokens, seed, penalties, content parts, developer role", async ({ server }) => {
  const free = (await call(server, "/v1/chat/completions", json(ask("a story", { max_tokens: 30 })))).body.choices[0].message.content;
  const word = free.split(" ")[3];
  const stopped = await call(server, "/v1/chat/completions", json(ask("a story", { max_tokens: 30, stop: ` ${word}` })));
  assert.is(stopped.body.choices[0].message.content, free.slice(0, free.indexOf(` ${word}`)));
  assert.is(stopped.body.choices[0].finish_reason, "stop");
  const list = await call(server, "/v1/chat/completions", json(ask("a story", { max_tokens: 30, stop: ["zzzz", ` ${word}`] })));
  assert.is(list.body.choices[0].message.content, stopped.body.choices[0].message.content);
  const capped = await call(server, "/v1/chat/completions", json(ask("a story", { max_tokens: 50, max_completion_tokens: 3 })));
  assert.is(capped.body.usage.completion_tokens, 3);
  assert.is(capped.body.choices[0].finish_reason, "length");
  const seeded = (seed) => call(server, "/v1/chat/completions", json({ messages: [{ role: "user", content: "go" }], temperature: 1, seed, max_tokens: 20, top_p: 0.9, top_k: 30, min_p: 0.01, frequency_penalty: 0.5, presence_penalty: 0.2, repeat_penalty: 1.1 }));
  assert.is((await seeded(5)).body.choices[0].message.content, (await seeded(5)).body.choices[0].message.content);
  // each penalty does what it says: at temperature 0 the plain answer repeats itself, a
  // penalized one repeats less
  const repeats = (text) => { const words = text.trim().split(/\s+/); return words.length - new Set(words).size; };
  const greedy = async (extra) => (await call(server, "/v1/chat/completions", json(ask("a story", { max_tokens: 80, ...extra })))).body.choices[0].message.content;
  const plain = await greedy({});
  assert.ok(repeats(plain) > 0, `the plain answer repeats itself: ${plain}`);
  for (const penalty of [{ frequency_penalty: 2 }, { presence_penalty: 2 }, { repeat_penalty: 2 }]) {
    const penalized = await greedy(penalty);
    assert.ok(penalized !== plain && repeats(penalized) < repeats(plain), `${JSON.stringify(penalty)}: ${penalized}`);
  }
  const parts = await call(server, "/v1/chat/completions", json({ messages: [{ role: "developer", content: "be brief" }, { role: "user", content: [{ type: "text", text: "hello " }, { type: "text", text: "there" }] }], temperature: 0, max_tokens: 16 }));
  assert.is(parts.status, 200);
});

api("completions and embeddings (float and base64)", async ({ server }) => {
  const c = await call(server, "/v1/completions", json({ prompt: "the water", max_tokens: 8, temperature: 0 }));
  assert.is(c.body.object, "text_completion");
  assert.match(c.body.id, /^cmpl-/);
  assert.ok(c.body.choices[0].text.length > 0);
  const one = await call(server, "/v1/completions", json({ prompt: ["the water"], max_tokens: 8, temperature: 0 }));
  assert.is(one.body.choices[0].text, c.body.choices[0].text);
  const s = await call(server, "/v1/completions", json({ prompt: "the water", max_tokens: 8, temperature: 0, stream: true }));
  const pieces = sseEvents(s.text).slice(0, -1).map((e) => JSON.parse(e.data).choices[0].text).join("");
  assert.is(pieces, c.body.choices[0].text);
  const e = await call(server, "/v1/embeddings", json({ input: ["hello world", "the sea"] }));
  assert.is(e.body.object, "list");
  assert.is(e.body.data.length, 2);
  assert.is(e.body.data[0].embedding.length, 64);
  assert.ok(e.body.usage.prompt_tokens > 0);
  const b64 = await call(server, "/v1/embeddings", json({ input: "hello world", encoding_format: "base64" }));
  const buf = Buffer.from(b64.body.data[0].embedding, "base64");
  const floats = Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
  floats.forEach((f, i) => assert.ok(Math.abs(f - e.body.data[0].embedding[i]) < 1e-6));
  const long = await call(server, "/v1/embeddings", json({ input: "water ".repeat(3000) }));
  assert.is(long.status, 400);
});

api("the official OpenAI client works unchanged, errors included", async ({ client }) => {
  const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 8, temperature: 0 });
  assert.ok(chat.choices[0].message.content.length > 0);
  let streamed = "";
  const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 8, temperature: 0, stream: true });
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
  assert.is(streamed, chat.choices[0].message.content);
  const completion = await client.completions.create({ model: "tiny", prompt: "the sea", max_tokens: 5, temperature: 0 });
  assert.ok(completion.choices[0].text.length > 0);
  const embedding = await client.embeddings.create({ model: "tiny", input: "hello" });
  assert.is(embedding.data[0].embedding.length, 64);
  const models = await client.models.list();
  assert.is(models.data[0].id, "tiny");
  try {
    await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "x" }], temperature: 9 });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, OpenAI.BadRequestError);
    assert.match(error.message, /temperature/);
    assert.is(error.param, "temperature");
  }
  try {
    await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, OpenAI.NotFoundError);
    assert.is(error.code, "model_not_found");
  }
});

api("errors are problem+json with a request id and the OpenAI error member, never echoing the request", async ({ server }) => {
  const marker = "ECHO-MARKER-55";
  const check = async (res, status, code) => {
    assert.is(res.status, status, res.text);
    assert.match(res.headers["content-type"], /^application\/problem\+json/);
    assert.is(res.body.status, status);
    assert.is(res.body.code, code);
    assert.is(res.body.request_id, res.headers["x-request-id"]);
    assert.match(res.body.instance, /^urn:mlxs:request:/);
    assert.ok(res.body.title && res.body.detail && res.body.type);
    assert.is(res.body.error.code, code);
    assert.is(res.body.error.message, res.body.detail);
    assert.not.ok(res.text.includes(marker), "the request is not echoed");
    return res;
  };
  await check(await call(server, "/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: `{"messages": "${marker}` }), 400, "invalid_json");
  await check(await call(server, "/v1/chat/completions", { method: "POST", headers: { "content-type": "text/plain" }, body: marker }), 415, "unsupported_media_type");
  await check(await call(server, `/v1/${marker}`), 404, "not_found");
  const wrong = await check(await call(server, "/v1/chat/completions"), 405, "method_not_allowed");
  assert.is(wrong.headers.allow, "POST");
  const param = await check(await call(server, "/v1/chat/completions", json(ask("x", { top_p: 7 }))), 400, "invalid_request");
  assert.is(param.body.error.param, "top_p");
  const maxTokens = await check(await call(server, "/v1/chat/completions", json(ask("x", { max_tokens: 0 }))), 400, "invalid_request");
  assert.is(maxTokens.body.error.param, "max_tokens");
  assert.match(maxTokens.body.detail, /^max_tokens /);
  for (const model of ["../../etc/passwd", "/etc/passwd", "hf:user/repo:Q4", "https://example.org/m.gguf", marker]) {
    const r = await check(await call(server, "/v1/chat/completions", json({ ...ask("x"), model })), 404, "model_not_found");
    assert.is(r.body.error.param, "model");
  }
  for (const [extra, name] of [[{ n: 2 }, "n"], [{ logprobs: true }, "logprobs"], [{ store: true }, "store"], [{ tools: [{ type: "web_search" }] }, "tools[0].type"], [{ web_search_options: {} }, "web_search_options"]]) {
    const r = await check(await call(server, "/v1/chat/completions", json(ask("x", extra))), 400, "unsupported_parameter");
    assert.is(r.body.error.param, name);
  }
  const image = await check(await call(server, "/v1/chat/completions", json({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:x" } }] }] })), 400, "unsupported_parameter");
  assert.match(image.body.error.param, /^messages\[0\]\.content\[0\]/);
  await check(await call(server, "/v1/chat/completions", json({ messages: [] })), 400, "invalid_parameter");
  await check(await call(server, "/v1/chat/completions", json(ask(`${marker} `.repeat(900)))), 400, "invalid_request");
});

api("X-Request-ID: a safe one sent by the client is kept, anything else replaced", async ({ server }) => {
  const kept = await call(server, "/health", { headers: { "x-request-id": "client-abc.123" } });
  assert.is(kept.headers["x-request-id"], "client-abc.123");
  const replaced = await call(server, "/health", { headers: { "x-request-id": "bad id with spaces" } });
  assert.match(replaced.headers["x-request-id"], /^req_/);
  const long = await call(server, "/health", { headers: { "x-request-id": "a".repeat(129) } });
  assert.match(long.headers["x-request-id"], /^req_/);
});

api("every /v1 request leaves one audit record, errors included, with the route as endpoint", async ({ server }) => {
  const id = (n) => ({ "x-request-id": `every-${n}` });
  await call(server, "/v1/models", { headers: id(0) });
  await call(server, "/v1/chat/completions", jsonRequest(ask("x", { temperature: 5 }), id(1)));
  await call(server, "/v1/chat/completions", jsonRequest({ ...ask("x"), model: "missing" }, id(2)));
  await call(server, "/v1/no-such-route", { headers: id(3) });
  await call(server, "/v1/chat/completions", jsonRequest(ask("hello", { stream: true, max_tokens: 4 }), id(4)));
  const mine = (rows) => rows.filter((r) => r.request_id.startsWith("every-"));
  const rows = mine(await waitForRows(server.db, (r) => mine(r).length >= 5));
  assert.is(rows.length, 5);
  const [models, bad, missing, unknown, chat] = rows;
  assert.is(models.endpoint, "/v1/models");
  assert.is(models.status, "success");
  assert.is(bad.status, "error");
  assert.is(bad.status_code, 400);
  assert.is(bad.error_type, "invalid_request");
  assert.is(missing.status_code, 404);
  assert.is(missing.model, null);
  assert.is(unknown.endpoint, "unknown");
  assert.is(chat.endpoint, "/v1/chat/completions");
  assert.is(chat.stream, true);
  assert.is(chat.model, "tiny");
  assert.is(chat.completion_tokens, 4);
  assert.ok(chat.ttft_ms > 0);
  assert.is(chat.backend_type, "llama.cpp/cpu");
});

api("audit over HTTP: logs with filters and has_more, stats, export, and the live stream", async ({ server }) => {
  await call(server, "/v1/chat/completions", jsonRequest(ask("hi", { max_tokens: 2 }), { "x-request-id": "logged-chat" }));
  await waitForRows(server.db, (rows) => rows.some((r) => r.request_id === "logged-chat"));
  const logs = await call(server, "/v1/audit/logs?limit=1&endpoint=/v1/chat/completions");
  assert.is(logs.body.data.length, 1);
  assert.is(logs.body.has_more, true);
  assert.is(logs.body.data[0].endpoint, "/v1/chat/completions");
  const bad = await call(server, "/v1/audit/logs?since=yesterday");
  assert.is(bad.status, 400);
  assert.is(bad.body.error.param, "since");
  const stats = await call(server, "/v1/audit/stats?since=1h");
  assert.ok(stats.body.total > 0);
  const csv = await call(server, "/v1/audit/export?format=csv&status=success");
  assert.match(csv.text, /^id,request_id,timestamp,/);
  const jsonl = await call(server, "/v1/audit/export?format=jsonl");
  assert.ok(jsonl.text.trim().split("\n").every((l) => JSON.parse(l).request_id));
  // the live stream: a new record arrives as an event
  const controller = new AbortController();
  const res = await request(`${server.url}/v1/audit/stream?endpoint=/v1/embeddings`, { signal: controller.signal });
  assert.match(res.headers["content-type"], /^text\/event-stream/);
  await call(server, "/v1/embeddings", json({ input: "stream me" }));
  let text = "";
  const giveUp = setTimeout(() => controller.abort(), 20_000);
  try {
    for await (const chunk of res.body) {
      text += chunk;
      if (/\ndata: /.test(`\n${text}`) && text.includes("\n\n", text.indexOf("data: "))) break;
    }
  } catch { /* given up: the assertion below says so */ }
  clearTimeout(giveUp);
  controller.abort();
  const event = sseEvents(text).find((e) => e.data);
  assert.ok(event, `a record's event within 20 s; got ${JSON.stringify(text)}`);
  assert.is(JSON.parse(event.data).endpoint, "/v1/embeddings");
});

api("no seed: every request draws a fresh one (20 alike at temperature 1 give at least 19 answers); the same seed gives the same answer", async () => {
  // node-llama-cpp seeds an absent seed with the current second: requests in one second answered alike.
  // The model that never ends: the tiny one may end an answer at its first token, and two empty answers are alike whatever their seeds
  const server = await startServer(["--model", await testModel({ endless: true })]);
  try {
    const answer = async (extra = {}) => {
      const r = await call(server, "/v1/chat/completions", json({ messages: [{ role: "user", content: "go on" }], temperature: 1, max_tokens: 40, ...extra }));
      assert.is(r.status, 200);
      return r.body.choices[0].message.content;
    };
    const answers = [];
    for (let i = 0; i < 20; i++) answers.push(await answer());
    assert.ok(new Set(answers).size >= 19, `${new Set(answers).size} distinct of 20: ${JSON.stringify(answers)}`);
    assert.is(await answer({ seed: 123 }), await answer({ seed: 123 }));
  } finally {
    await server.stop();
  }
});

api.run();

const demo = suite("the demo model ends its answers and its JSON");
demo.before(async (ctx) => {
  // no --model, nothing in the data dir: the demo model
  ctx.server = await startServer([]);
  ctx.client = new OpenAI({ baseURL: `${ctx.server.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
demo.after(async (ctx) => { assert.is(await ctx.server.stop(), 0); });

// each try seeded (at the default temperature): the same answers every run, so the count is a property of the model, not of chance
const TRIES = 10;

demo("a chat at the default temperature ends by itself within 200 tokens (at least 8 of 10)", async ({ server }) => {
  assert.match(server.stderr(), /models: demo/);
  const reasons = [];
  for (let i = 0; i < TRIES; i++) {
    const r = await call(server, "/v1/chat/completions", json({ messages: [{ role: "user", content: `Tell me about the sea, ${i}` }], max_tokens: 200, seed: i }));
    assert.is(r.status, 200, r.text);
    reasons.push(r.body.choices[0].finish_reason);
  }
  assert.ok(reasons.filter((r) => r === "stop").length >= 8, reasons.join(" "));
});

demo("JSON strings without maxLength, and lists of them, close by themselves: json_schema answers finish with stop and parse (at least 8 of 10)", async ({ server }) => {
  const schema = { type: "object", properties: { name: { type: "string" }, tags: { type: "array", items: { type: "string" } } }, required: ["name", "tags"], additionalProperties: false };
  const done = [];
  for (let i = 0; i < TRIES; i++) {
    const r = await call(server, "/v1/chat/completions", json({ messages: [{ role: "user", content: `Someone, ${i}` }], max_tokens: 200, seed: i, response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } } }));
    assert.is(r.status, 200, r.text);
    const choice = r.body.choices[0];
    if (choice.finish_reason === "stop") {
      const value = JSON.parse(choice.message.content);
      assert.type(value.name, "string");
      assert.ok(Array.isArray(value.tags));
      done.push(choice.message.content);
    }
  }
  assert.ok(done.length >= 8, `${done.length} of ${TRIES} finished`);
});

demo("the official client's parse() with a zod schema without .max(): completes (no LengthFinishReasonError) at least 8 of 10 times", async ({ client }) => {
  const Person = z.object({ name: z.string(), hobbies: z.array(z.string()), city: z.string() });
  let completed = 0;
  const failures = [];
  for (let i = 0; i < TRIES; i++) {
    try {
      const r = await client.chat.completions.parse({ model: "demo", messages: [{ role: "user", content: `Describe someone, ${i}` }], max_tokens: 200, seed: i, response_format: zodResponseFormat(Person, "person") });
      assert.is(r.choices[0].finish_reason, "stop");
      assert.ok(Person.safeParse(r.choices[0].message.parsed).success);
      completed++;
    } catch (error) {
      failures.push(error.constructor.name);
    }
  }
  assert.ok(completed >= 8, `${completed} of ${TRIES}; failures: ${failures.join(", ")}`);
});

demo("@openai/agents: an agent with a structured output type without .max() on the Responses API completes (no incomplete response) at least 8 of 10 times", async ({ client }) => {
  // its traces would be sent to OpenAI: nothing leaves this machine
  setTracingDisabled(true);
  const Person = z.object({ name: z.string(), hobbies: z.array(z.string()), city: z.string() });
  let completed = 0;
  const failures = [];
  for (let i = 0; i < TRIES; i++) {
    const agent = new Agent({ name: "describer", instructions: "Describe someone.", model: new OpenAIResponsesModel(client, "demo"), outputType: Person, modelSettings: { maxTokens: 200, providerData: { seed: i } } });
    try {
      const result = await runAgent(agent, `Describe someone, ${i}`);
      assert.ok(Person.safeParse(result.finalOutput).success);
      completed++;
    } catch (error) {
      failures.push(`${error.constructor.name}: ${String(error.message).slice(0, 80)}`);
    }
  }
  assert.ok(completed >= 8, `${completed} of ${TRIES}; failures: ${failures.join(", ")}`);
});

demo.run();
