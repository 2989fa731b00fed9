// The audit log's hash chain (src/audit/chain.ts) on SQLite: records written through the real
// writer verify whole; every kind of tampering with the file (by sqlite3, as anyone with the
// file could) is found at the right row; a pruned log and a log written by two processes at
// once verify whole; a randomized loop of tamperings is found every time, untouched copies never.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { copyFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { join } from "node:path";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import { AuditStore } from "../dist/audit/store.js";
import { AuditWriter } from "../dist/audit/writer.js";
import { MIGRATIONS } from "../dist/audit/schema.js";
import { encodeRow, linkOf, verifyChains } from "../dist/audit/chain.js";
import { syntheticRecord } from "./fixtures/audit-records.js";
import { runCli, tempDir } from "./helpers.js";

const ROOT = new URL("..", import.meta.url).pathname;
const START = Date.now() - 86_400_000;
const rawDb = (path) => open({ filename: path, driver: sqlite3.Database });

/**
 * A log of `count` records in two chains ("a", "b"), with fractional durations, written by
 * the real writer, each a second after the one before; ids have gaps between batches.
 */
async function writtenLog(count = 300, dir = tempDir()) {
  const path = join(dir, "audit.db");
  for (let batch = 0; batch < 3; batch++) {
    const writer = AuditWriter.forLocation(path);
    for (let i = batch * (count / 3); i < (batch + 1) * (count / 3); i++) {
      writer.record({ ...syntheticRecord(i), timestamp: START + i * 1000, duration_ms: 100 + Math.random() * 1000, ttft_ms: Math.random() * 50, instance: i % 3 === 0 ? "b" : "a" });
    }
    await writer.close();
    assert.is(writer.stats.written, count / 3);
    // ids burnt between batches (as a rolled-back insert would): gaps a forged row could fill
    const db = await rawDb(path);
    await db.run("UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'audit_logs'");
    await db.close();
  }
  return path;
}

async function verify(path) {
  const store = await AuditStore.open(path, { create: false });
  try {
    return await verifyChains(store);
  } finally {
    await store.close();
  }
}

const broken = (result) => result.chains.filter((c) => c.broken).map((c) => ({ chain: c.chain, ...c.broken }));

async function tampered(path, sql, ...params) {
  const copy = `${path}.${Math.random().toString(36).slice(2)}.db`;
  copyFileSync(path, copy);
  const db = await rawDb(copy);
  await db.run(sql, ...params);
  await db.close();
  return copy;
}

async function rowsOf(path, where = "1") {
  const db = await rawDb(path);
  const rows = await db.all(`SELECT * FROM audit_logs WHERE ${where} ORDER BY id`);
  await db.close();
  return rows;
}

const whole = suite("whole");

