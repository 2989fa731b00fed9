import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join } from "node:path";
import { CLI, ENDLESS_CONTEXT, ROOT, STACK, helpTexts, runCli, startServer, tempDir, testModel, waitFor, waitForRows } from "./helpers.js";

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));

const basics = suite("program");

basics("--help lists the commands, exits 0 and never loads node-llama-cpp", async () => {
  const trace = join(tempDir(), "imports.txt");
  writeFileSync(trace, "");
  const result = await new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", join(ROOT, "tests/fixtures/trace-imports.mjs"), CLI, "--help"], {
      env: { ...process.env, MLXS_TRACE_IMPORTS: trace },
    });
    let stdout = "";
    child.stdout.on("data", (c) => { stdout += c; });
    child.on("close", (code) => resolve({ code, stdout }));
  });
  assert.is(result.code, 0);
  assert.match(result.stdout, /chat/);
  assert.match(result.stdout, /embed/);
  const imports = readFileSync(trace, "utf8");
  assert.match(imports, /dist\/cli\.js/);
  assert.not.match(imports, /node-llama-cpp/);
  // nor the audit store's native SQLite addon
  assert.not.match(imports, /sqlite3|node_modules\/sqlite\//);
  // what a newcomer needs from it: both APIs, where the data lives, the exit codes, the manual
  assert.match(result.stdout, /OpenAI and Anthropic APIs/);
  assert.match(result.stdout, /\$XDG_DATA_HOME\/mlxs \(~\/\.local\/share\/mlxs\)/);
  assert.match(result.stdout, /70 internal error/);
  assert.match(result.stdout, /man \.\/man\/mlxs\.1/);
});

basics("--version prints the package version", async () => {
  const { code, stdout } = await runCli(["--version"]);
  assert.is(code, 0);
  assert.is(stdout.trim(), pkg.version);
});

basics("every command has help: usage, description, options, exit 0", async () => {
  const texts = await helpTexts();
  const commands = texts.filter(({ path }) => path.length > 0);
  assert.ok(commands.length >= 8, commands.map(({ path }) => path.join(" ")).join(", "));
  for (const { path, code, stdout, stderr } of texts) {
    const name = ["mlxs", ...path].join(" ");
    assert.is(code, 0, `${name} --help: exit ${code} ${stderr}`);
    assert.is(stderr, "", name);
    assert.match(stdout, new RegExp(`^Usage: ${name} `), name);
    assert.match(stdout, /\nOptions:\n/, name);
    assert.match(stdout, /-h, --help/, name);
    // a description under the usage line
    assert.match(stdout, /^Usage: .*\n\n\S.{10,}/, name);
  }
  for (const command of ["chat", "embed", "serve"]) {
    assert.match(texts.find(({ path }) => path.join(" ") === command).stdout, /--model/, command);
  }
  const { stdout } = await runCli(["chat", "--help"]);
  for (const flag of ["--system", "--json", "--temperature", "--top-p", "--top-k", "--min-p", "--seed", "--max-tokens", "--stop", "--threads", "--ctx-size", "--parallel", "--gpu"]) {
    assert.ok(stdout.includes(flag), flag);
  }
});

basics.run();

const chat = suite("chat");

chat("no --model: the demo model is written into the data dir and said so on stderr", async () => {
  const home = tempDir();
  const { code, stdout, stderr } = await runCli(["chat", "Hello", "--max-tokens", "12", "--temperature", "0"], { env: { MLXS_HOME: home } });
  assert.is(code, 0, stderr);
  assert.match(stdout, /^[a-z ,.]+\n$/);
  assert.match(stderr, /demo model/);
  assert.match(stderr, /--model/);
  assert.is(stderr.match(/demo model/g).length, 1);
  const models = readdirSync(join(home, "models"));
  assert.is(models.length, 1);
  assert.ok(statSync(join(home, "models", models[0])).size < 2 * 1024 * 1024);
});

