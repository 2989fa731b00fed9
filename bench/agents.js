// Constrained answers (issue 13), through mlxs serve on the ~100 MB generated model:
//   tokens/s of a json_schema answer vs a free-text answer of the same length (goal >= 0.85x),
//   time to first token with a 20-property schema vs without (goal <= +20 ms; the grammar is
//   built on a schema's first use and kept: that first use is shown apart),
//   1000 constrained answers (schemas and forced tool calls, seeds 1..1000): how many validate (goal 100%).
// Free and constrained requests take turns, so drift on a shared machine hits both alike.
//   node bench/agents.js [--rounds 5] [--answers 1000] [--only tokens|ttft|valid]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import Ajv from "ajv";
import { benchModel, median, startServe, table } from "./common.js";

const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const ROUNDS = option("--rounds", 5);
const ANSWERS = option("--answers", 1000);
const ONLY = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
const wants = (measure) => ONLY === undefined || ONLY === measure;
const reproduce = (measure) => `node bench/agents.js --rounds ${ROUNDS} --answers ${ANSWERS} --only ${measure}`;
const model = await benchModel();
const home = mkdtempSync(join(tmpdir(), "mlxs-bench-agents-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));

/** Twenty properties of every kind a client sends: strings, numbers, enums, arrays, a nested object, nullables. */
function twentyProperties(suffix = "") {
  const kinds = [
    { type: "string" }, { type: "integer" }, { type: "number" }, { type: "boolean" }, { type: "string", enum: ["low", "mid", "high"] },
    { type: "array", items: { type: "string" }, maxItems: 3 }, { type: ["string", "null"] },
    { type: "object", properties: { a: { type: "integer" }, b: { type: "string" } }, required: ["a", "b"], additionalProperties: false },
  ];
  const properties = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`field_${i}${suffix}`, { ...kinds[i % kinds.length], description: `field ${i}` }]));
  return { type: "object", properties, required: Object.keys(properties), additionalProperties: false };
}
/** Mostly one long string, as free text is: the grammar's cost per token of text. */
const ARTICLE = {
  type: "object",
  properties: { title: { type: "string", maxLength: 40 }, body: { type: "string" }, tags: { type: "array", items: { type: "string" } } },
  required: ["title", "body", "tags"],
  additionalProperties: false,
};
const WEATHER = { type: "object", properties: { city: { type: "string" }, days: { type: "integer" }, unit: { type: "string", enum: ["c", "f"] } }, required: ["city", "days", "unit"], additionalProperties: false };

const server = await startServe(["--model", model, "--parallel", "4", "--gpu", "cpu", "--no-audit"], home);
const { url } = server;
const threads = /threads: (\d+)/.exec(server.stderr())?.[1] ?? "?";

