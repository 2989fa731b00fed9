// `mlxs models list | pull | rm` and `mlxs ps`, as a user runs them: the real CLI as a
// child process, a local HTTP server to pull from (which drops the connection halfway),
// and a real daemon to ask what it has loaded.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { writeTinyModel } from "../dist/core/gguf-writer.js";
import { CLI, TEST_MODEL, httpCall, jsonRequest, runCli, startServer, tempDir, waitForText } from "./helpers.js";

/** A models directory with two models. */
async function modelsDir() {
  const home = tempDir();
  const dir = join(home, "models");
  mkdirSync(dir, { recursive: true });
  await writeTinyModel(join(dir, "alpha.gguf"), { ...TEST_MODEL, seed: 1 });
  await writeTinyModel(join(dir, "beta.gguf"), { ...TEST_MODEL, embeddingLength: 96, seed: 2 });
  return { home, dir };
}

const models = suite("models list and rm");

models("list: every model of the directory and the config file, from its GGUF metadata; --json; a config model not downloaded says so", async () => {
  const { home, dir } = await modelsDir();
  writeFileSync(join(home, "config.json"), JSON.stringify({ models: { remote: "https://example.invalid/r.gguf", pinned: { model: join(dir, "alpha.gguf"), pin: true } } }));
  const listed = await runCli(["models", "list", "--json"], { env: { MLXS_HOME: home } });
  assert.is(listed.code, 0, listed.stderr);
  const { models_dir: where, models: entries } = JSON.parse(listed.stdout);
  assert.is(where, dir);
  const byName = Object.fromEntries(entries.map((m) => [m.name, m]));
  assert.equal(Object.keys(byName).sort(), ["beta", "pinned", "remote"], "a file the config names is listed once, under its config name");
  assert.is(byName.beta.architecture, "llama");
  assert.is(byName.beta.context_length, 1024);
  assert.ok(byName.beta.size_bytes > byName.pinned.size_bytes);
  assert.is(byName.beta.quantization, "ALL_F32");
  assert.match(byName.remote.note, /not downloaded/);
  // a split model (NAME-0000k-of-0000n.gguf) is one model, its size all its parts'
  const part = readFileSync(join(dir, "beta.gguf"));
  writeFileSync(join(dir, "gamma-00001-of-00002.gguf"), part);
  writeFileSync(join(dir, "gamma-00002-of-00002.gguf"), part);
  const split = JSON.parse((await runCli(["models", "list", "--json", "--models-dir", dir])).stdout).models.filter((m) => m.name.startsWith("gamma"));
  assert.equal(split.map((m) => [m.name, m.size_bytes]), [["gamma", part.length * 2]]);
  const table = await runCli(["models", "list", "--models-dir", dir]);
  assert.is(table.code, 0);
  assert.match(table.stdout, /^NAME\s+SIZE\s+QUANT\s+ARCH\s+CONTEXT\s+FROM/);
  assert.match(table.stdout, /\nalpha\s+\d+(\.\d)? (KB|MB)\s+ALL_F32\s+llama\s+1024\s+directory/);
});

models("rm: deletes the model's file; an unknown name is one line and exit 1", async () => {
  const { home, dir } = await modelsDir();
  const removed = await runCli(["models", "rm", "beta"], { env: { MLXS_HOME: home } });
  assert.is(removed.code, 0, removed.stderr);
  assert.match(removed.stdout, /^removed beta/);
  assert.not.ok(existsSync(join(dir, "beta.gguf")));
  assert.ok(existsSync(join(dir, "alpha.gguf")));
  const missing = await runCli(["models", "rm", "beta"], { env: { MLXS_HOME: home } });
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /^mlxs: no model "beta" in /);
  assert.is(missing.stderr.trim().split("\n").length, 1);
});

models.run();

const pull = suite("models pull");

/**
 * Serves `bytes` at /m/model.gguf with Range support; the first request's connection is
 * cut halfway. `sha`: the SHA-256 it states (X-Linked-Etag), as Hugging Face does.
 */
