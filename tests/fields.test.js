// Every documented request field of every route, sent with a value that is not its default to
// a real server: honoured (the answer shows it), ignored (the answer is the one given without
// it, and the table says why), or refused (400 naming it). The lists below are OpenAI's
// (openai-openapi f85dbe2, 2026-08-21) and Anthropic's (the API reference, @anthropic-ai/sdk
// 1.14 with its beta fields); a field in a list without a class in mlxs's tables
// (src/server/*-fields.ts), or classed there without a case here, fails.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CHAT_FIELDS, COMPLETION_FIELDS, EMBEDDING_FIELDS, RESPONSES_FIELDS } from "../dist/server/openai-fields.js";
import { COUNT_TOKENS_FIELDS, MESSAGES_FIELDS } from "../dist/server/anthropic-fields.js";
import { ANSWER_WORDS } from "../dist/server/validate.js";
import { ROOT, httpCall, jsonRequest, startServer, testModel, waitFor } from "./helpers.js";

const state = {};
const call = (path, body) => httpCall(`${state.server.url}${path}`, jsonRequest(body, { "anthropic-version": "2023-06-01" }));

const WEATHER = { name: "get_weather", description: "The weather in a city", parameters: { type: "object", properties: { unit: { type: "string", enum: ["c", "f"] } }, required: ["unit"], additionalProperties: false } };
const MOOD = { type: "object", properties: { mood: { type: "string", enum: ["good", "bad"] }, sure: { type: "boolean" } }, required: ["mood", "sure"], additionalProperties: false };
const isMood = (v) => v && ["good", "bad"].includes(v.mood) && typeof v.sure === "boolean" && Object.keys(v).length === 2;

/**
 * Each route: its base request (greedy, so that the same request gives the same answer),
 * how to read an answer's text, its completion tokens and its prompt tokens, and its cases.
 * A case: `value` (merged into the base body: the field, and what it needs beside it),
 * `observe(answer, route)` for a field honoured where the answer shows it, and `passes`, a
 * value of a refused field that asks nothing and is answered.
 */
const ROUTES = {};

const chatLike = (field) => ({
  temperature: { value: { temperature: 1.5 }, observe: differsForSomeSeed },
  top_p: { value: { temperature: 1, top_p: 1e-9 }, observe: greedyForEverySeed },
  top_k: { value: { temperature: 1, top_k: 1 }, observe: greedyForEverySeed },
  min_p: { value: { temperature: 1, min_p: 1 }, observe: greedyForEverySeed },
  seed: { value: { temperature: 1, seed: 5 }, observe: seedReproduces },
  [field]: { value: { [field]: 3 }, observe: capsAt(3) },
  stop: { value: {}, observe: stopsAt("stop") },
  // below their defaults, penalties reward repeats: a greedy answer of distinct words changes
  frequency_penalty: { value: { frequency_penalty: -2 }, observe: differsFromGreedy },
  presence_penalty: { value: { presence_penalty: -2 }, observe: differsFromGreedy },
  repeat_penalty: { value: { repeat_penalty: 0.5 }, observe: differsFromGreedy },
  keep_alive: { value: { keep_alive: "42m" }, observe: keptFor(42) },
  model: { value: { model: "tiny" }, observe: (a) => assert.is(a.body.model ?? "tiny", "tiny") },
});