async function chat(body) {
  const res = await request(`${url}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "Write about the sea." }], temperature: 0, ...body }),
  });
  const answer = await res.body.json();
  if (res.statusCode !== 200) throw new Error(`${res.statusCode}: ${JSON.stringify(answer)}`);
  return answer;
}
const format = (schema) => ({ response_format: { type: "json_schema", json_schema: { name: "answer", schema, strict: true } } });
/** Decode rate: tokens after the first, per second after the first. */
const rate = (answer) => (answer.usage.completion_tokens - 1) / ((answer.timings.total_ms - answer.timings.ttft_ms) / 1000);

const samples = { free: [], constrained: [], ttftFree: [], ttftSchema: [], ttftFirstUse: [] };
// warm-up: the first answers of a fresh runner are slow
for (let i = 0; i < 3; i++) {
  await chat({ max_tokens: 64 });
  await chat({ max_tokens: 64, ...format(ARTICLE) });
}
for (let round = 0; round < ROUNDS; round++) {
  process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
  const pair = async (a, b) => { if (round % 2) { await b(); await a(); } else { await a(); await b(); } };
  // the same length both ways: the JSON answer is closed within its budget, so both use all 128 tokens
  for (let i = 0; i < 4 && wants("tokens"); i++) {
    const seed = round * 4 + i;
    await pair(async () => samples.free.push(rate(await chat({ max_tokens: 128, seed, temperature: 0.8 }))), async () => samples.constrained.push(rate(await chat({ max_tokens: 128, seed, temperature: 0.8, ...format(ARTICLE) }))));
  }
  if (!wants("ttft")) continue;
  for (let i = 0; i < 10; i++) {
    await pair(async () => samples.ttftFree.push((await chat({ max_tokens: 2 })).timings.ttft_ms), async () => samples.ttftSchema.push((await chat({ max_tokens: 2, ...format(twentyProperties()) })).timings.ttft_ms));
  }
  // a schema never seen before: its grammar is built during this request
  samples.ttftFirstUse.push((await chat({ max_tokens: 2, ...format(twentyProperties(`_${round}`)) })).timings.ttft_ms);
}

let valid = 0;
let answered = 0;
const invalid = [];
if (wants("valid")) {
  const ajv = new Ajv({ strict: false });
  const kinds = [
    { body: format(twentyProperties()), check: ajv.compile(twentyProperties()), read: (a) => [JSON.parse(a.choices[0].message.content)] },
    { body: format(ARTICLE), check: ajv.compile(ARTICLE), read: (a) => [JSON.parse(a.choices[0].message.content)] },
    {
      body: { tools: [{ type: "function", function: { name: "get_weather", parameters: WEATHER } }], tool_choice: "required" },
      check: ajv.compile(WEATHER),
      read: (a) => (a.choices[0].message.tool_calls ?? []).map((c) => JSON.parse(c.function.arguments)),
    },
  ];
  let next = 0;
  process.stderr.write(`${ANSWERS} constrained answers ...\n`);
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < ANSWERS) {
      const seed = ++next;
      const kind = kinds[seed % kinds.length];
      answered++;
      try {
        const values = kind.read(await chat({ max_tokens: 40, seed, temperature: 1, ...kind.body }));
        if (values.length > 0 && values.every((v) => kind.check(v))) valid++;
        else invalid.push(seed);
      } catch (error) {
        invalid.push(seed);
        process.stderr.write(`seed ${seed}: ${error.message}\n`);
      }
    }
  }));
}
await server.stop();

const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, v.length ? median(v) : NaN]));
const rows = [["measure", "json_schema", "free text", "ratio or cost", "goal", "verdict", "reproduce"]];
if (wants("tokens")) {
  const ratio = m.constrained / m.free;
  rows.push(["tok/s, 128-token answer", m.constrained.toFixed(1), m.free.toFixed(1), `${ratio.toFixed(3)}x`, ">= 0.85x", ratio >= 0.85 ? "met" : "missed", reproduce("tokens")]);
}
if (wants("ttft")) {
  const added = m.ttftSchema - m.ttftFree;
  rows.push(["time to first token, 20 properties, ms", m.ttftSchema.toFixed(2), m.ttftFree.toFixed(2), `${added >= 0 ? "+" : ""}${added.toFixed(2)} ms`, "<= +20 ms", added <= 20 ? "met" : "missed", reproduce("ttft")]);
  rows.push(["  the same, a schema's first use (grammar built)", m.ttftFirstUse.toFixed(2), m.ttftFree.toFixed(2), `+${(m.ttftFirstUse - m.ttftFree).toFixed(2)} ms`, "(once per schema)", "", reproduce("ttft")]);
}
if (wants("valid")) {
  rows.push([`valid answers of ${answered} (schemas, forced calls)`, `${valid}`, "", `${((valid / answered) * 100).toFixed(1)}%`, "100%", valid === answered ? "met" : `missed (seeds ${invalid.slice(0, 10).join(", ")})`, reproduce("valid")]);
}
console.log(`Constrained answers through mlxs serve, ~100 MB generated model, threads=${threads} (measured), parallel 4, medians of ${ROUNDS} rounds (tok/s: ${samples.free.length} answers each; TTFT: ${samples.ttftFree.length} requests each, server-side)`);
console.log(table(rows));