function fileServer(bytes, sha) {
  let requests = 0;
  const ranges = [];
  const server = createServer((req, res) => {
    requests++;
    const range = /bytes=(\d+)-/.exec(req.headers.range ?? "");
    const from = range ? Number(range[1]) : 0;
    ranges.push(from);
    const headers = { "content-type": "application/octet-stream", "x-linked-etag": `"${sha}"`, "content-length": bytes.length - from };
    if (range) res.writeHead(206, { ...headers, "content-range": `bytes ${from}-${bytes.length - 1}/${bytes.length}` });
    else res.writeHead(200, headers);
    if (requests === 1) {
      res.write(bytes.subarray(from, from + Math.floor(bytes.length / 2)), () => res.socket.destroy());
      return;
    }
    res.end(bytes.subarray(from));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${server.address().port}/m/model.gguf`, ranges, close: () => new Promise((r) => server.close(r)) })));
}

pull("a pull that loses its connection halfway resumes with a Range request; the SHA-256 is checked; a second pull finds it there", async () => {
  const source = join(tempDir(), "src.gguf");
  await writeTinyModel(source, { ...TEST_MODEL, seed: 9 });
  const bytes = readFileSync(source);
  const sha = createHash("sha256").update(bytes).digest("hex");
  const files = await fileServer(bytes, sha);
  const home = tempDir();
  try {
    const pulled = await runCli(["models", "pull", files.url, "--json"], { env: { MLXS_HOME: home } });
    assert.is(pulled.code, 0, pulled.stderr);
    const result = JSON.parse(pulled.stdout);
    assert.is(result.name, "model");
    assert.is(result.sha256, sha);
    assert.equal(readFileSync(result.path), bytes);
    assert.is(files.ranges[0], 0);
    assert.ok(files.ranges[1] > 0, `the second request resumed at byte ${files.ranges[1]}`);
    assert.match(pulled.stderr, /resuming at/);
    const again = await runCli(["models", "pull", files.url], { env: { MLXS_HOME: home } });
    assert.is(again.code, 0);
    assert.match(again.stdout, /^already pulled model/);
    const listed = JSON.parse((await runCli(["models", "list", "--json"], { env: { MLXS_HOME: home } })).stdout);
    assert.ok(listed.models.some((m) => m.name === "model"));
  } finally {
    await files.close();
  }
});

pull("a model the config file gives as a URL is downloaded by its first request: the record's load_ms counts it; other models answer meanwhile", async () => {
  const source = join(tempDir(), "src.gguf");
  await writeTinyModel(source, { ...TEST_MODEL, seed: 11 });
  const bytes = readFileSync(source);
  const files = await fileServer(bytes, createHash("sha256").update(bytes).digest("hex"));
  const home = tempDir();
  const local = join(tempDir(), "local.gguf");
  await writeTinyModel(local, TEST_MODEL);
  writeFileSync(join(home, "config.json"), JSON.stringify({ models: { remote: files.url } }));
  const server = await startServer(["--model", local], { home });
  try {
    const listed = (await httpCall(`${server.url}/v1/models`)).body.data;
    assert.equal(listed.map((m) => [m.id, m.loaded]).sort(), [["local", true], ["remote", false]]);
    const answer = await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ model: "remote", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }, { "x-request-id": "remote-1" }));
    assert.is(answer.status, 200, answer.text);
    assert.ok(answer.body.timings.load_ms > 0);
    assert.ok(files.ranges.length >= 2, "the download broke off once and resumed");
    assert.equal(readFileSync(join(home, "models", "model.gguf")), bytes);
    assert.is((await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ model: "local", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }))).status, 200);
  } finally {
    assert.is(await server.stop(), 0);
    await files.close();
  }
});

pull("a damaged download (its SHA-256 differs) is removed and refused; a URL without a .gguf name asks for --name", async () => {
  const source = join(tempDir(), "src.gguf");
  await writeTinyModel(source, { ...TEST_MODEL, seed: 10 });
  const files = await fileServer(readFileSync(source), "0".repeat(64));
  const home = tempDir();
  try {
    const pulled = await runCli(["models", "pull", files.url], { env: { MLXS_HOME: home } });
    assert.is(pulled.code, 1);
    assert.match(pulled.stderr, /damaged: its SHA-256 is [0-9a-f]{64}, the server said 0{64}/);
    assert.not.ok(existsSync(join(home, "models", "model.gguf")));
    assert.not.ok(existsSync(join(home, "models", "model.gguf.part")));
  } finally {
    await files.close();
  }
  const unnamed = await runCli(["models", "pull", "http://127.0.0.1:9/download?id=3"], { env: { MLXS_HOME: home } });
  assert.is(unnamed.code, 2);
  assert.match(unnamed.stderr, /--name/);
});

pull.run();

const ps = suite("ps");

ps("ps against a daemon: a table and --json; -f prints loads and unloads as they happen", async () => {
  const { home } = await modelsDir();
  const server = await startServer(["--model", "alpha", "--keep-alive", "-1"], { home });
  let follower;
  try {
    const table = await runCli(["ps", "--url", server.url]);
    assert.is(table.code, 0, table.stderr);
    assert.match(table.stdout, /^NAME\s+STATE\s+MEMORY\s+CONTEXT\s+RUNNING\s+QUEUED\s+UNLOADS\nalpha\s+loaded\s+\d+ MB\s+1024\s+0\s+0\s+never/);
    const json = JSON.parse((await runCli(["ps", "--url", server.url, "--json"])).stdout);
    assert.equal(json.models.map((m) => m.model), ["alpha"]);
    follower = spawn(process.execPath, [CLI, "ps", "-f", "--url", server.url], { env: { ...process.env, NO_COLOR: "1" } });
    let out = "";
    follower.stdout.on("data", (c) => { out += c; });
    const exited = new Promise((resolve) => follower.on("close", resolve));
    await waitForText(() => out, /alpha\s+loaded/);
    await httpCall(`${server.url}/v1/chat/completions`, jsonRequest({ model: "beta", messages: [{ role: "user", content: "x" }], max_tokens: 2 }));
    await waitForText(() => out, /\d\d:\d\d:\d\d load beta \(\d+ ms\)/);
    await httpCall(`${server.url}/v1/models/beta/unload`, { method: "POST" });
    await waitForText(() => out, /\d\d:\d\d:\d\d unload beta \(request\)/);
    follower.kill("SIGINT");
    assert.is(await exited, 0);
    const down = await runCli(["ps", "--url", "http://127.0.0.1:9"]);
    assert.is(down.code, 1);
    assert.match(down.stderr, /^mlxs: cannot reach http:\/\/127.0.0.1:9 \(from --url\): connection refused/);
  } finally {
    if (follower?.exitCode === null) follower.kill("SIGKILL");
    assert.is(await server.stop(), 0);
  }
});

ps.run();
