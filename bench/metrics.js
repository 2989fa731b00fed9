// /metrics (issue 15), through mlxs serve on the ~100 MB generated model:
//   requests/s of 1-token completions, 4 clients, with --metrics on and off (goal: within 2%),
//   taking turns round by round so that drift hits both alike;
//   the time of a scrape of GET /metrics after that traffic (goal <= 5 ms).
//   node bench/metrics.js [--rounds 7]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { benchModel, median, requestsPerSecond, startServe, table } from "./common.js";

const args = process.argv.slice(2);
const ROUNDS = args.includes("--rounds") ? Number(args[args.indexOf("--rounds") + 1]) : 7;
const model = await benchModel();
const home = mkdtempSync(join(tmpdir(), "mlxs-bench-metrics-"));
process.on("exit", () => rmSync(home, { recursive: true, force: true }));

const common = ["--model", model, "--gpu", "cpu", "--parallel", "4"];
const on = await startServe([...common, "--metrics"], join(home, "on"));
const off = await startServe(common, join(home, "off"));
const rps = { on: [], off: [] };
await requestsPerSecond(on.url, 40);
await requestsPerSecond(off.url, 40);
for (let round = 0; round < ROUNDS; round++) {
  process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
  const order = round % 2 ? ["on", "off"] : ["off", "on"];
  for (const which of order) rps[which].push(await requestsPerSecond((which === "on" ? on : off).url, 200));
}
const scrapes = [];
let bytes = 0;
for (let i = 0; i < 50; i++) {
  const started = performance.now();
  const res = await request(`${on.url}/metrics`);
  bytes = (await res.body.text()).length;
  scrapes.push(performance.now() - started);
}
await on.stop();
await off.stop();

const cost = (1 - median(rps.on) / median(rps.off)) * 100;
const scrape = median(scrapes);
console.log(`/metrics through mlxs serve, ~100 MB generated model, parallel 4, 4 clients, 200 1-token completions a round, medians of ${ROUNDS} rounds; scrape: median of 50`);
console.log(table([
  ["measure", "--metrics", "without", "cost", "goal", "verdict"],
  ["1-token completions/s", median(rps.on).toFixed(1), median(rps.off).toFixed(1), `${cost.toFixed(1)}%`, "<= 2%", cost <= 2 ? "met" : "missed"],
  [`a scrape of GET /metrics (${bytes} bytes), ms`, scrape.toFixed(2), "", "", "<= 5 ms", scrape <= 5 ? "met" : "missed"],
]));