whole("records written through the real writer verify whole: count and head per chain, as `mlxs audit verify` prints them, exit 0", async () => {
  const path = await writtenLog();
  const { code, stdout, stderr } = await runCli(["audit", "verify", "--db", path, "--json"]);
  assert.is(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.is(report.whole, true);
  assert.is(report.sealed, false);
  assert.is(report.rows, 300);
  assert.equal(report.chains.map((c) => [c.chain, c.records, c.broken]), [["a", 200, null], ["b", 100, null]]);
  const db = await rawDb(path);
  const heads = await db.all("SELECT instance, seq, link FROM audit_chain_heads ORDER BY instance");
  await db.close();
  assert.equal(heads.map((h) => [h.instance, h.seq, h.link]), report.chains.map((c) => [c.chain, c.records, c.head]));
  const text = await runCli(["audit", "verify", "--db", path]);
  assert.is(text.code, 0);
  assert.match(text.stdout, /chain "a": whole, 200 records/);
  assert.match(text.stdout, /audit log whole: 2 chain\(s\), 300 rows/);
  assert.match(text.stdout, /not sealed/);
});

whole("an older (schema 5) log with records is chained in place when it is opened, and verifies whole", async () => {
  const path = join(tempDir(), "old.db");
  const db = await rawDb(path);
  for (const sql of MIGRATIONS.slice(0, 5)) await db.exec(sql);
  for (let i = 0; i < 50; i++) {
    const r = syntheticRecord(i);
    await db.run("INSERT INTO audit_logs (request_id, timestamp, endpoint, duration_ms, status, stream, instance) VALUES (?, ?, ?, ?, ?, ?, ?)",
      r.request_id, r.timestamp, r.endpoint, 1 / 3 + i, r.status, r.stream ? 1 : 0, i % 2 ? "old" : null);
  }
  await db.exec("PRAGMA user_version = 5");
  await db.close();
  const store = await AuditStore.open(path);
  await store.insert([{ ...syntheticRecord(99), instance: "old" }]);
  await store.close();
  const result = await verify(path);
  assert.equal(broken(result), []);
  assert.equal(result.chains.map((c) => [c.chain, c.records]), [["", 25], ["old", 26]]);
});

whole("a pruned log verifies from its checkpoint; a change after the prune is still found", async () => {
  const path = await writtenLog();
  const store = await AuditStore.open(path);
  const rows = await rowsOf(path);
  const cutoff = rows.map((r) => r.timestamp).sort((a, b) => a - b)[150];
  const pruned = await store.prune(cutoff);
  await store.close();
  assert.ok(pruned > 100, `pruned ${pruned}`);
  const result = await verify(path);
  assert.equal(broken(result), []);
  assert.ok(result.chains.every((c) => c.from === "checkpoint" && c.skipped === 0));
  assert.is(result.rows, 300 - pruned);
  const left = await rowsOf(path);
  const victim = left[left.length - 10];
  assert.equal(broken(await verify(await tampered(path, "UPDATE audit_logs SET prompt_tokens = prompt_tokens + 1 WHERE id = ?", victim.id))).map((b) => [b.id, b.kind]), [[victim.id, "altered"]]);
});

whole("two processes writing one file at once (as a daemon and mlxs chat do) keep the chain whole", async () => {
  const dir = tempDir();
  const path = join(dir, "audit.db");
  await (await AuditStore.open(path)).close();
  const writers = ["p", "q"].map((prefix) => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, "tests/fixtures/audit-writer-process.js"), path, "1500", "1500", prefix], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (c) => { out += c; });
    // a writer stuck behind the lock is killed, and fails the test, instead of holding the file
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("error", reject);
    child.on("close", (code) => { clearTimeout(timer); (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`writer exited ${code}`))); });
  }));
  const counts = await Promise.all(writers);
  assert.equal(counts, [{ written: 1500, dropped: 0 }, { written: 1500, dropped: 0 }]);
  const result = await verify(path);
  assert.equal(broken(result), []);
  assert.is(result.rows, 3000);
  assert.is(result.chains.reduce((n, c) => n + c.records, 0), 3000);
});

const tamper = suite("tampering");

tamper("one column of one row edited: altered, at that row; mlxs audit verify exits 1 and names it", async () => {
  const path = await writtenLog();
  const [row] = await rowsOf(path, "instance = 'a' AND id > 100");
  const copy = await tampered(path, "UPDATE audit_logs SET duration_ms = duration_ms + 0.001 WHERE id = ?", row.id);
  assert.equal(broken(await verify(copy)).map((b) => [b.chain, b.id, b.kind]), [["a", row.id, "altered"]]);
  const { code, stdout } = await runCli(["audit", "verify", "--db", copy]);
  assert.is(code, 1);
  assert.match(stdout, new RegExp(`chain "a": BROKEN at row ${row.id}: altered`));
  assert.match(stdout, /chain "b": whole/);
});

tamper("a row deleted: removed, found at the row after it", async () => {
  const path = await writtenLog();
  const rows = await rowsOf(path, "instance = 'b'");
  const copy = await tampered(path, "DELETE FROM audit_logs WHERE id = ?", rows[40].id);
  assert.equal(broken(await verify(copy)).map((b) => [b.id, b.kind]), [[rows[41].id, "removed"]]);
});

tamper("the newest rows deleted: truncated, found against the chain's kept head (a head rewritten with them is only caught by a seal)", async () => {
  const path = await writtenLog();
  const rows = await rowsOf(path, "instance = 'a'");
  const copy = await tampered(path, "DELETE FROM audit_logs WHERE instance = 'a' AND id > ?", rows[195].id);
  const [b] = broken(await verify(copy));
  assert.equal([b.chain, b.id, b.kind], ["a", rows[195].id, "truncated"]);
  assert.match(b.detail, /newest 4 row/);
});

