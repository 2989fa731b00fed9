import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseCsv } from "csv-parse/sync";
import { AuditStore } from "../dist/audit/store.js";
import { parseFilter } from "../dist/audit/filter.js";
import { syntheticRecord, syntheticRecords } from "./fixtures/audit-records.js";
import { CLI, ROOT, STACK, assertNoMarker, runCli, tempDir, testModel, waitFor } from "./helpers.js";

async function seeded(records) {
  const home = tempDir();
  const store = await AuditStore.open(join(home, "audit.db"));
  await store.insert(records);
  await store.close();
  return home;
}

async function allRows(home) {
  const store = await AuditStore.open(join(home, "audit.db"), { create: false });
  const rows = store ? await store.query(parseFilter({}, { defaultLimit: null })) : [];
  await store?.close();
  return rows;
}

const commands = suite("commands");

commands("audit commands start without llama.cpp; no database yet: say so, exit 0", async () => {
  const trace = join(tempDir(), "imports.txt");
  writeFileSync(trace, "");
  const home = tempDir();
  for (const args of [["audit", "tail"], ["audit", "stats"], ["audit", "export"], ["audit", "prune"]]) {
    const result = await new Promise((resolve) => {
      const child = spawn(process.execPath, ["--import", join(ROOT, "tests/fixtures/trace-imports.mjs"), CLI, ...args], {
        env: { ...process.env, MLXS_TRACE_IMPORTS: trace, MLXS_HOME: home },
      });
      let stderr = "";
      child.stderr.on("data", (c) => { stderr += c; });
      child.on("close", (code) => resolve({ code, stderr }));
    });
    assert.is(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
  }
  assert.not.match(readFileSync(trace, "utf8"), /node-llama-cpp/);
  const tail = await runCli(["audit", "tail"], { env: { MLXS_HOME: home } });
  assert.match(tail.stderr, /no audit database yet/);
  assert.is(tail.stdout, "");
  assert.not.ok(existsSync(join(home, "audit.db")), "reading commands never create the database");
});

commands("the PostgreSQL store, the writer and the server's audit routes load no SQLite driver (a fleet's daemon never needs it)", async () => {
  const trace = join(tempDir(), "imports.txt");
  writeFileSync(trace, "");
  const code = await new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", join(ROOT, "tests/fixtures/trace-imports.mjs"), "--input-type=module", "-e",
      `await import(${JSON.stringify(join(ROOT, "dist/audit/pg-store.js"))}); await import(${JSON.stringify(join(ROOT, "dist/audit/writer.js"))}); await import(${JSON.stringify(join(ROOT, "dist/server/admin.js"))});`], {
      env: { ...process.env, MLXS_TRACE_IMPORTS: trace },
    });
    child.on("close", resolve);
  });
  assert.is(code, 0);
  const loaded = readFileSync(trace, "utf8");
  assert.match(loaded, /pg-store\.js/);
  assert.not.match(loaded, /sqlite3|\/audit\/store\.js/);
});