ROUTES["/v1/chat/completions"] = {
  table: CHAT_FIELDS,
  base: { model: "tiny", messages: [{ role: "user", content: "Tell me about the weather." }], max_tokens: 24, temperature: 0 },
  text: (b) => b.choices[0].message.content ?? "",
  tokens: (b) => b.usage.completion_tokens,
  prompt: (b) => b.usage.prompt_tokens,
  cases: {
    ...chatLike("max_tokens"),
    max_completion_tokens: { value: { max_completion_tokens: 3 }, observe: capsAt(3) },
    messages: { value: { messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Tell me about the weather." }] }, observe: longerPrompt },
    stream: { value: { stream: true }, observe: streamed },
    stream_options: { value: { stream: true, stream_options: { include_usage: true } }, observe: (a) => assert.match(a.text, /"usage":\{"prompt_tokens":\d+/) },
    tools: { value: { tools: [{ type: "function", function: WEATHER }] }, observe: longerPrompt },
    tool_choice: { value: { tools: [{ type: "function", function: WEATHER }], tool_choice: "required" }, observe: (a) => assert.is(a.body.choices[0].message.tool_calls[0].function.name, "get_weather") },
    parallel_tool_calls: { value: { tools: [{ type: "function", function: WEATHER }], tool_choice: "required", parallel_tool_calls: false, max_tokens: 120 }, observe: (a) => assert.is(a.body.choices[0].message.tool_calls.length, 1) },
    functions: { value: { functions: [WEATHER] }, observe: longerPrompt },
    function_call: { value: { functions: [WEATHER], function_call: { name: "get_weather" } }, observe: (a) => assert.is(a.body.choices[0].message.tool_calls[0].function.name, "get_weather") },
    response_format: { value: { max_tokens: 60, response_format: { type: "json_schema", json_schema: { name: "m", schema: MOOD } } }, observe: (a, r) => assert.ok(isMood(JSON.parse(r.text(a.body)))) },
    n: { value: { n: 2 }, passes: { n: 1 } },
    logprobs: { value: { logprobs: true }, passes: { logprobs: false } },
    top_logprobs: { value: { top_logprobs: 5 }, passes: { top_logprobs: 0 } },
    logit_bias: { value: { logit_bias: { 42: -100 } }, passes: { logit_bias: {} } },
    audio: { value: { audio: { voice: "alloy", format: "wav" } } },
    prediction: { value: { prediction: { type: "content", content: "x" } } },
    web_search_options: { value: { web_search_options: {} } },
    moderation: { value: { moderation: { model: "omni-moderation-latest" } } },
    store: { value: { store: true }, passes: { store: false } },
    modalities: { value: { modalities: ["text", "audio"] }, passes: { modalities: ["text"] } },
    verbosity: { value: { verbosity: "low" }, passes: { verbosity: "medium" } },
    metadata: { value: { metadata: { team: "a" } } },
    user: { value: { user: "u-1" } },
    safety_identifier: { value: { safety_identifier: "s-1" } },
    service_tier: { value: { service_tier: "flex" } },
    prompt_cache_key: { value: { prompt_cache_key: "k-1" } },
    prompt_cache_retention: { value: { prompt_cache_retention: "24h" } },
    prompt_cache_options: { value: { prompt_cache_options: { ttl: "30m" } } },
    reasoning_effort: { value: { reasoning_effort: "high" } },
    strict: { value: { strict: true } },
  },
};

ROUTES["/v1/completions"] = {
  table: COMPLETION_FIELDS,
  base: { model: "tiny", prompt: "The weather today is", max_tokens: 24, temperature: 0 },
  text: (b) => b.choices[0].text,
  tokens: (b) => b.usage.completion_tokens,
  prompt: (b) => b.usage.prompt_tokens,
  cases: {
    ...chatLike("max_tokens"),
    max_completion_tokens: { value: { max_completion_tokens: 3 }, observe: capsAt(3) },
    prompt: { value: { prompt: ["The weather today, by the sea, is"] }, observe: longerPrompt },
    stream: { value: { stream: true }, observe: streamed },
    stream_options: { value: { stream: true, stream_options: { include_usage: true } }, observe: (a) => assert.match(a.text, /"usage":\{"prompt_tokens":\d+/) },
    response_format: { value: { max_tokens: 60, response_format: { type: "json_object" } }, observe: (a, r) => assert.type(JSON.parse(r.text(a.body)), "object") },
    n: { value: { n: 2 }, passes: { n: 1 } },
    best_of: { value: { best_of: 2 }, passes: { best_of: 1 } },
    echo: { value: { echo: true }, passes: { echo: false } },
    logprobs: { value: { logprobs: 2 }, passes: { logprobs: false } },
    logit_bias: { value: { logit_bias: { 42: -100 } }, passes: { logit_bias: {} } },
    suffix: { value: { suffix: " tomorrow." } },
    user: { value: { user: "u-1" } },
  },
};

ROUTES["/v1/embeddings"] = {
  table: EMBEDDING_FIELDS,
  base: { model: "tiny", input: "the weather" },
  text: (b) => JSON.stringify(b.data.map((d) => d.embedding)),
  prompt: (b) => b.usage.prompt_tokens,
  cases: {
    model: { value: { model: "tiny" }, observe: (a) => assert.is(a.body.model, "tiny") },
    input: { value: { input: ["the weather", "the sea"] }, observe: (a) => assert.is(a.body.data.length, 2) },
    encoding_format: { value: { encoding_format: "base64" }, observe: (a) => assert.type(a.body.data[0].embedding, "string") },
    keep_alive: { value: { keep_alive: "42m" }, observe: keptFor(42) },
    dimensions: { value: { dimensions: 8 } },
    user: { value: { user: "u-1" } },
  },
};

const responseCall = (a) => a.body.output.filter((o) => o.type === "function_call");
ROUTES["/v1/responses"] = {
  table: RESPONSES_FIELDS,
  base: { model: "tiny", input: "Tell me about the weather.", max_output_tokens: 24, temperature: 0 },
  text: (b) => b.output.filter((o) => o.type === "message").flatMap((o) => o.content.map((c) => c.text)).join(""),
  tokens: (b) => b.usage.output_tokens,
  prompt: (b) => b.usage.input_tokens,
  cases: {
    ...chatLike("max_output_tokens"),
    max_tokens: { value: { max_output_tokens: null, max_tokens: 3 }, observe: capsAt(3) },
    max_completion_tokens: { value: { max_output_tokens: null, max_completion_tokens: 3 }, observe: capsAt(3) },
    input: { value: { input: [{ role: "user", content: "Tell me about the weather." }, { role: "assistant", content: "Which city?" }, { role: "user", content: "Paris." }] }, observe: longerPrompt },
    instructions: { value: { instructions: "You are terse." }, observe: longerPrompt },
    stream: { value: { stream: true }, observe: streamed },
    text: { value: { max_output_tokens: 60, text: { format: { type: "json_schema", name: "m", schema: MOOD } } }, observe: (a, r) => assert.ok(isMood(JSON.parse(r.text(a.body)))) },
    tools: { value: { tools: [{ type: "function", ...WEATHER }] }, observe: longerPrompt },
    tool_choice: { value: { tools: [{ type: "function", ...WEATHER }], tool_choice: "required" }, observe: (a) => assert.is(responseCall(a)[0].name, "get_weather") },
    parallel_tool_calls: { value: { tools: [{ type: "function", ...WEATHER }], tool_choice: "required", parallel_tool_calls: false, max_output_tokens: 120 }, observe: (a) => assert.is(responseCall(a).length, 1) },
    max_tool_calls: { value: { tools: [{ type: "function", ...WEATHER }], tool_choice: "required", max_tool_calls: 0 }, observe: (a) => assert.is(responseCall(a).length, 0) },
    store: { value: { store: true }, passes: { store: false } },
    previous_response_id: { value: { previous_response_id: "resp_0123" } },
    conversation: { value: { conversation: "conv_0123" } },
    background: { value: { background: true }, passes: { background: false } },
    prompt: { value: { prompt: { id: "pmpt_0123" } } },
    top_logprobs: { value: { top_logprobs: 5 }, passes: { top_logprobs: 0 } },
    include: { value: { include: ["message.output_text.logprobs"] }, passes: { include: ["reasoning.encrypted_content"] } },
    moderation: { value: { moderation: { model: "omni-moderation-latest" } } },
    context_management: { value: { context_management: [{ type: "compaction", compact_threshold: 1000 }] } },
    stream_options: { value: { stream_options: { include_obfuscation: false } } },
    reasoning: { value: { reasoning: { effort: "high", summary: "auto" } } },
    truncation: { value: { truncation: "auto" } },
    metadata: { value: { metadata: { team: "a" } } },
    user: { value: { user: "u-1" } },
    safety_identifier: { value: { safety_identifier: "s-1" } },
    service_tier: { value: { service_tier: "flex" } },
    prompt_cache_key: { value: { prompt_cache_key: "k-1" } },
    prompt_cache_retention: { value: { prompt_cache_retention: "24h" } },
    prompt_cache_options: { value: { prompt_cache_options: { ttl: "30m" } } },
  },
};

const ANTHROPIC_TOOL = { name: WEATHER.name, description: WEATHER.description, input_schema: WEATHER.parameters };
/** What both Anthropic routes read, refuse or ignore alike. */
const anthropicPrompt = {
  model: { value: { model: "tiny" } },
  messages: { value: { messages: [{ role: "user", content: "Tell me about the weather." }, { role: "assistant", content: "Which city?" }, { role: "user", content: "Paris." }] }, observe: longerPrompt },
  system: { value: { system: [{ type: "text", text: "You are terse." }] }, observe: longerPrompt },
  tools: { value: { tools: [ANTHROPIC_TOOL] }, observe: longerPrompt },
  thinking: { value: { thinking: { type: "enabled", budget_tokens: 1024 } }, passes: { thinking: { type: "disabled" } } },
  mcp_servers: { value: { mcp_servers: [{ type: "url", url: "https://mcp.example.org", name: "x" }] }, passes: { mcp_servers: [] } },
  context_management: { value: { context_management: { edits: [{ type: "clear_tool_uses_20250919" }] } } },
  keep_alive: { value: { keep_alive: "42m" }, observe: keptFor(42) },
  cache_control: { value: { cache_control: { type: "ephemeral" } } },
  speed: { value: { speed: "fast" } },
  user_profile_id: { value: { user_profile_id: "up-1" } },
  workspace_id: { value: { workspace_id: "ws-1" } },
  betas: { value: { betas: ["message-threads-2026-08-12"] } },
  billing_policy: { value: { billing_policy: { type: "billing_policy", bill_to: "user_profile" } } },
};
const anthropicFormat = (field) => ({ max_tokens: 60, ...(field === "output_format" ? { output_format: { type: "json_schema", schema: MOOD } } : { output_config: { format: { type: "json_schema", schema: MOOD } } }) });

ROUTES["/v1/messages"] = {
  table: MESSAGES_FIELDS,
  base: { model: "tiny", messages: [{ role: "user", content: "Tell me about the weather." }], max_tokens: 24, temperature: 0 },
  text: (b) => b.content.filter((c) => c.type === "text").map((c) => c.text).join(""),
  tokens: (b) => b.usage.output_tokens,
  prompt: (b) => b.usage.input_tokens,
  cases: {
    ...anthropicPrompt,
    ...Object.fromEntries(["temperature", "top_p", "top_k", "seed", "max_tokens", "keep_alive", "model"].map((f) => [f, chatLike("max_tokens")[f]])),
    stop_sequences: { value: {}, observe: stopsAt("stop_sequences") },
    stream: { value: { stream: true }, observe: streamed },
    tool_choice: { value: { tools: [ANTHROPIC_TOOL], tool_choice: { type: "any" } }, observe: (a) => assert.is(a.body.content.find((c) => c.type === "tool_use").name, "get_weather") },
    output_config: { value: anthropicFormat("output_config"), observe: (a, r) => assert.ok(isMood(JSON.parse(r.text(a.body)))) },
    output_format: { value: anthropicFormat("output_format"), observe: (a, r) => assert.ok(isMood(JSON.parse(r.text(a.body)))) },
    container: { value: { container: "container_0123" } },
    thread: { value: { thread: { type: "create" } } },
    compaction: { value: { compaction: { type: "compaction" } } },
    metadata: { value: { metadata: { user_id: "u-1" } } },
    service_tier: { value: { service_tier: "standard_only" } },
    inference_geo: { value: { inference_geo: "us" } },
    diagnostics: { value: { diagnostics: { previous_message_id: "msg_0123" } } },
    fallbacks: { value: { fallbacks: "default" } },
    fallback_credit_token: { value: { fallback_credit_token: "fct_0123" } },
  },
};

ROUTES["/v1/messages/count_tokens"] = {
  table: COUNT_TOKENS_FIELDS,
  base: { model: "tiny", messages: [{ role: "user", content: "Tell me about the weather." }] },
  text: (b) => String(b.input_tokens),
  prompt: (b) => b.input_tokens,
  cases: {
    ...anthropicPrompt,
    // tools offered to no call are not in the prompt: counted as without them
    tool_choice: { value: { tools: [ANTHROPIC_TOOL], tool_choice: { type: "none" } }, observe: (a) => assert.is(a.body.input_tokens, state.greedy["/v1/messages/count_tokens"].body.input_tokens) },
    output_config: { value: { output_config: { format: { type: "json_schema", schema: MOOD } } } },
    output_format: { value: { output_format: { type: "json_schema", schema: MOOD } } },
    compaction: { value: { compaction: { type: "compaction" } } },
  },
};

/** Documented fields the installed clients' request types also name: an upgrade that adds one fails here. */
const SDK_PARAMS = [
  ["/v1/chat/completions", "openai/resources/chat/completions/completions.d.ts", "ChatCompletionCreateParamsBase"],
  ["/v1/completions", "openai/resources/completions.d.ts", "CompletionCreateParamsBase"],
  ["/v1/embeddings", "openai/resources/embeddings.d.ts", "EmbeddingCreateParams"],
  ["/v1/responses", "openai/resources/responses/responses.d.ts", "ResponseCreateParamsBase"],
  ["/v1/messages", "@anthropic-ai/sdk/resources/beta/messages/messages.d.ts", "MessageCreateParamsBase"],
  ["/v1/messages", "@anthropic-ai/sdk/resources/messages/messages.d.ts", "MessageCreateParamsBase"],
  ["/v1/messages/count_tokens", "@anthropic-ai/sdk/resources/beta/messages/messages.d.ts", "MessageCountTokensParams"],
];

function sdkFields(file, name) {
  const text = readFileSync(join(ROOT, "node_modules", file), "utf8");
  const start = text.indexOf(`export interface ${name} {`);
  assert.ok(start >= 0, `${name} in ${file}`);
  const body = text.slice(start, text.indexOf("\n}", start));
  return [...body.matchAll(/^ {4}([a-z_]+)\??:/gm)].map((m) => m[1]);
}

// ---- observations: what the answer shows of a field honoured

async function answer(path, body) {
  const r = await call(path, body);
  assert.is(r.status, 200, `${path} ${JSON.stringify(Object.keys(body))}: ${r.text.slice(0, 300)}`);
  return r;
}
const greedyText = (route, path) => route.text(state.greedy[path].body);
const sampled = async (route, path, extra) => route.text((await answer(path, { ...route.base, ...extra })).body);
const SEEDS = [1, 2, 3, 4];

async function differsForSomeSeed(a, route, path, value) {
  const texts = await Promise.all(SEEDS.map((seed) => sampled(route, path, { ...value, seed })));
  assert.ok(texts.some((t) => t !== greedyText(route, path)), "sampled answers differ from the greedy one");
}
async function greedyForEverySeed(a, route, path, value) {
  for (const seed of SEEDS) assert.is(await sampled(route, path, { ...value, seed }), greedyText(route, path), `seed ${seed}`);
  const free = await Promise.all(SEEDS.map((seed) => sampled(route, path, { temperature: 1, seed })));
  assert.ok(free.some((t) => t !== greedyText(route, path)), "without the field, temperature 1 samples other answers");
}
async function seedReproduces(a, route, path, value) {
  assert.is(await sampled(route, path, value), route.text(a.body), "the same seed, the same answer");
  const others = await Promise.all(SEEDS.map((seed) => sampled(route, path, { ...value, seed: seed + 100 })));
  assert.ok(new Set([route.text(a.body), ...others]).size > 1, "other seeds, other answers");
}
function capsAt(n) {
  return (a, route) => {
    assert.is(route.tokens(a.body), n);
    assert.ok(route.tokens(state.greedy[a.path].body) > n, "the answer without the cap is longer");
  };
}
function stopsAt(field) {
  return async (a, route, path) => {
    const free = greedyText(route, path);
    const word = free.split(" ").filter(Boolean)[3];
    assert.ok(word, `a greedy answer of several words: ${free}`);
    const stop = ` ${word}`;
    const stopped = route.text((await answer(path, { ...route.base, [field]: [stop] })).body);
    assert.is(stopped, free.slice(0, free.indexOf(stop)));
  };
}
function differsFromGreedy(a, route, path) {
  assert.is.not(route.text(a.body), greedyText(route, path));
}
function longerPrompt(a, route, path) {
  assert.ok(route.prompt(a.body) > route.prompt(state.greedy[path].body), `${route.prompt(a.body)} prompt tokens`);
}
function streamed(a) {
  assert.match(a.headers["content-type"], /^text\/event-stream/);
}
function keptFor(minutes) {
  return async () => {
    // the model's idle time starts when the request releases it
    await waitFor(async () => {
      const ps = await httpCall(`${state.server.url}/v1/ps`);
      const left = (Date.parse(ps.body.data[0]?.expires_at) - Date.now()) / 60_000;
      return left > minutes - 2 && left <= minutes;
    }, { what: `the model kept ${minutes} minutes` });
  };
}

// ---- the suites

const tables = suite("every documented field has a class, every class a case");

tables("each route's cases are the fields of its table, each with a reason", () => {
  for (const [path, route] of Object.entries(ROUTES)) {
    const documented = Object.keys(route.cases).sort();
    const classed = Object.keys(route.table).sort();
    assert.equal(documented.filter((f) => !classed.includes(f)), [], `${path}: documented fields without a class`);
    assert.equal(classed.filter((f) => !documented.includes(f)), [], `${path}: classed fields without a case`);
    for (const [field, rule] of Object.entries(route.table)) {
      assert.ok(["honoured", "ignored", "refused"].includes(rule.class), `${path} ${field}`);
      assert.ok(rule.why.length > 5, `${path} ${field}: a reason`);
      if (rule.class === "honoured" && !["model", "messages", "system", "input", "prompt"].includes(field)) assert.ok(route.cases[field].observe, `${path} ${field}: an observation of it`);
    }
  }
});

tables("the installed clients' request types name no field without a case", () => {
  for (const [path, file, name] of SDK_PARAMS) {
    const fields = sdkFields(file, name);
    assert.ok(fields.length >= 5, `${name}: ${fields}`);
    const missing = fields.filter((f) => !ROUTES[path].cases[f]);
    assert.equal(missing, [], `${path}: fields of ${file} ${name}`);
  }
});

tables.run();

const fields = suite("every field, sent to a real server");
fields.before(async () => {
  state.server = await startServer(["--model", await testModel(), "--parallel", "1"]);
  state.greedy = {};
  for (const [path, route] of Object.entries(ROUTES)) state.greedy[path] = await answer(path, route.base);
});
fields.after(async () => { assert.is(await state.server.stop(), 0); });

for (const [path, route] of Object.entries(ROUTES)) {
  fields(`${path}: honoured fields show in the answer, ignored ones change nothing, refused ones are 400 naming them`, async () => {
    const greedy = state.greedy[path];
    if (route.tokens) assert.ok(route.tokens(greedy.body) >= 10, `a greedy answer long enough to tell fields apart: ${route.text(greedy.body)}`);
    for (const [field, rule] of Object.entries(route.table)) {
      const spec = route.cases[field];
      const body = { ...route.base, ...spec.value };
      for (const [k, v] of Object.entries(body)) if (v === null) delete body[k];
      if (rule.class === "refused") {
        const r = await call(path, body);
        assert.is(r.status, 400, `${path} ${field}: ${r.text.slice(0, 300)}`);
        assert.is(r.body.error.param, field);
        assert.is(r.body.error.code, "unsupported_parameter");
        assert.ok(r.body.error.message.startsWith(`${field}: `), r.body.error.message);
        if (spec.passes) await answer(path, { ...route.base, ...spec.passes });
      } else if (rule.class === "ignored") {
        const r = await answer(path, body);
        assert.is(route.text(r.body), route.text(greedy.body), `${path} ${field} is ignored: the answer is the one without it`);
      } else {
        const r = await answer(path, body);
        if (!spec.observe) continue;
        try {
          await spec.observe({ ...r, path }, route, path, spec.value);
        } catch (error) {
          error.message = `${path} ${field}: ${error.message}`;
          throw error;
        }
      }
    }
  });
}

fields("an unknown field: refused naming it when its name shapes the answer, accepted otherwise, on every route", async () => {
  for (const [path, route] of Object.entries(ROUTES)) {
    for (const name of ["repetition_penalty", "max_new_tokens", "n_predict", "typical_p", "guided_json", "response_schema", "reasoningEffort", "chat_template_kwargs", "previous_message_id"]) {
      const r = await call(path, { ...route.base, [name]: 1 });
      assert.is(r.status, 400, `${path} ${name}`);
      assert.is(r.body.error.param, name);
      assert.match(r.body.error.message, /shape the answer/);
    }
    for (const name of ["x_debug", "trace_id", "client_tag"]) {
      const r = await answer(path, { ...route.base, [name]: "anything" });
      assert.is(route.text(r.body), route.text(state.greedy[path].body), `${path} ${name}`);
    }
  }
  assert.ok(ANSWER_WORDS.has("temperature") && !ANSWER_WORDS.has("debug"));
});

fields.run();