tamper("two neighbouring rows swapped (every column but the id): reordered, at the first", async () => {
  const path = await writtenLog();
  const rows = await rowsOf(path, "instance = 'a'");
  const [x, y] = [rows[50], rows[51]];
  const columns = Object.keys(x).filter((c) => c !== "id");
  const copy = `${path}.swap.db`;
  copyFileSync(path, copy);
  const db = await rawDb(copy);
  const set = columns.map((c) => `${c} = ?`).join(", ");
  await db.run(`UPDATE audit_logs SET ${set} WHERE id = ?`, ...columns.map((c) => y[c]), x.id);
  await db.run(`UPDATE audit_logs SET ${set} WHERE id = ?`, ...columns.map((c) => x[c]), y.id);
  await db.close();
  assert.equal(broken(await verify(copy)).map((b) => [b.id, b.kind]), [[x.id, "reordered"]]);
});

tamper("a forged row put in an unused id, its link computed from the row before it: inserted, at the forged row", async () => {
  const path = await writtenLog();
  const all = await rowsOf(path);
  const gap = all.findIndex((r, i) => i > 0 && r.id > all[i - 1].id + 1);
  const before = all.slice(0, gap).reverse().find((r) => r.instance === "a");
  const forged = { ...before, id: all[gap - 1].id + 1, request_id: "forged", chain_seq: before.chain_seq + 1, chain_prev: before.chain_link };
  forged.chain_link = linkOf(forged.chain_prev, encodeRow(forged));
  const columns = Object.keys(forged);
  const copy = await tampered(path, `INSERT INTO audit_logs (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`, ...columns.map((c) => forged[c]));
  assert.equal(broken(await verify(copy)).map((b) => [b.id, b.kind]), [[forged.id, "inserted"]]);
  // one put in with no link at all
  const bare = await tampered(path, "INSERT INTO audit_logs (id, request_id, timestamp, endpoint, duration_ms, status, instance) VALUES (?, 'x', 1, '/v1/models', 1, 'success', 'b')", forged.id);
  assert.equal(broken(await verify(bare)).map((b) => [b.id, b.kind]), [[forged.id, "unchained"]]);
});

tamper("200 random tamperings of a verified log are each found; untouched copies give no false alarm", async () => {
  const path = await writtenLog(150);
  const rows = await rowsOf(path);
  const columns = Object.keys(rows[0]).filter((c) => c !== "id");
  const pick = (list) => list[Math.floor(Math.random() * list.length)];
  const changed = (c, v) => {
    if (c === "status") return v === "success" ? "error" : "success";
    if (c === "response_format") return v === "text" ? "json_object" : "text";
    if (c === "chain_prev" || c === "chain_link") return `${v.slice(0, 10)}${v[10] === "0" ? "1" : "0"}${v.slice(11)}`;
    if (v === null) return c === "instance" ? "a" : 7;
    return typeof v === "number" ? v + 1 : `${v}x`;
  };
  const kinds = {
    edit: () => { const r = pick(rows); const c = pick(columns); return [`UPDATE audit_logs SET ${c} = ? WHERE id = ?`, changed(c, r[c]), r.id]; },
    delete: () => ["DELETE FROM audit_logs WHERE id = ?", pick(rows).id],
    newest: () => { const chain = pick(["a", "b"]); return ["DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs WHERE instance = ? ORDER BY id DESC LIMIT ?)", chain, 1 + Math.floor(Math.random() * 5)]; },
    forge: () => { const r = pick(rows); return [`INSERT INTO audit_logs (${columns.join(", ")}) SELECT ${columns.map((c) => (c === "request_id" ? "'forged'" : c)).join(", ")} FROM audit_logs WHERE id = ?`, r.id]; },
    swap: () => {
      const a = pick(rows);
      const b = pick(rows.filter((r) => r.id !== a.id));
      const c = pick(columns.filter((c) => a[c] !== b[c]));
      return [`UPDATE audit_logs SET ${c} = CASE id WHEN ? THEN ? ELSE ? END WHERE id IN (?, ?)`, a.id, b[c], a[c], a.id, b.id];
    },
  };
  let found = 0;
  for (let i = 0; i < 200; i++) {
    const kind = pick(Object.keys(kinds));
    const [sql, ...params] = kinds[kind]();
    const result = await verify(await tampered(path, sql, ...params));
    if (broken(result).length > 0) found++;
    else assert.unreachable(`${kind} not found: ${sql} ${JSON.stringify(params)}`);
  }
  assert.is(found, 200);
  for (let i = 0; i < 20; i++) assert.equal(broken(await verify(await tampered(path, "SELECT 1"))), []);
});

whole.run();
tamper.run();
