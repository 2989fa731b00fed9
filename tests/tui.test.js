import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { createElement } from "react";
import { render } from "ink-testing-library";
import { ChatApp } from "../dist/tui/app.js";
import { LocalBackend, RemoteBackend } from "../dist/commands/chat-backend.js";
import { InferenceCore } from "../dist/core/index.js";
import { loadConfig } from "../dist/config.js";
import { CORE, ENDLESS_CONTEXT, ROOT, auditRows, runCli, startServer, tempDir, testModel } from "./helpers.js";

const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));
/** Waits for the screen to show something: at once when it does; the deadline is for a machine under load. */
async function waitFor(app, predicate, ms = 60_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (predicate(app.lastFrame() ?? "")) return app.lastFrame();
    await tick(25);
  }
  throw new Error(`timed out; the screen shows:\n${JSON.stringify(app.lastFrame()).slice(-700)}`);
}
/** types like a person: one key at a time, then Enter (what it does shows in a later frame: waitFor it) */
async function type(app, text, enter = true) {
  for (const ch of text) {
    app.stdin.write(ch);
    await tick(2);
  }
  if (enter) app.stdin.write("\r");
}

/**
 * Waits until the screen satisfies `predicate`, however long a long answer takes here, so
 * long as the screen keeps changing: fails once it has stood still for `stallMs`.
 */
async function waitWhileComing(app, predicate, stallMs = 30_000) {
  let last = app.lastFrame();
  let changed = Date.now();
  for (;;) {
    const frame = app.lastFrame() ?? "";
    if (predicate(frame)) return frame;
    if (frame !== last) { last = frame; changed = Date.now(); }
    if (Date.now() - changed > stallMs) throw new Error(`the screen stood still for ${stallMs} ms; it shows:\n${JSON.stringify(frame).slice(-700)}`);
    await tick(25);
  }
}

/** Types a line and waits until the screen shows `expected`. */
async function typeAndSee(app, text, expected) {
  await type(app, text);
  return waitFor(app, (f) => (typeof expected === "function" ? expected(f) : expected.test(f)));
}

async function localApp({ endless = false, ctxSize = endless ? ENDLESS_CONTEXT : 1024, models, system, sampling = { temperature: 0 } } = {}) {
  const home = tempDir();
  const config = loadConfig({}, { MLXS_HOME: home });
  const sources = models ?? [{ name: endless ? "endless" : "tiny", path: await testModel({ endless }) }];
  const core = new InferenceCore(sources, { ...CORE, ctxSize });
  const backend = new LocalBackend(core, "llama.cpp/cpu", config);
  const app = render(createElement(ChatApp, { backend, system, sampling }));
  const close = async () => { app.unmount(); await backend.close(); };
  return { app, backend, home, config, close };
}

const ui = suite("terminal chat");

ui("typing, a streamed answer, and the status line", async () => {
  const { app, close } = await localApp();
  try {
    await waitFor(app, (f) => f.includes("/help"));
    await type(app, "hello there");
    const frame = await waitFor(app, (f) => f.includes("tok/s"));
    assert.match(frame, /› hello there/);
    assert.match(frame, /tiny · llama\.cpp\/cpu · [\d.]+ tok\/s · ctx \d+\/1024/);
    // the answer streamed in: some frame showed a partial answer with the cursor
    assert.ok(app.frames.some((f) => f.includes("▍")), "an answer in progress was shown");
    assert.match(frame, /› hello there\n[a-z ,.]+/);
  } finally {
    await close();
  }
});

ui("multi-line input (Ctrl-J, and a trailing backslash) and history with Up/Down", async () => {
  const { app, close } = await localApp({ sampling: { temperature: 0, maxTokens: 3 } });
  try {
    await type(app, "first line", false);
    app.stdin.write("\n");
    await type(app, "second", false);
    await waitFor(app, (f) => /> first line[\s│]*\n[\s│]*second/.test(f));
    app.stdin.write("\r");
    await waitFor(app, (f) => f.includes("tok/s"));
    await typeAndSee(app, "one more\\", /> one more[\s│]*\n/);
    await type(app, "end");
    // the answer has ended when the input box is back
    await waitFor(app, (f) => f.includes("› one more") && !f.includes("answering…") && (f.match(/›/g) ?? []).length === 2);
    app.stdin.write("\u001B[A");
    await waitFor(app, (f) => /> one more[\s│]*\n[\s│]*end/.test(f));
    app.stdin.write("\u001B[A");
    await waitFor(app, (f) => /> first line[\s│]*\n[\s│]*second/.test(f));
    app.stdin.write("\u001B[B");
    app.stdin.write("\u001B[B");
    await waitFor(app, (f) => />\s+│?\n/.test(f) && !/> first line/.test(f));
  } finally {
    await close();
  }
});