chat("a prompt from stdin, --system, and --json with usage and timings", async () => {
  const model = await testModel();
  const { code, stdout, stderr } = await runCli(["chat", "--model", model, "--system", "be brief", "--json", "--temperature", "0", "-n", "7"], { input: "what is water\n" });
  assert.is(code, 0, stderr);
  const result = JSON.parse(stdout);
  assert.is(result.model, "tiny");
  assert.is(result.backend, "llama.cpp/cpu");
  assert.is(result.finish_reason, "length");
  assert.is(result.usage.completion_tokens, 7);
  assert.is(result.usage.total_tokens, result.usage.prompt_tokens + 7);
  assert.ok(result.timings.ttft_ms > 0);
  assert.ok(result.text.length > 0);
  assert.not.match(stderr, /demo model/);
});

chat("the cli:chat record's time to first token leaves the load out, as --json's does", async () => {
  const model = await testModel();
  const home = tempDir();
  // at temperature 0: a sampled answer may end at its first token, and then has no first token to time
  const { code, stdout, stderr } = await runCli(["chat", "--model", model, "--temperature", "0", "--json", "-n", "5", "hi"], { env: { MLXS_HOME: home } });
  assert.is(code, 0, stderr);
  const printed = JSON.parse(stdout).timings;
  const [record] = await waitForRows(join(home, "audit.db"));
  assert.is(record.endpoint, "cli:chat");
  assert.ok(record.load_ms > 0 && record.ttft_ms > 0, JSON.stringify(record));
  assert.ok(record.ttft_ms <= record.duration_ms - record.load_ms, JSON.stringify(record));
  // the record's clock and the runner's differ by the messages between the processes; starting
  // the engine (a runner process, llama.cpp, the backend: a second or so here) was in it before
  assert.ok(record.ttft_ms < printed.ttft_ms + 700, `record ${record.ttft_ms} ms, --json ${printed.ttft_ms} ms`);
});

chat("temperature 0 answers the same twice; --stop ends before the stop text", async () => {
  const model = await testModel();
  const args = ["chat", "--model", model, "--temperature", "0", "-n", "30", "tell me"];
  const a = await runCli(args);
  const b = await runCli(args);
  assert.is(a.code, 0, a.stderr);
  assert.is(b.stdout, a.stdout);
  const word = a.stdout.trim().split(" ")[4];
  const stopped = await runCli([...args, "--stop", ` ${word}`, "--json"]);
  const result = JSON.parse(stopped.stdout);
  assert.is(result.finish_reason, "stop_sequence");
  assert.is(result.text, a.stdout.slice(0, a.stdout.indexOf(` ${word}`)));
});

chat("config precedence: flag > MLXS_* env > config file > default", async () => {
  const model = await testModel();
  const home = tempDir();
  writeFileSync(join(home, "config.json"), JSON.stringify({ model: "fromfile", models: { fromfile: model, fromenv: model, fromflag: model }, threads: 1 }));
  const run = async (args, env = {}) => JSON.parse((await runCli(["chat", ...args, "--json", "-n", "2", "hi"], { env: { MLXS_HOME: home, ...env } })).stdout).model;
  assert.is(await run([]), "fromfile");
  assert.is(await run([], { MLXS_MODEL: "fromenv" }), "fromenv");
  assert.is(await run(["--model", "fromflag"], { MLXS_MODEL: "fromenv" }), "fromflag");
  // XDG locations when MLXS_HOME is not set
  const xdg = tempDir();
  mkdirSync(join(xdg, "config", "mlxs"), { recursive: true });
  writeFileSync(join(xdg, "config", "mlxs", "config.json"), JSON.stringify({ models: { x: model }, model: "x" }));
  const env = { MLXS_HOME: "", XDG_CONFIG_HOME: join(xdg, "config"), XDG_DATA_HOME: join(xdg, "data") };
  const r = await runCli(["chat", "--json", "-n", "2", "hi"], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).model, "x");
  const demo = await runCli(["chat", "-n", "2", "hi"], { env: { ...env, XDG_CONFIG_HOME: join(xdg, "none") } });
  assert.is(demo.code, 0, demo.stderr);
  assert.ok(existsSync(join(xdg, "data", "mlxs", "models")), "demo model under $XDG_DATA_HOME/mlxs");
});