commands("tail: the last N as an aligned plain table when piped, or JSON lines; filters apply", async () => {
  const home = await seeded(syntheticRecords(50));
  const table = await runCli(["audit", "tail", "-n", "5"], { env: { MLXS_HOME: home } });
  assert.is(table.code, 0, table.stderr);
  const lines = table.stdout.trimEnd().split("\n");
  assert.is(lines.length, 6);
  assert.match(lines[0], /^TIME \(UTC\)\s+REQUEST ID\s+ENDPOINT/);
  assert.not.match(table.stdout, /\x1b\[/, "no colour when piped");
  // oldest of the five first, newest last
  assert.match(lines[1], /r-4 /);
  assert.match(lines[5], /r-0 /);
  const statusColumn = lines[0].indexOf("STATUS");
  for (const line of lines.slice(1)) assert.match(line.slice(statusColumn), /^(success|error|timeout|cancelled)/);
  const forced = await runCli(["audit", "tail", "-n", "3"], { env: { MLXS_HOME: home, NO_COLOR: "", FORCE_COLOR: "1" } });
  assert.match(forced.stdout, /\x1b\[32msuccess/);
  const noColor = await runCli(["audit", "tail", "-n", "3"], { env: { MLXS_HOME: home, NO_COLOR: "1", FORCE_COLOR: "1" } });
  assert.not.match(noColor.stdout, /\x1b\[/);
  const json = await runCli(["audit", "tail", "--json", "-n", "100", "--model", "beta", "--status", "success"], { env: { MLXS_HOME: home } });
  const rows = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(rows.length > 0);
  assert.ok(rows.every((r) => r.model === "beta" && r.status === "success"));
  assert.match(rows[0].timestamp, /^\d{4}-\d{2}-\d{2}T.*Z$/);
  const bad = await runCli(["audit", "tail", "--since", "yesterday"], { env: { MLXS_HOME: home } });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /invalid --since: expected an ISO-8601/);
  // -n 0 shows nothing old (with -f: only what comes next, as tail -n 0 -f)
  const none = await runCli(["audit", "tail", "-n", "0"], { env: { MLXS_HOME: home } });
  assert.equal([none.code, none.stdout, none.stderr], [0, "", ""]);
  const badLines = await runCli(["audit", "tail", "-n", "ten"], { env: { MLXS_HOME: home } });
  assert.is(badLines.code, 2);
  assert.match(badLines.stderr, /^mlxs: -n\/--lines must be an integer from 0 to 1000000/);
  const badStatus = await runCli(["audit", "stats", "--status", "ok"], { env: { MLXS_HOME: home } });
  assert.is(badStatus.code, 2);
  assert.match(badStatus.stderr, /--status/);
});

commands("prune: one line for cron, --dry-run, --quiet, --retention-days, an ISO cutoff shared with export, bad ages refused", async () => {
  const records = syntheticRecords(100, { spacingMs: 3_600_000 }); // one an hour, back ~4 days
  const home = await seeded(records);
  const env = { MLXS_HOME: home };
  const dry = await runCli(["audit", "prune", "--older-than", "2d", "--dry-run"], { env });
  assert.match(dry.stdout, /^would prune 52 records older than \d{4}-\d{2}-\d{2}T[\d:.]+Z\n$/);
  const pruned = await runCli(["audit", "prune", "--older-than", "2d"], { env });
  assert.is(pruned.code, 0);
  assert.match(pruned.stdout, /^pruned 52 records older than \d{4}-\d{2}-\d{2}T[\d:.]+Z\n$/);
  assert.is((await allRows(home)).length, 48);
  const quiet = await runCli(["audit", "prune", "--older-than", "1d", "--quiet", "--vacuum"], { env });
  assert.is(quiet.code, 0);
  assert.is(quiet.stdout + quiet.stderr, "");
  assert.is((await allRows(home)).length, 24);
  // one cutoff time for export --until and prune --older-than: the same records
  const cutoff = new Date(Date.now() - 12.5 * 3_600_000).toISOString();
  const exported = await runCli(["audit", "export", "--format", "jsonl", "--until", cutoff], { env });
  const exportedCount = exported.stdout.trim().split("\n").length;
  const byTime = await runCli(["audit", "prune", "--older-than", cutoff], { env });
  assert.is(byTime.stdout, `pruned ${exportedCount} records older than ${cutoff}\n`);
  assert.ok(exportedCount >= 11 && exportedCount <= 13, String(exportedCount));
  assert.is((await allRows(home)).length, 24 - exportedCount);
  const byRetention = await runCli(["audit", "prune", "--retention-days", "0"], { env });
  assert.match(byRetention.stdout, /keep everything/);
  const byEnv = await runCli(["audit", "prune"], { env: { ...env, MLXS_AUDIT_RETENTION_DAYS: "30" } });
  assert.match(byEnv.stdout, /^pruned 0 records/);
  for (const bad of [["--older-than", "soon"], ["--older-than", "0d"], ["--older-than", "2999-01-01"], ["--retention-days", "-3"]]) {
    const r = await runCli(["audit", "prune", ...bad], { env });
    assert.is(r.code, 2);
    assert.is(r.stderr.trim().split("\n").length, 1);
  }
  const broken = tempDir();
  writeFileSync(join(broken, "audit.db"), "not a database at all, really not ".repeat(10));
  const failed = await runCli(["audit", "prune"], { env: { MLXS_HOME: broken } });
  assert.is(failed.code, 1);
  assert.match(failed.stderr, /^mlxs: .*not an SQLite database\n$/);
});

commands("export: CSV that a CSV parser reads back, JSON lines, a JSON array, -o atomically", async () => {
  const nasty = { ...syntheticRecord(1000), request_id: "nasty", status: "error", error_type: "internal", error_message: 'said "no", then, a line\nbreak\r\nand more' };
  const home = await seeded([...syntheticRecords(30), nasty]);
  const env = { MLXS_HOME: home };
  const csv = await runCli(["audit", "export", "--format", "csv"], { env });
  assert.is(csv.code, 0, csv.stderr);
  const rows = parseCsv(csv.stdout, { columns: true });
  assert.is(rows.length, 31);
  assert.is(rows.find((r) => r.request_id === "nasty").error_message, nasty.error_message);
  assert.match(rows[0].timestamp, /Z$/);
  const jsonl = await runCli(["audit", "export", "--format", "jsonl", "--status", "error"], { env });
  const lines = jsonl.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(lines.every((r) => r.status === "error"));
  assert.ok(lines.some((r) => r.error_message === nasty.error_message));
  const json = await runCli(["audit", "export", "--format", "json", "--limit", "5"], { env });
  assert.is(JSON.parse(json.stdout).length, 5);
  const empty = await runCli(["audit", "export", "--format", "json", "--model", "nobody"], { env });
  assert.equal(JSON.parse(empty.stdout), []);
  const out = join(tempDir(), "export.csv");
  const toFile = await runCli(["audit", "export", "-o", out], { env });
  assert.is(toFile.code, 0, toFile.stderr);
  assert.is(toFile.stdout, "");
  assert.is(parseCsv(readFileSync(out), { columns: true }).length, 31);
  assert.equal(readdirSync(join(out, "..")), ["export.csv"], "no temporary file left");
  const bad = await runCli(["audit", "export", "-o", join(tempDir(), "missing-dir", "x.csv")], { env });
  assert.is(bad.code, 1);
  assert.not.match(bad.stderr, STACK);
});

commands("stats: text and JSON", async () => {
  const home = await seeded(syntheticRecords(70));
  const text = await runCli(["audit", "stats"], { env: { MLXS_HOME: home } });
  assert.match(text.stdout, /records\s+70/);
  assert.match(text.stdout, /duration ms\s+p50 \d+\s+p95 \d+\s+p99 \d+/);
  const json = JSON.parse((await runCli(["audit", "stats", "--json", "--endpoint", "cli:chat"], { env: { MLXS_HOME: home } })).stdout);
  assert.is(json.total, 14);
  assert.equal(Object.keys(json.byEndpoint), ["cli:chat"]);
  assert.match(json.first, /Z$/);
});

commands.run();

const together = suite("concurrency");

/** Resolves with a child's exit code, or fails after `timeoutMs`: a child that never ends must not hang the file. */
function exited(child, what, timeoutMs = 120_000) {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not exit within ${timeoutMs} ms`)), timeoutMs);
    child.on("close", (code) => { clearTimeout(timer); resolve(code); });
  });
}

together("a writer process, prune and tail --follow at once: nothing lost, nothing shown twice", async () => {
  // old records for prune to delete while the writer adds new ones
  const home = await seeded(syntheticRecords(3000, { now: Date.now() - 40 * 86_400_000, prefix: "old" }));
  const db = join(home, "audit.db");
  const env = { ...process.env, MLXS_HOME: home, NO_COLOR: "1" };
  const follower = spawn(process.execPath, [CLI, "audit", "tail", "-f", "--json", "-n", "1", "--since", "1h"], { env });
  let writer;
  // whatever fails, no child is left running: one would keep this file alive past its deadline
  try {
    let followed = "";
    let followerErr = "";
    follower.stdout.on("data", (c) => { followed += c; });
    follower.stderr.on("data", (c) => { followerErr += c; });
    let shownLines = 0;
    let shownIds = [];
    // parsed once a line, not on every poll: the poll runs beside two processes writing and reading
    const newShown = () => {
      const lines = followed.split("\n");
      lines.pop();
      for (; shownLines < lines.length; shownLines++) {
        if (!lines[shownLines]) continue;
        const id = JSON.parse(lines[shownLines]).request_id;
        if (id.startsWith("new-")) shownIds.push(id);
      }
      return shownIds;
    };
    const describe = () => `${newShown().length} new records followed; follower's stderr: ${JSON.stringify(followerErr.slice(-400))}`;
    // deadlines for a loaded 2-core machine: each wait ends as soon as its event comes
    const patience = { timeoutMs: 120_000, intervalMs: 50, describe };
    // the follower follows once a record written now reaches it
    const store = await AuditStore.open(db);
    await store.insert([syntheticRecord(0, { prefix: "ready" })]);
    await store.close();
    await waitFor(() => followed.includes('"ready-0"'), { ...patience, what: "the follower to follow" });
    writer = spawn(process.execPath, [join(ROOT, "tests/fixtures/audit-writer-process.js"), db, "2000", "2500", "new"], { env });
    let writerOut = "";
    writer.stdout.on("data", (c) => { writerOut += c; });
    const prunes = [];
    // three prunes spread over the writing: each once the follower has shown more new records
    for (let i = 1; i <= 3; i++) {
      await waitFor(() => newShown().length >= i * 400, { ...patience, what: `${i * 400} new records followed` });
      prunes.push(await runCli(["audit", "prune", "--older-than", "30d"], { env: { MLXS_HOME: home }, timeoutMs: 120_000 }));
    }
    assert.is(await exited(writer, "the writer process"), 0);
    assert.equal(JSON.parse(writerOut), { written: 2000, dropped: 0 });
    await waitFor(() => newShown().length >= 2000, { ...patience, what: "all 2000 new records followed" });
    follower.kill("SIGINT");
    assert.is(await exited(follower, "the follower"), 0);
    for (const p of prunes) assert.is(p.code, 0, p.stderr);
    assert.is(prunes.reduce((n, p) => n + Number(/pruned (\d+)/.exec(p.stdout)[1]), 0), 3000);
    const rows = await allRows(home);
    assert.is(rows.filter((r) => r.request_id.startsWith("new-")).length, 2000);
    assert.is(rows.length, 2001, "and the record that showed the follower ready");
    const shown = newShown();
    assert.is(shown.length, 2000, "every new record shown");
    assert.is(new Set(shown).size, 2000, "none shown twice");
  } finally {
    for (const child of [follower, writer]) if (child && child.exitCode === null) child.kill("SIGKILL");
  }
});

