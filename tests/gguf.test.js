import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readGgufFileInfo } from "node-llama-cpp";
import { writeTinyModel, DEMO_MODEL } from "../dist/core/gguf-writer.js";
import { ensureDemoModel } from "../dist/core/demo-model.js";
import { InferenceCore } from "../dist/core/index.js";
import { CORE, TEST_MODEL, collect, tempDir } from "./helpers.js";

const sha = (path) => createHash("sha256").update(readFileSync(path)).digest("hex");

test("the writer's file reads back with its metadata", async () => {
  const path = join(tempDir(), "m.gguf");
  await writeTinyModel(path, TEST_MODEL);
  const info = await readGgufFileInfo(path, { logWarnings: false });
  assert.is(info.version, 3);
  assert.is(info.metadata.general.architecture, "llama");
  assert.is(info.metadata.general.name, "mlxs-test");
  assert.is(info.metadata.llama.context_length, 1024);
  assert.is(info.metadata.llama.embedding_length, 64);
  assert.is(info.metadata.llama.block_count, 2);
  assert.ok(info.metadata.tokenizer.chat_template.includes("<|im_start|>"));
  const tokens = info.metadata.tokenizer.ggml.tokens;
  assert.is(tokens[info.metadata.tokenizer.ggml.eos_token_id], "<|im_end|>");
  assert.ok(tokens.includes("▁the"));
  assert.is(info.tensorInfo.length, 3 + 2 * 9);
});

test("the same spec gives the same bytes; another seed does not", async () => {
  const dir = tempDir();
  await writeTinyModel(join(dir, "a.gguf"), TEST_MODEL);
  await writeTinyModel(join(dir, "b.gguf"), TEST_MODEL);
  await writeTinyModel(join(dir, "c.gguf"), { ...TEST_MODEL, seed: 43 });
  assert.is(sha(join(dir, "a.gguf")), sha(join(dir, "b.gguf")));
  assert.is.not(sha(join(dir, "a.gguf")), sha(join(dir, "c.gguf")));
});

test("the demo model is under 2 MB, written once into the data dir, and deterministic", async () => {
  const dir = tempDir();
  const first = await ensureDemoModel(join(dir, "models"));
  const size = statSync(first.path).size;
  assert.ok(size < 2 * 1024 * 1024, `demo model is ${size} bytes`);
  const mtime = statSync(first.path).mtimeMs;
  const again = await ensureDemoModel(join(dir, "models"));
  assert.is(again.path, first.path);
  assert.is(statSync(again.path).mtimeMs, mtime);
  const fresh = join(tempDir(), "demo.gguf");
  await writeTinyModel(fresh, DEMO_MODEL);
  assert.is(sha(fresh), sha(first.path));
});

test("the demo model answers in readable words: valid UTF-8, no control or byte pieces", async () => {
  const demo = await ensureDemoModel(join(tempDir(), "models"));
  const core = new InferenceCore([demo], CORE);
  try {
    for (const seed of [1, 2, 3, 4, 5]) {
      const { text } = await collect(core.chat({ messages: [{ role: "user", content: "Tell me something ünïcode 🙂" }], seed, temperature: 1, maxTokens: 80 }));
      assert.ok(text.length > 0);
      assert.not.match(text, /\uFFFD/);
      assert.not.match(text, /<\|im_|<0x|<s>|<\/s>|<unk>/);
      assert.ok(Buffer.from(text, "utf8").toString("utf8") === text);
      assert.match(text, /^[a-z ,.]+$/, text);
    }
  } finally {
    await core.close();
  }
});

test("a demo model file of an older mlxs (other weights) is not taken for this one: another name, and removed once the new one is written", async () => {
  const models = join(tempDir(), "models");
  mkdirSync(models, { recursive: true });
  // the demo model before it ended its JSON strings
  const old = join(models, "mlxs-demo-20261129.gguf");
  writeFileSync(old, "GGUF of an older demo model");
  const demo = await ensureDemoModel(models);
  assert.is.not(demo.path, old);
  assert.not.ok(existsSync(old));
  assert.ok(statSync(demo.path).size > 100_000);
});

test.run();