chat.run();

const embed = suite("embed");

embed("arguments give one JSON document; stdin lines give JSON lines; same vectors", async () => {
  const model = await testModel();
  const a = await runCli(["embed", "--model", model, "hello world", "the sea"]);
  assert.is(a.code, 0, a.stderr);
  const doc = JSON.parse(a.stdout);
  assert.is(doc.data.length, 2);
  assert.is(doc.data[0].embedding.length, 64);
  assert.is(doc.data[1].index, 1);
  assert.ok(doc.usage.prompt_tokens > 0);
  const b = await runCli(["embed", "--model", model, "--format", "jsonl"], { input: "hello world\n\nthe sea\n" });
  assert.is(b.code, 0, b.stderr);
  const lines = b.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.is(lines.length, 2);
  assert.equal(lines[0].embedding, doc.data[0].embedding);
  assert.equal(lines[1].embedding, doc.data[1].embedding);
});

embed.run();

const errors = suite("errors");

async function expectError(args, code, pattern, options) {
  const r = await runCli(args, options);
  assert.is(r.code, code, `${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
  assert.not.match(r.stderr, STACK);
  if (pattern) assert.match(r.stderr, pattern);
  assert.ok(r.stderr.trim().split("\n").length <= 2, r.stderr);
  return r;
}

errors("model files: missing, not GGUF, truncated, a directory: one line, exit 1", async () => {
  const dir = tempDir();
  const model = await testModel();
  writeFileSync(join(dir, "text.gguf"), "hello, not a model");
  writeFileSync(join(dir, "cut.gguf"), readFileSync(model).subarray(0, 200_000));
  await expectError(["chat", "--model", join(dir, "missing.gguf"), "hi"], 1, /model file not found/);
  await expectError(["chat", "--model", join(dir, "text.gguf"), "hi"], 1, /not a GGUF/);
  await expectError(["chat", "--model", join(dir, "cut.gguf"), "hi"], 1, /truncated/);
  await expectError(["embed", "--model", dir, "hi"], 1, /not a file/);
});

errors("bad option values are usage errors, exit 2", async () => {
  for (const args of [["--threads", "-1"], ["--threads", "0"], ["--temperature", "3"], ["--max-tokens", "0"], ["--gpu", "foo"], ["--top-p", "abc"], ["--ctx-size", "1"], ["--bogus"]]) {
    await expectError(["chat", ...args, "hi"], 2);
  }
  await expectError(["embed", "--format", "xml", "hi"], 2);
  await expectError(["chat", "--max-tokens", "0", "hi"], 2, /--max-tokens/);
  await expectError(["chat", ""], 2, /empty/);
});

errors("bad config file or environment: exit 2 naming the file and key", async () => {
  const home = tempDir();
  const file = join(home, "config.json");
  writeFileSync(file, "{ not json");
  await expectError(["chat", "hi"], 2, new RegExp(`${file.replace(/[/.]/g, "\\$&")}.*not valid JSON`), { env: { MLXS_HOME: home } });
  writeFileSync(file, JSON.stringify({ colour: "blue" }));
  await expectError(["chat", "hi"], 2, /unknown key "colour"/, { env: { MLXS_HOME: home } });
  writeFileSync(file, JSON.stringify({ threads: "many" }));
  await expectError(["chat", "hi"], 2, /config\.json: "threads" must be an integer/, { env: { MLXS_HOME: home } });
  writeFileSync(file, JSON.stringify({ models: { a: 3 } }));
  await expectError(["chat", "hi"], 2, /models\.a/, { env: { MLXS_HOME: home } });
  await expectError(["chat", "hi"], 2, /MLXS_THREADS/, { env: { MLXS_THREADS: "abc" } });
  await expectError(["chat", "--config", join(home, "nope.json"), "-n", "1", "hi"], 0);
});

errors("an unreachable URL and a 404 fail fast with one line, exit 1", async () => {
  const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const refused = await expectError(["chat", "--model", "http://127.0.0.1:1/x.gguf", "hi"], 1, /cannot download model/);
    assert.ok(refused.ms < 20_000);
    await expectError(["chat", "--model", `http://127.0.0.1:${server.address().port}/missing.gguf`, "hi"], 1, /404/);
  } finally {
    server.close();
  }
});