together.run();

const recording = suite("recording");

recording("chat and embed record themselves: success, failure and interruption, one record each", async () => {
  const home = tempDir();
  const model = await testModel();
  const env = { MLXS_HOME: home };
  const runs = [
    // at temperature 0: a sampled answer may end before its 4 tokens
    await runCli(["chat", "--model", model, "--temperature", "0", "-n", "4", "hi"], { env }),
    await runCli(["embed", "--model", model, "one", "two"], { env }),
    await runCli(["chat", "--model", join(home, "missing.gguf"), "hi"], { env }),
    await runCli(["chat", "--model", model, "--json", "hello ".repeat(1200)], { env }),
  ];
  assert.equal(runs.map((r) => r.code), [0, 0, 1, 1]);
  const stderr = runs.map((r) => r.stderr).join("");
  assert.not.match(stderr, /cannot write the audit log/);
  const rows = (await allRows(home)).reverse();
  // on failure, everything that could tell why: the files, and each run's exit and output
  const seen = () => JSON.stringify({ files: readdirSync(home).map((f) => [f, statSync(join(home, f)).size]), runs: runs.map((r) => ({ code: r.code, ms: r.ms, stderr: r.stderr, stdout: r.stdout.slice(0, 200) })) });
  assert.is(rows.length, 4, seen());
  const [chat, embed, missing, tooLong] = rows;
  assert.is(chat.endpoint, "cli:chat");
  assert.is(chat.status, "success");
  assert.is(chat.status_code, 0);
  assert.is(chat.model, "tiny");
  assert.is(chat.backend_type, "llama.cpp/cpu");
  assert.is(chat.completion_tokens, 4);
  assert.ok(chat.ttft_ms > 0 && chat.stream);
  assert.is(embed.endpoint, "cli:embed");
  assert.ok(embed.prompt_tokens > 0);
  assert.is(missing.status, "error");
  assert.is(missing.error_type, "not_found");
  assert.is(missing.model, "missing");
  assert.is(tooLong.error_type, "invalid_request");
  assert.is(tooLong.status_code, 1);
});