ui("slash commands: help, set, system, clear, model, save, unknown, exit", async () => {
  const dir = tempDir();
  const models = [{ name: "tiny", path: await testModel() }, { name: "other", path: await testModel({ endless: true }) }];
  const { app, close } = await localApp({ models, sampling: { temperature: 0, maxTokens: 4 } });
  try {
    await typeAndSee(app, "/help", /\/save FILE/);
    await typeAndSee(app, "/set temperature 0.7", /temperature = 0\.7/);
    await typeAndSee(app, "/set temperature 9", /\/set temperature takes a number from 0 to 2/);
    await typeAndSee(app, "/set", /"temperature":0\.7/);
    await typeAndSee(app, "/system be brief", /System prompt set/);
    await typeAndSee(app, "/bogus", /unknown command \/bogus; the commands are \/help \/clear \/system \/set \/model \/save \/exit/);
    await typeAndSee(app, "/model nope", /No model "nope"\. Served: tiny, other/);
    await typeAndSee(app, "/model other", (f) => f.includes("other · llama.cpp/cpu"));
    await typeAndSee(app, "/model tiny", (f) => f.includes("tiny · llama.cpp/cpu"));
    // at 0.7 the answer could be empty (the tiny model may end at once): the saved
    // transcript must hold one
    await typeAndSee(app, "/set temperature 0", /temperature = 0\b(?!\.)/);
    await type(app, "hi");
    await waitFor(app, (f) => /› hi\s*\n\s*\S/.test(f) && !f.includes("answering…"));
    assert.equal(readdirSync(dir), [], "nothing is written without /save");
    const file = join(dir, "chat.md");
    await type(app, `/save ${file}`);
    await waitFor(app, (f) => f.includes("Saved the transcript"));
    const saved = readFileSync(file, "utf8");
    assert.match(saved, /^# mlxs chat with tiny/);
    assert.match(saved, /System: be brief/);
    assert.match(saved, /## You\n\nhi\n/);
    assert.match(saved, /## Assistant\n\n\S/);
    await typeAndSee(app, "/clear", /New conversation/);
    assert.not.match(app.lastFrame(), /› hi/);
    assert.ok(app.stdin.listenerCount("readable") > 0, "the chat reads the keyboard");
    await type(app, "/exit");
    // the chat has left: it no longer reads the keyboard, and what is typed shows nowhere
    await waitFor(app, () => app.stdin.listenerCount("readable") === 0);
    await type(app, "after exit");
    assert.not.match(app.lastFrame(), /after exit/);
  } finally {
    await close();
  }
});

ui("Ctrl-C stops an answer and keeps the session; the record says cancelled", async () => {
  const { app, close, config } = await localApp({ endless: true, sampling: { temperature: 1, maxTokens: 60_000 } });
  try {
    await type(app, "go on");
    await waitFor(app, (f) => f.includes("answering…") && /▍/.test(f) && /[a-z]{3,}[^\S\n]*\S*▍/.test(f));
    app.stdin.write("\u0003");
    await waitFor(app, (f) => f.includes("(answer stopped)"));
    await type(app, "again");
    await waitFor(app, (f) => f.includes("› again") && f.includes("answering…") && /[a-z]{3,}[^\S\n]*\S*▍/.test(f));
    app.stdin.write("\u0003");
    await waitFor(app, (f) => (f.match(/\(answer stopped\)/g) ?? []).length === 2);
  } finally {
    await close();
  }
  const rows = await auditRows(config.auditDb);
  assert.ok(rows.length >= 2);
  assert.ok(rows.every((r) => r.endpoint === "cli:chat" && r.model === "endless"));
  assert.is(rows[0].status, "cancelled");
  assert.ok(rows[0].completion_tokens > 0 && rows[0].ttft_ms > 0);
});

ui("typing goes on while an answer comes; a line sent meanwhile waits for it, then is sent", async () => {
  // long enough to be still coming while the next line is typed (a few keys); short enough that the
  // screen, redrawn at every token, stays cheap on a loaded machine (2 000 tokens took minutes there)
  const { app, close } = await localApp({ endless: true, sampling: { temperature: 1, maxTokens: 400 } });
  try {
    await type(app, "first question");
    await waitFor(app, (f) => f.includes("answering…"));
    await type(app, "second question");
    await waitFor(app, (f) => f.includes("1 queued"));
    // the first answer ends, then the second question is asked and answered: two long answers,
    // as long as they take on this machine, so long as they keep coming
    const frame = await waitWhileComing(app, (f) => f.includes("› second question") && !f.includes("answering…") && !f.includes("queued"));
    assert.ok(frame.indexOf("› first question") < frame.indexOf("› second question"));
  } finally {
    await close();
  }
});

ui("Ctrl-C stops the answer, not the line queued behind it; the notice is drawn under the stopped answer", async () => {
  const { app, close, config } = await localApp({ endless: true, sampling: { temperature: 1, maxTokens: 60_000 } });
  try {
    await type(app, "first question");
    await waitFor(app, (f) => f.includes("answering…") && /[a-z]{3,}[^\S\n]*\S*▍/.test(f));
    await type(app, "second question");
    await waitFor(app, (f) => f.includes("1 queued"));
    app.stdin.write("\u0003");
    // the queued line goes out, and is answered
    const frame = await waitFor(app, (f) => f.includes("› second question") && f.includes("answering…") && !f.includes("queued") && /› second question\n[\s\S]*[a-z]{3,}[^\S\n]*\S*▍/.test(f));
    // the transcript reads in order: the question, what was said of its answer, the notice, the next question
    const stopped = frame.slice(frame.indexOf("› first question"), frame.indexOf("› second question"));
    assert.match(stopped, /^› first question\n[^\n]*[a-z]{3,}[\s\S]*\n\(answer stopped\)\n$/, stopped);
    app.stdin.write("\u0003");
    await waitFor(app, (f) => (f.match(/\(answer stopped\)/g) ?? []).length === 2 && !f.includes("answering…"));
  } finally {
    await close();
  }
  const rows = await auditRows(config.auditDb);
  assert.equal(rows.map((r) => r.status), ["cancelled", "cancelled"]);
});

ui("keys typed ahead of the chat (Enter as the terminal sent it) are sent once it is up", async () => {
  const home = tempDir();
  const config = loadConfig({}, { MLXS_HOME: home });
  const core = new InferenceCore([{ name: "tiny", path: await testModel() }], CORE);
  const backend = new LocalBackend(core, "llama.cpp/cpu", config);
  // "first" with Enter, then "draft" not yet sent, with a typo deleted
  const app = render(createElement(ChatApp, { backend, sampling: { temperature: 0, maxTokens: 5 }, typeAhead: "first\rdraftx\x7f" }));
  try {
    const frame = await waitFor(app, (f) => f.includes("› first") && f.includes("tok/s") && /> draft\s/.test(f));
    assert.not.match(frame, /› draft/);
  } finally {
    app.unmount();
    await backend.close();
  }
});

ui("old turns are dropped, with a notice, when the conversation outgrows the context", async () => {
  const { app, close } = await localApp({ ctxSize: 256, sampling: { temperature: 0, maxTokens: 40 } });
  try {
    for (let i = 0; i < 4; i++) {
      await type(app, `tell me about the water and the sea and the mountain number ${i} `.repeat(2));
      await waitFor(app, (f) => (f.match(/›/g) ?? []).length === i + 1 && !f.includes("answering…"));
    }
    await waitFor(app, (f) => /Dropped the \d+ oldest turns? so the conversation fits the 256-token context/.test(f));
  } finally {
    await close();
  }
});

ui("remote mode: errors are one clear notice and the session stays usable", async () => {
  const refused = new RemoteBackend("http://127.0.0.1:1", undefined, "tiny");
  await refused.connect();
  const app = render(createElement(ChatApp, { backend: refused, sampling: {} }));
  try {
    await type(app, "hello");
    await waitFor(app, (f) => f.includes("cannot reach http://127.0.0.1:1 (from --url): connection refused"));
    await typeAndSee(app, "/help", /\/save FILE/);
  } finally {
    app.unmount();
  }
  const server = await startServer(["--model", await testModel(), "--api-key", "remote-key-1"]);
  try {
    const noKey = new RemoteBackend(server.url, undefined, undefined);
    await noKey.connect();
    const a = render(createElement(ChatApp, { backend: noKey, sampling: {} }));
    await type(a, "hello");
    await waitFor(a, (f) => f.includes("refused the API key"));
    a.unmount();
    const good = new RemoteBackend(server.url, "remote-key-1", undefined);
    await good.connect();
    assert.equal(good.models(), ["tiny"]);
    const b = render(createElement(ChatApp, { backend: good, sampling: { temperature: 0, maxTokens: 5 } }));
    await type(b, "hello");
    const frame = await waitFor(b, (f) => f.includes("tok/s"));
    assert.match(frame, new RegExp(`tiny · ${server.url.replace(/[.:/]/g, "\\$&")}`));
    b.unmount();
  } finally {
    assert.is(await server.stop(), 0);
  }
});

ui.run();

const remote = suite("chat --url (plain)");

remote("answers from a running server; refused, 401, 404 and a mid-stream error are one line, exit 1", async () => {
  const server = await startServer(["--model", await testModel(), "--api-key", "plain-key-12"]);
  try {
    const ok = await runCli(["chat", "--url", server.url, "--api-key", "plain-key-12", "--temperature", "0", "-n", "6", "hello"]);
    assert.is(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^[a-z ,.]+\n$/);
    const local = await runCli(["chat", "--model", await testModel(), "--temperature", "0", "-n", "6", "hello"]);
    assert.is(ok.stdout, local.stdout, "the same answer as in-process");
    const json = JSON.parse((await runCli(["chat", "--url", server.url, "--api-key", "plain-key-12", "--json", "--temperature", "0", "-n", "3", "hi"])).stdout);
    assert.is(json.usage.completion_tokens, 3);
    const unauthorized = await runCli(["chat", "--url", server.url, "hi"]);
    assert.is(unauthorized.code, 1);
    assert.match(unauthorized.stderr, /^mlxs: .*refused the API key.*\n$/);
    const missing = await runCli(["chat", "--url", server.url, "--api-key", "plain-key-12", "--model", "nope", "hi"]);
    assert.is(missing.code, 1);
    assert.match(missing.stderr, /does not serve the model "nope"/);
  } finally {
    assert.is(await server.stop(), 0);
  }
  const refused = await runCli(["chat", "--url", "http://127.0.0.1:1", "hi"]);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /^mlxs: cannot reach http:\/\/127\.0\.0\.1:1 \(from --url\): connection refused/);
  const slow = await startServer(["--model", await testModel({ endless: true }), "--request-timeout", "0.1"]);
  try {
    const broken = await runCli(["chat", "--url", slow.url, "-n", "1000", "go"]);
    assert.is(broken.code, 1);
    assert.match(broken.stderr, /failed mid-answer: The generation took longer than the request timeout/);
    assert.is(broken.stderr.trim().split("\n").length, 1);
  } finally {
    assert.is(await slow.stop(), 0);
  }
});

remote.run();

const terminal = suite("real terminal");

for (const key of ["ctrl-c", "ctrl-d"]) {
  terminal(`mlxs chat in a pseudo-terminal: the chat opens, answers, and ${key} at the empty prompt leaves with the terminal restored`, async () => {
    const home = tempDir();
    const result = spawnSync("python3", [join(ROOT, "tests/fixtures/pty-chat.py"), home, await testModel(), key], { encoding: "utf8", timeout: 240_000 });
    assert.is(result.status, 0, result.stderr);
    const screen = result.stdout;
    assert.match(screen, /^EXIT 0\n/);
    const plain = screen.replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, "");
    assert.match(plain, /› hello there/);
    assert.match(plain, /tiny · llama\.cpp\/cpu · [\d.]+ tok\/s/);
    // the cursor is shown again on the way out
    assert.match(screen, /\x1b\[\?25h/);
    assert.ok(existsSync(join(home, "audit.db")));
  });
}

terminal("keys typed before the chat has drawn its first frame are sent as meant, once", async () => {
  const home = tempDir();
  const result = spawnSync("python3", [join(ROOT, "tests/fixtures/pty-chat.py"), home, await testModel(), "type-ahead"], { encoding: "utf8", timeout: 240_000 });
  assert.is(result.status, 0, result.stderr);
  assert.match(result.stdout, /^EXIT 0\nBEFORE-FIRST-FRAME True\n/);
  const plain = result.stdout.replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, "");
  assert.match(plain, /› hello there/);
  assert.match(plain, /tiny · llama\.cpp\/cpu · [\d.]+ tok\/s/);
  // sent, not left in the input box with a line break
  assert.not.match(plain, /> hello there/);
  const rows = await auditRows(join(home, "audit.db"));
  assert.equal(rows.map((r) => [r.endpoint, r.status]), [["cli:chat", "success"]]);
});

terminal("the terminal hangs up mid-answer (SIGHUP): the answer stops, its record says so, the chat leaves", async () => {
  const home = tempDir();
  // a context the answer cannot fill before the hang-up, however slow the machine
  const result = spawnSync("python3", [join(ROOT, "tests/fixtures/pty-chat.py"), home, await testModel({ endless: true }), "sighup", "--ctx-size", String(ENDLESS_CONTEXT)], { encoding: "utf8", timeout: 240_000 });
  assert.is(result.status, 0, result.stderr);
  assert.match(result.stdout, /^EXIT 0\n/);
  const rows = await auditRows(join(home, "audit.db"));
  assert.equal(rows.map((r) => [r.endpoint, r.status]), [["cli:chat", "cancelled"]]);
  assert.ok(rows[0].completion_tokens > 0);
});

terminal.run();