errors.run();

const download = suite("download");

download("a URL downloads once into the data dir's models/, with progress on stderr", async () => {
  const model = await testModel();
  const bytes = readFileSync(model);
  let gets = 0;
  const server = http.createServer((req, res) => {
    if (req.method === "GET") gets++;
    res.writeHead(200, { "content-length": bytes.length, "content-type": "application/octet-stream" });
    res.end(req.method === "HEAD" ? undefined : bytes);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const home = tempDir();
  const url = `http://127.0.0.1:${server.address().port}/remote-tiny.gguf`;
  try {
    const first = await runCli(["chat", "--model", url, "--json", "-n", "3", "hi"], { env: { MLXS_HOME: home } });
    assert.is(first.code, 0, first.stderr);
    assert.match(first.stderr, /downloading .*remote-tiny\.gguf/);
    assert.is(JSON.parse(first.stdout).model, "remote-tiny");
    const saved = join(home, "models", "remote-tiny.gguf");
    assert.equal(readFileSync(saved), bytes);
    const getsAfterFirst = gets;
    assert.ok(getsAfterFirst >= 1);
    const second = await runCli(["chat", "--model", url, "-n", "3", "hi"], { env: { MLXS_HOME: home } });
    assert.is(second.code, 0, second.stderr);
    assert.not.match(second.stderr, /downloading/);
    assert.is(gets, getsAfterFirst, "the second run downloads nothing");
  } finally {
    server.close();
  }
});

download.run();

const interrupt = suite("interrupt");

interrupt("Ctrl-C stops a streaming answer: what was said stays printed, exit 130", async () => {
  const model = await testModel({ endless: true });
  const child = spawn(process.execPath, [CLI, "chat", "--model", model, "--temperature", "1", "hi"], {
    env: { ...process.env, MLXS_HOME: tempDir(), MLXS_THREADS: "1", MLXS_GPU: "cpu", MLXS_CTX_SIZE: String(ENDLESS_CONTEXT) },
  });
  let stdout = "";
  let stderr = "";
  let sent = false;
  child.stderr.on("data", (c) => { stderr += c; });
  child.stdout.on("data", (c) => {
    stdout += c;
    if (!sent) { sent = true; child.kill("SIGINT"); }
  });
  const code = await new Promise((resolve) => child.on("close", resolve));
  assert.ok(sent, "some text streamed");
  assert.is(code, 130, stderr);
  assert.ok(stdout.length > 0);
  assert.not.match(stderr, STACK);
});

interrupt.run();

const daemon = suite("finding the daemon");

const KEY_WARNING = /warning: a key given with --api-key is visible to every user/;

/** A port nothing listens on now: taken from the system, then let go. */
async function freePort() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** Runs `mlxs audit tail ...` until it succeeds with output matching `pattern`. */
async function tailUntil(args, options, pattern) {
  let last;
  await waitFor(async () => {
    last = await runCli(args, options);
    assert.is(last.code, 0, last.stderr);
    return pattern.test(last.stdout);
  }, { what: `${pattern} in mlxs ${args.join(" ")}`, intervalMs: 200, timeoutMs: 60_000, describe: () => last.stdout.slice(-500) });
}

daemon("MLXS_URL finds the daemon for ps, chat --url and audit tail --url; a key given as a flag is warned of, MLXS_API_KEY is not", async () => {
  const server = await startServer(["--model", await testModel(), "--api-key", "env-key-123"]);
  try {
    // the daemon's own --api-key is warned of too
    assert.match(server.stderr(), /warning: a key given with --api-key is visible to every user .*MLXS_API_KEYS or --api-keys-file/);
    const env = { MLXS_URL: server.url, MLXS_API_KEY: "env-key-123" };
    const ps = await runCli(["ps", "--json"], { env });
    assert.is(ps.code, 0, ps.stderr);
    assert.equal(JSON.parse(ps.stdout).models.map((m) => m.model), ["tiny"]);
    assert.is(ps.stderr, "");
    const chat = await runCli(["chat", "hi", "--url", "--temperature", "0", "-n", "3", "--json"], { env });
    assert.is(chat.code, 0, chat.stderr);
    assert.is(JSON.parse(chat.stdout).usage.completion_tokens, 3);
    // the daemon writes its records in the background: read until the chat's is there
    await tailUntil(["audit", "tail", "--url", "--json"], { env }, /"endpoint":"\/v1\/chat\/completions"/);
    // the flag wins over MLXS_URL, and is warned of
    const flagged = await runCli(["ps", "--url", server.url, "--api-key", "env-key-123"], { env: { MLXS_URL: "http://127.0.0.1:9" } });
    assert.is(flagged.code, 0, flagged.stderr);
    assert.match(flagged.stdout, /^NAME\s+STATE/);
    assert.match(flagged.stderr, KEY_WARNING);
    assert.match(flagged.stderr, /use MLXS_API_KEY or --api-key-file FILE\n$/);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

daemon("the config file's host and port: mlxs serve listens there, and ps, chat --url and audit tail --url find it", async () => {
  const home = tempDir();
  const port = await freePort();
  writeFileSync(join(home, "config.json"), JSON.stringify({ host: "127.0.0.1", port, model: await testModel() }));
  const child = spawn(process.execPath, [CLI, "serve"], { env: { ...process.env, MLXS_HOME: home, MLXS_THREADS: "1", MLXS_GPU: "cpu", MLXS_CTX_SIZE: "1024" } });
  let stderr = "";
  child.stderr.on("data", (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on("close", resolve));
  try {
    await waitFor(() => stderr.includes("listening on"), { what: "mlxs serve to listen", timeoutMs: 60_000, describe: () => stderr });
    assert.match(stderr, new RegExp(`listening on http://127\\.0\\.0\\.1:${port} `));
    const env = { MLXS_HOME: home };
    const ps = await runCli(["ps", "--json"], { env });
    assert.is(ps.code, 0, ps.stderr);
    assert.equal(JSON.parse(ps.stdout).models.map((m) => m.model), ["tiny"]);
    const chat = await runCli(["chat", "hi", "--url", "-n", "2", "--json"], { env });
    assert.is(chat.code, 0, chat.stderr);
    await tailUntil(["audit", "tail", "--url", "--json"], { env }, /"endpoint":"\/v1\/chat\/completions"/);
  } finally {
    child.kill("SIGTERM");
    assert.is(await exited, 0);
  }
});

daemon("a daemon not there: one line naming the address tried and where it came from, exit 1", async () => {
  const port = await freePort();
  const home = tempDir();
  const config = join(home, "config.json");
  const cases = [
    [["ps"], { MLXS_URL: `http://127.0.0.1:${port}` }, `http://127.0.0.1:${port} (from MLXS_URL)`],
    [["audit", "tail", "--url"], { MLXS_PORT: String(port) }, `http://127.0.0.1:${port} (from MLXS_HOST/MLXS_PORT)`],
    [["chat", "hi", "--url", `http://127.0.0.1:${port}/`], {}, `http://127.0.0.1:${port} (from --url)`],
  ];
  for (const [args, env, tried] of cases) {
    const r = await runCli(args, { env });
    assert.is(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.is(r.stderr, `mlxs: cannot reach ${tried}: connection refused (is mlxs serve running there? give --url, or set MLXS_URL)\n`);
  }
  writeFileSync(config, JSON.stringify({ url: `http://127.0.0.1:${port}` }));
  const fromFile = await runCli(["chat", "hi", "--url"], { env: { MLXS_HOME: home } });
  assert.is(fromFile.code, 1);
  assert.ok(fromFile.stderr.startsWith(`mlxs: cannot reach http://127.0.0.1:${port} (from "url" in ${config}): connection refused`), fromFile.stderr);
  assert.not.match(fromFile.stderr, STACK);
  // a prompt after a bare --url would be taken for its value: said, and not quoted
  const prompt = await runCli(["chat", "--url", "a private question"]);
  assert.is(prompt.code, 2);
  assert.is(prompt.stderr, "mlxs: --url must be an http:// or https:// address (given without one, put --url after the other arguments)\n");
  const badEnv = await runCli(["ps"], { env: { MLXS_URL: "localhost:10242" } });
  assert.is(badEnv.code, 2);
  assert.match(badEnv.stderr, /^mlxs: environment variable MLXS_URL must be an http:\/\/ or https:\/\/ URL/);
});

daemon("an unknown option that begins a known one suggests it: --temp, --temperature", async () => {
  const temp = await runCli(["chat", "--temp", "1", "hi"]);
  assert.is(temp.code, 2);
  assert.match(temp.stderr, /unknown option '--temp'\n\(Did you mean --temperature\?\)/);
  assert.not.match(temp.stderr, /--help/);
  const loaded = await runCli(["serve", "--max-load", "1"]);
  assert.match(loaded.stderr, /\(Did you mean --max-loaded\?\)/);
  // a typo still gets commander's nearest option
  const typo = await runCli(["chat", "--temperture", "1", "hi"]);
  assert.match(typo.stderr, /\(Did you mean --temperature\?\)/);
});

daemon("--api-key-file: the key from a file authenticates, without the warning; a file every user may read is warned of; a missing one is one line", async () => {
  const dir = tempDir();
  const keys = join(dir, "keys");
  writeFileSync(keys, "ops file-key-4567 scope=admin\n");
  const server = await startServer(["--model", await testModel(), "--api-keys-file", keys]);
  try {
    const keyFile = join(dir, "key");
    writeFileSync(keyFile, "file-key-4567\n", { mode: 0o600 });
    chmodSync(keyFile, 0o600);
    const ps = await runCli(["ps", "--url", server.url, "--api-key-file", keyFile, "--json"]);
    assert.is(ps.code, 0, ps.stderr);
    assert.is(ps.stderr, "");
    assert.equal(JSON.parse(ps.stdout).models.map((m) => m.model), ["tiny"]);
    const chat = await runCli(["chat", "hi", "--url", server.url, "--api-key-file", keyFile, "-n", "2"]);
    assert.is(chat.code, 0, chat.stderr);
    assert.is(chat.stderr, "");
    await tailUntil(["audit", "tail", "--url", server.url, "--api-key-file", keyFile, "--json"], {}, /"client":"ops"/);
    // without it: refused, and told how to give one
    const none = await runCli(["ps", "--url", server.url]);
    assert.is(none.code, 1);
    assert.match(none.stderr, /answered 401: it refused the API key \(give --api-key-file, MLXS_API_KEY or --api-key\)\n$/);
    chmodSync(keyFile, 0o644);
    const open = await runCli(["ps", "--url", server.url, "--api-key-file", keyFile]);
    assert.is(open.code, 0, open.stderr);
    assert.is(open.stderr, `mlxs: warning: ${keyFile} is readable by every user of this machine; chmod 600 it\n`);
    const missing = await runCli(["ps", "--url", server.url, "--api-key-file", join(dir, "nope")]);
    assert.is(missing.code, 2);
    assert.is(missing.stderr, `mlxs: --api-key-file: cannot read ${join(dir, "nope")} (ENOENT)\n`);
    const both = await runCli(["ps", "--url", server.url, "--api-key-file", keyFile, "--api-key", "x"]);
    assert.is(both.code, 2);
    assert.match(both.stderr, /give --api-key or --api-key-file, not both/);
  } finally {
    assert.is(await server.stop(), 0);
  }
});

daemon.run();