recording("privacy: a marker in every input never reaches any byte under the data dir", async () => {
  const home = tempDir();
  const model = await testModel();
  const endless = await testModel({ endless: true });
  const marker = "PRIVACY-MARKER-7f3a9c";
  const env = { MLXS_HOME: home };
  await runCli(["chat", "--model", model, "-n", "3", `tell me about ${marker}`], { env });
  await runCli(["chat", "--model", model, "--system", `system ${marker}`, "--json", "-n", "2"], { env, input: `${marker} from stdin` });
  await runCli(["embed", "--model", model, `embed ${marker}`], { env });
  await runCli(["embed", "--model", model, "--format", "jsonl"], { env, input: `${marker}\n${marker} two\n` });
  await runCli(["chat", "--model", model, `${marker} `.repeat(800)], { env });
  await runCli(["embed", "--model", model, `${marker} `.repeat(800)], { env });
  await runCli(["chat", "--model", model, "--stop", marker, "-n", "5", marker], { env });
  // interrupted mid-answer
  const child = spawn(process.execPath, [CLI, "chat", "--model", endless, `${marker} go`], { env: { ...process.env, ...env, MLXS_THREADS: "1", MLXS_GPU: "cpu" } });
  child.stdout.once("data", () => child.kill("SIGINT"));
  assert.is(await exited(child, "the interrupted chat").finally(() => child.kill("SIGKILL")), 130);
  const rows = await allRows(home);
  assert.is(rows.length, 8);
  assert.ok(rows.some((r) => r.status === "cancelled"));
  assertNoMarker(home, marker);
  // and while a writer holds the database open, its -wal and -shm files too
  const store = await AuditStore.open(join(home, "audit.db"));
  await store.insert([syntheticRecord(1)]);
  assert.ok(existsSync(join(home, "audit.db-wal")));
  assertNoMarker(home, marker);
  await store.close();
});

