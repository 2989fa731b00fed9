import { suite } from "uvu";
import * as assert from "uvu/assert";
import { InferenceCore, CoreError } from "../dist/core/index.js";
import { CORE, ENDLESS_CONTEXT, collect, testModel, waitFor } from "./helpers.js";

const ask = (content, extra = {}) => ({ messages: [{ role: "user", content }], temperature: 0, ...extra });

function withCore(name, options = {}, { endless = false } = {}) {
  const s = suite(name);
  s.before(async (ctx) => {
    ctx.core = new InferenceCore([{ name: "tiny", path: await testModel({ endless }) }], { ...CORE, ...options });
    await ctx.core.load();
  });
  s.after(async (ctx) => { await ctx.core.close(); });
  return s;
}

const generation = withCore("generation");

generation("deltas stream and add up to the text; usage and timings are filled", async ({ core }) => {
  const { deltas, text, done } = await collect(core.chat(ask("hello there", { maxTokens: 30 })));
  assert.ok(deltas.length > 1, "several deltas");
  assert.is(text, done.text);
  assert.is(done.model, "tiny");
  assert.ok(done.usage.promptTokens > 3);
  assert.ok(done.usage.completionTokens > 0 && done.usage.completionTokens <= 30);
  assert.ok(done.timings.ttftMs > 0 && done.timings.totalMs >= done.timings.ttftMs);
  assert.ok(done.timings.tokensPerSecond > 0);
  assert.ok(["stop", "length"].includes(done.finishReason));
});

generation("temperature 0 gives the same text for the same request", async ({ core }) => {
  const a = await collect(core.chat(ask("what is the sea", { maxTokens: 40 })));
  await collect(core.chat(ask("something else entirely", { maxTokens: 10 })));
  const b = await collect(core.chat(ask("what is the sea", { maxTokens: 40 })));
  assert.is(b.text, a.text);
});

generation("a fixed seed gives the same text at temperature 1; another seed differs", async ({ core }) => {
  const req = (seed) => ({ messages: [{ role: "user", content: "go on" }], temperature: 1, seed, maxTokens: 40 });
  const a = await collect(core.chat(req(7)));
  const b = await collect(core.chat(req(7)));
  const c = await collect(core.chat(req(8)));
  assert.is(b.text, a.text);
  assert.is.not(c.text, a.text);
});

generation("max tokens ends with `length` after exactly that many tokens", async ({ core }) => {
  const { done } = await collect(core.chat(ask("count", { maxTokens: 5 })));
  assert.is(done.finishReason, "length");
  assert.is(done.usage.completionTokens, 5);
});

generation("a stop sequence across a token boundary ends the text before it, never emitted", async ({ core }) => {
  const free = await collect(core.chat(ask("tell a story", { maxTokens: 40 })));
  const words = free.text.split(" ");
  assert.ok(words.length > 8, free.text);
  // the tail of word 4, its space and the head of word 5: spans two tokens
  const boundary = free.text.indexOf(" " + words[5], free.text.indexOf(words[4]));
  const stop = free.text.slice(boundary - 2, boundary + 3);
  const first = free.text.indexOf(stop);
  const stopped = await collect(core.chat(ask("tell a story", { maxTokens: 40, stop: ["zzz-never", stop] })));
  assert.is(stopped.done.finishReason, "stop_sequence");
  assert.is(stopped.done.stopSequence, stop);
  assert.is(stopped.text, free.text.slice(0, first));
  assert.not.ok(stopped.deltas.join("").includes(stop));
});

generation("completions: a prompt continues; too long a prompt is refused", async ({ core }) => {
  const { text, done } = await collect(core.complete({ prompt: "the water", temperature: 0, maxTokens: 10 }));
  assert.ok(text.length > 0);
  assert.ok(done.usage.promptTokens >= 3);
  const long = "water ".repeat(2000);
  try {
    await collect(core.complete({ prompt: long, maxTokens: 5 }));
    assert.unreachable();
  } catch (error) {
    assert.instance(error, CoreError);
    assert.is(error.kind, "invalid_request");
    assert.not.ok(error.message.includes("water"), "no prompt text in the message");
  }
});

generation("bad sampling values and unknown models are refused with their kind", async ({ core }) => {
  for (const [req, param] of [[{ temperature: 3 }, "temperature"], [{ maxTokens: 0 }, "maxTokens"], [{ topP: -1 }, "topP"], [{ stop: Array(17).fill("x") }, "stop"]]) {
    try {
      await collect(core.chat(ask("x", req)));
      assert.unreachable();
    } catch (error) {
      assert.is(error.kind, "invalid_request");
      assert.is(error.param, param);
    }
  }
  try {
    await collect(core.chat({ ...ask("x"), model: "../../etc/passwd" }));
    assert.unreachable();
  } catch (error) {
    assert.is(error.kind, "not_found");
  }
});

