// `npm run bench`: runs every benchmark in bench/, one after another (never two at once:
// they would measure each other), and writes BENCHMARKS.md with the machine, each table
// of medians and ratios against the goals of its issue, and the command to reproduce it.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem, availableParallelism, release } from "node:os";
import { fileURLToPath } from "node:url";

const BENCHES = [
  ["Core vs node-llama-cpp direct (issue 2)", "bench/core.js", []],
  ["Parallel sequences (issue 2: the --parallel default)", "bench/parallel.js", []],
  ["Audit store (issue 3)", "bench/audit.js", []],
  ["mlxs serve vs the core (issue 4)", "bench/serve.js", ["--rounds", "5"]],
  ["mlxs serve vs llama.cpp's own llama-server (issue 12)", "bench/vs-llama-server.js", ["--rounds", "5"]],
  ["Constrained answers: JSON schemas and tool calls (issue 13)", "bench/agents.js", ["--rounds", "5"]],
  ["Models on demand: churn, cold starts, loads beside a busy model (issue 14)", "bench/lifecycle.js", ["--rounds", "5"]],
  ["Prometheus metrics (issue 15)", "bench/metrics.js", ["--rounds", "7"]],
  ["The audit store on PostgreSQL vs SQLite (issue 15)", "bench/pg-audit.js", []],
  ["CLI start-up (issues 2 and 3)", "bench/startup.js", []],
  ["Soak, 10 minutes (issue 7)", "bench/soak.js", ["--seconds", "600"]],
];
const root = fileURLToPath(new URL("..", import.meta.url));
const only = process.argv.slice(2);
const sections = [];
for (const [title, script, args] of BENCHES) {
  if (only.length && !only.some((o) => script.includes(o))) continue;
  process.stderr.write(`== ${script} ${args.join(" ")}\n`);
  const started = Date.now();
  const r = spawnSync(process.execPath, [script, ...args], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const output = r.status === 0 ? r.stdout.trim() : `failed (exit ${r.status})\n${r.stdout}`;
  process.stdout.write(output + "\n");
  const command = `node ${[script, ...args].join(" ")}`;
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  // tables whose rows can be measured one by one end in a "reproduce" column
  const how = /\breproduce\s*$/m.test(output)
    ? `The whole table: \`${command}\` (${seconds} s); one row: the command in its last column.`
    : `Every row comes from one run: \`${command}\` (${seconds} s).`;
  sections.push(`## ${title}\n\n${how}\n\n\`\`\`\n${output}\n\`\`\`\n`);
}
const cpu = cpus()[0]?.model ?? "unknown CPU";
const machine = `${availableParallelism()} cores (${cpu}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}, CPU only`;
const today = new Date().toISOString().slice(0, 10);
const report = new URL("../BENCHMARKS.md", import.meta.url);
// a partial run (`npm run bench -- audit lifecycle`) rewrites its own sections, each marked
// with its date and machine, and leaves the others as the last run wrote them
if (only.length) {
  let text = existsSync(report) ? readFileSync(report, "utf8") : "# Benchmarks\n";
  for (const section of sections) {
    const title = section.split("\n")[0];
    const dated = section.replace("\n\n", `\n\nMeasured on ${today} (a partial run): ${machine}.\n`);
    const at = text.indexOf(`${title}\n`);
    if (at < 0) text = `${text.trimEnd()}\n\n${dated}`;
    else {
      const next = text.indexOf("\n## ", at + title.length);
      text = text.slice(0, at) + dated + (next < 0 ? "" : text.slice(next + 1));
    }
  }
  writeFileSync(report, text);
  process.stderr.write("a partial run: its sections of BENCHMARKS.md rewritten, the others left as they were\n");
  process.exit(0);
}
writeFileSync(report, `# Benchmarks

Written by \`npm run bench\` on ${today}: ${machine}. The machines are shared and
noisy: absolute figures drift between runs, ratios hold better. Each table states the goal of
its issue and whether this run met it.

${sections.join("\n")}`);
process.stderr.write("wrote BENCHMARKS.md\n");