recording.run();

const identity = suite("one row per request; generation time");

identity("100 requests sharing one X-Request-ID through mlxs serve (SQLite): 100 rows, each stream gives each once, /metrics agrees", async () => {
  const { startServer } = await import("./helpers.js");
  const { checkSharedRequestId, SHARED_ID } = await import("./fixtures/same-request-id.js");
  const server = await startServer(["--model", await testModel(), "--metrics"]);
  try {
    await checkSharedRequestId(server, async () => (await allRows(server.home)).filter((r) => r.request_id === SHARED_ID));
  } finally {
    assert.is(await server.stop(), 0);
  }
});

identity("audit stats and stats --by: tokens/s over generation time only (a 3.7 s model load is not generation)", async () => {
  // 3 tokens in 4 s: 3.7 s loading the model, 0.1 s to the first token, 0.2 s generating
  const record = { ...syntheticRecord(0), status: "success", model: "m", duration_ms: 4000, ttft_ms: 100, load_ms: 3700, completion_tokens: 3 };
  const home = await seeded([record]);
  const stats = await runCli(["audit", "stats"], { env: { MLXS_HOME: home } });
  assert.is(stats.code, 0, stats.stderr);
  assert.match(stats.stdout, /^tokens\/s\s+15\.0$/m);
  const json = await runCli(["audit", "stats", "--json"], { env: { MLXS_HOME: home } });
  assert.ok(Math.abs(JSON.parse(json.stdout).tokensPerSecond - 15) < 1e-9, json.stdout);
  const by = await runCli(["audit", "stats", "--by", "model"], { env: { MLXS_HOME: home } });
  assert.is(by.code, 0, by.stderr);
  const [head, row] = by.stdout.trimEnd().split("\n");
  assert.match(head, /\btokens\/s$/);
  assert.match(row, /^m\s.*\s15\.0$/);
  const byJson = await runCli(["audit", "stats", "--by", "model", "--json"], { env: { MLXS_HOME: home } });
  assert.ok(Math.abs(JSON.parse(byJson.stdout).data[0].tokens_per_second - 15) < 1e-9, byJson.stdout);
});

identity.run();