generation("embeddings: one vector per input, model width, deterministic; too long refused", async ({ core }) => {
  const a = await core.embed({ input: ["hello world", "the sea is blue", "hello world"] });
  assert.is(a.vectors.length, 3);
  for (const v of a.vectors) assert.is(v.length, 64);
  assert.equal(a.vectors[0], a.vectors[2]);
  assert.is.not(a.vectors[0].join(), a.vectors[1].join());
  assert.ok(a.tokens.every((t) => t > 0));
  assert.is(a.usage.promptTokens, a.tokens.reduce((x, y) => x + y));
  const b = await core.embed({ input: ["hello world"] });
  assert.equal(b.vectors[0], a.vectors[0]);
  try {
    await core.embed({ input: ["water ".repeat(3000)] });
    assert.unreachable();
  } catch (error) {
    assert.is(error.kind, "invalid_request");
  }
});

generation.run();

// parallel 1 and no queue: a sequence that is not freed makes the next request fail; a
// model that never ends, so that no answer can finish before it is aborted
const aborts = withCore("aborts", { parallel: 1, queue: 0 }, { endless: true });

aborts("ten aborts mid-stream in a row, then a request still completes", async ({ core }) => {
  for (let i = 0; i < 10; i++) {
    const controller = new AbortController();
    let deltas = 0;
    let done;
    for await (const event of core.chat(ask("go", { maxTokens: 500, temperature: 1, seed: i }), controller.signal)) {
      if (event.type === "delta" && ++deltas === 2) controller.abort();
      if (event.type === "done") done = event;
    }
    assert.is(done.finishReason, "cancelled");
    assert.ok(done.usage.completionTokens < 500);
  }
  const { done } = await collect(core.chat(ask("still there?", { maxTokens: 5 })));
  assert.is(done.finishReason, "length");
});

aborts("a consumer that stops reading frees the sequence as well", async ({ core }) => {
  for (let i = 0; i < 5; i++) {
    for await (const event of core.chat(ask("go", { maxTokens: 500 }))) if (event.type === "delta") break;
  }
  const { done } = await collect(core.chat(ask("again", { maxTokens: 3 })));
  assert.is(done.usage.completionTokens, 3);
});

aborts.run();

const queueing = withCore("queueing", { parallel: 2, queue: 8 });

queueing("more requests than --parallel wait their turn and all complete", async ({ core }) => {
  const results = await Promise.all(Array.from({ length: 7 }, (_, i) => collect(core.chat(ask(`request ${i}`, { maxTokens: 20 })))));
  for (const r of results) assert.ok(["length", "stop"].includes(r.done.finishReason));
  assert.ok(results.some((r) => r.done.timings.queueMs > 0), "some requests queued");
});

queueing.run();

// answers that run until stopped, so that the queue holds what a test put in it
const overflow = withCore("overflow", { parallel: 1, queue: 1, ctxSize: ENDLESS_CONTEXT }, { endless: true });

overflow("past the queue a request is refused as overloaded; an aborted waiter leaves the queue", async ({ core }) => {
  const first = new AbortController();
  const running = collect(core.chat(ask("one", { maxTokens: 100_000 }), first.signal));
  const waiting = collect(core.chat(ask("two", { maxTokens: 5 })));
  await waitFor(() => core.models()[0].busy === 1 && core.models()[0].waiting === 1, { what: "one generating, one waiting" });
  try {
    await collect(core.chat(ask("three", { maxTokens: 5 })));
    assert.unreachable();
  } catch (error) {
    assert.is(error.kind, "overloaded");
  }
  first.abort();
  assert.is((await running).done.finishReason, "cancelled");
  assert.is((await waiting).done.usage.completionTokens, 5);
  // a waiter cancelled in the queue
  const second = new AbortController();
  const busy = collect(core.chat(ask("busy", { maxTokens: 100_000 }), second.signal));
  const controller = new AbortController();
  const cancelled = collect(core.chat(ask("waits", { maxTokens: 5 }), controller.signal)).catch((e) => e);
  await waitFor(() => core.models()[0].waiting === 1, { what: "the waiter in the queue" });
  controller.abort();
  assert.is((await cancelled).kind, "cancelled");
  const next = collect(core.chat(ask("next", { maxTokens: 5 })));
  await waitFor(() => core.models()[0].waiting === 1, { what: "the next request in the queue" });
  second.abort();
  assert.is((await busy).done.finishReason, "cancelled");
  assert.is((await next).done.usage.completionTokens, 5);
});

overflow.run();
