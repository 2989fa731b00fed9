// The inference core as issue 12 made it: each model in a runner process of its own, its
// generations driven in lockstep, prompts reusing what a sequence's cache already holds,
// and threads measured when a model loads.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { request } from "undici";
import { InferenceCore } from "../dist/core/index.js";
import { threadCandidates } from "../dist/core/threads.js";
import { CORE, collect, httpCall, jsonRequest, startServer, testModel, waitFor, waitForRows } from "./helpers.js";

const ask = (content, extra = {}) => ({ messages: [{ role: "user", content }], temperature: 0, ...extra });

/** The pids of a process's children (a daemon's runners). */
const childrenOf = (pid) => readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);

const core = suite("the core");

core("answers generated side by side in one batch are the answers generated one at a time", async () => {
  const c = new InferenceCore([{ name: "tiny", path: await testModel() }], { ...CORE, parallel: 4 });
  try {
    const prompts = ["the sea", "a mountain", "tell me", "water and light"];
    const alone = [];
    for (const p of prompts) alone.push((await collect(c.chat(ask(p, { maxTokens: 40 })))).text);
    const together = await Promise.all(prompts.map(async (p) => (await collect(c.chat(ask(p, { maxTokens: 40 })))).text));
    assert.equal(together, alone);
  } finally {
    await c.close();
  }
});

core("a conversation's next turn evaluates only what its sequence's cache lacks", async () => {
  const c = new InferenceCore([{ name: "tiny", path: await testModel() }], { ...CORE, parallel: 4 });
  try {
    const first = [{ role: "system", content: "be brief" }, { role: "user", content: "tell me about the sea and the mountain" }];
    const one = (await collect(c.chat({ messages: first, temperature: 0, maxTokens: 12 }))).done;
    // other conversations in between take other sequences
    await Promise.all(["a", "b", "c"].map((x) => collect(c.chat(ask(`other ${x}`, { maxTokens: 3 })))));
    const next = [...first, { role: "assistant", content: one.text }, { role: "user", content: "and then?" }];
    const two = (await collect(c.chat({ messages: next, temperature: 0, maxTokens: 4 }))).done;
    assert.is(one.usage.cachedPromptTokens, 0);
    // everything of the first turn's prompt was found again
    assert.ok(two.usage.cachedPromptTokens >= one.usage.promptTokens, `${two.usage.cachedPromptTokens} of ${two.usage.promptTokens} cached; the first prompt was ${one.usage.promptTokens}`);
    assert.ok(two.usage.cachedPromptTokens < two.usage.promptTokens);
  } finally {
    await c.close();
  }
});

core("threads, when not given, are measured as the model loads: one of the candidates for this machine", async () => {
  const c = new InferenceCore([{ name: "tiny", path: await testModel({ endless: true }) }], { ...CORE, threads: undefined });
  try {
    await c.load();
    const { threads } = c.models()[0];
    assert.ok(threadCandidates().includes(threads), `${threads} of ${threadCandidates()}`);
    assert.is((await collect(c.chat(ask("hi", { maxTokens: 3 })))).done.usage.completionTokens, 3);
  } finally {
    await c.close();
  }
});

core.run();

const daemon = suite("the daemon and its runners");

daemon("a runner killed mid-answer: that answer fails, the daemon lives, the next request starts a new runner", async () => {
  const server = await startServer(["--model", await testModel({ endless: true })]);
  try {
    const res = await request(`${server.url}/v1/chat/completions`, jsonRequest({ ...ask("go on", { max_tokens: 100_000, temperature: 1 }), stream: true }, { "x-request-id": "in-the-crash" }));
    const chunks = res.body[Symbol.asyncIterator]();
    let text = "";
    // any text at all (the first token, sampled at temperature 1, may be a comma)
    while (!/"content":"[^"]/.test(text)) {
      const { value, done } = await chunks.next();
      if (done) throw new Error(`the answer ended before the runner was killed: ${text.slice(-300)}`);
      text += value;
    }
    const [runner] = childrenOf(server.child.pid);
    process.kill(runner, "SIGKILL");
    for (let c = await chunks.next(); !c.done; c = await chunks.next()) text += c.value;
    assert.match(text, /event: error\ndata: \{.*"code":"internal_error"/);
    await waitFor(() => /the runner of model endless stopped \(SIGKILL\)/.test(server.stderr()), { what: "the daemon to say so" });
    const next = await httpCall(`${server.url}/v1/chat/completions`, jsonRequest(ask("again", { max_tokens: 3 })));
    assert.is(next.status, 200, next.text);
    assert.is(next.body.usage.completion_tokens, 3);
    assert.is(server.child.exitCode, null);
    const record = (await waitForRows(server.db, (rows) => rows.some((r) => r.request_id === "in-the-crash"))).find((r) => r.request_id === "in-the-crash");
    assert.equal([record.status, record.error_type], ["error", "internal_error"]);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

daemon("records land within a flush interval while every sequence generates", async () => {
  const server = await startServer(["--model", await testModel({ endless: true }), "--parallel", "4"]);
  const stop = new AbortController();
  try {
    // answers as long as their contexts: still generating when the last record has landed
    const streams = Array.from({ length: 4 }, (_, i) => request(`${server.url}/v1/chat/completions`, { ...jsonRequest({ ...ask("go on", { max_tokens: 100_000, temperature: 1 }), stream: true }, { "x-request-id": `busy-${i}` }), signal: stop.signal })
      .then(async (res) => { for await (const _ of res.body) { /* read it all */ } }).catch(() => undefined));
    await waitFor(async () => (await httpCall(`${server.url}/health`)).body.models[0].busy === 4, { what: "4 sequences generating" });
    const landed = [];
    for (let i = 0; i < 5; i++) {
      const id = `while-busy-${i}`;
      const sent = Date.now();
      assert.is((await httpCall(`${server.url}/v1/models`, { headers: { "x-request-id": id } })).status, 200);
      await waitForRows(server.db, (rows) => rows.some((r) => r.request_id === id), { timeoutMs: 5_000 });
      landed.push(Date.now() - sent);
    }
    // the writer flushes every 250 ms; opening and reading the database to see it, beside
    // four generations on a loaded machine, costs more
    assert.ok(Math.max(...landed) < 2_000, `records landed after ${landed.join(", ")} ms`);
    assert.is((await httpCall(`${server.url}/health`)).body.models[0].busy, 4, "and the answers were still being generated");
    stop.abort();
    await Promise.all(streams);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

daemon("the runner is the daemon's child: gone with it, even when the daemon is killed", async () => {
  const server = await startServer(["--model", await testModel()]);
  const [runner] = childrenOf(server.child.pid);
  assert.ok(runner, "a runner process");
  server.child.kill("SIGKILL");
  await server.exited;
  // its IPC channel closed: it exits, nothing of it is left
  await waitFor(() => { try { process.kill(runner, 0); return false; } catch { return true; } }, { what: "the runner to exit" });
});

daemon.run();
