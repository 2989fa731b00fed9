// Random tampering with a sealed audit log, on SQLite and on PostgreSQL, as anyone who can
// write the database could: one column of one row edited, a row deleted, the newest rows cut
// off (the kept head moved back to match), two rows swapped, a forged row put in, a row
// rewritten with every link after it recomputed (no key of an ended epoch: only the seal
// shows it). 1 000 tamperings on each store (TAMPER_TRIES=N for another number), each found
// by verify --key; untouched copies and pruned logs give no false alarm.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import pg from "pg";
import { AuditStore } from "../dist/audit/store.js";
import { openAuditStore } from "../dist/audit/open-store.js";
import { verifyStore } from "../dist/audit/verify.js";
import { sealedLog, tampering, KINDS } from "./fixtures/tampering.js";
import { startPostgres } from "./fixtures/postgres.js";
import { tempDir } from "./helpers.js";

const TRIES = Number(process.env.TAMPER_TRIES || 1000);
const brokenOf = (result) => [...result.chains.filter((c) => c.broken).map((c) => `${c.chain}: ${c.broken.kind} at ${c.broken.id}`), ...result.seals.keysWithoutSeals];

/** Runs `tries` random tamperings through `store` (apply, verify, undo): each must be found. */
async function tamperLoop(tries, { rows, freeId, apply, verify, undo }) {
  const found = Object.fromEntries(KINDS.map((k) => [k, 0]));
  for (let i = 0; i < tries; i++) {
    const t = tampering(rows, freeId, KINDS[i % KINDS.length]);
    await apply(t.statements);
    const result = await verify();
    await undo();
    assert.ok(!result.whole && (brokenOf(result).length > 0 || result.seals.forged.length > 0), `${t.kind} (${t.detail}) was not found`);
    found[t.kind]++;
  }
  return found;
}

const sqlite = suite("tampering with a sealed log on SQLite");

sqlite(`${TRIES} random tamperings are each found by verify --key; untouched and pruned copies verify whole`, async () => {
  const dir = tempDir();
  const path = join(dir, "audit.db");
  const raw = (file) => open({ filename: file, driver: sqlite3.Database });
  const key = await sealedLog(path, join(dir, "seal.key"), {
    burn: async () => { const db = await raw(path); await db.run("UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'audit_logs'"); await db.close(); },
  });
  const verify = async (file) => {
    const store = await AuditStore.open(file, { create: false });
    try { return await verifyStore(store, [key]); } finally { await store.close(); }
  };
  const pristine = await verify(path);
  assert.equal(brokenOf(pristine), []);
  assert.ok(pristine.chains.every((c) => c.sealed.keyed && c.sealed.unsealed === 0), JSON.stringify(pristine.chains));
  const db = await raw(path);
  const rows = await db.all("SELECT * FROM audit_logs ORDER BY instance, chain_seq");
  await db.close();
  // the gaps between runs: ids no row has, inside the chain's id range
  const ids = new Set(rows.map((r) => r.id));
  const gaps = [];
  for (let id = 1; id < Math.max(...ids); id++) if (!ids.has(id)) gaps.push(id);
  const copy = join(dir, "copy.db");
  const found = await tamperLoop(TRIES, {
    rows,
    freeId: () => gaps[Math.floor(Math.random() * gaps.length)],
    apply: async (statements) => {
      copyFileSync(path, copy);
      const target = await raw(copy);
      for (const [sql, params] of statements) await target.run(sql, ...params);
      await target.close();
    },
    verify: () => verify(copy),
    undo: async () => undefined,
  });
  assert.ok(KINDS.every((k) => found[k] > 0), JSON.stringify(found));
  console.log(`  found ${JSON.stringify(found)}`);
  // no false alarm: untouched copies, and a copy pruned of its older half
  for (let i = 0; i < 50; i++) {
    copyFileSync(path, copy);
    assert.equal(brokenOf(await verify(copy)), []);
  }
  copyFileSync(path, copy);
  const store = await AuditStore.open(copy);
  const cutoff = rows.map((r) => r.timestamp).sort((a, b) => a - b)[Math.floor(rows.length / 2)];
  assert.ok((await store.prune(cutoff)) > 0);
  const pruned = await verifyStore(store, [key]);
  await store.close();
  assert.equal(brokenOf(pruned), []);
  assert.ok(pruned.chains.every((c) => c.from === "checkpoint" && c.sealed.unsealed === 0), JSON.stringify(pruned.chains));
});

const postgres = suite("tampering with a sealed log on PostgreSQL");
let cluster;

postgres.before(async () => {
  cluster = await startPostgres();
  process.on("exit", () => cluster.destroySync());
});

postgres(`${TRIES} random tamperings are each found by verify --key; the untouched and a pruned log verify whole`, async () => {
  const admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
  await admin.query("CREATE DATABASE tamper");
  await admin.end();
  const url = cluster.url.replace(/\/postgres$/, "/tamper");
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const dir = tempDir();
  try {
    const key = await sealedLog(url, join(dir, "seal.key"), {
      burn: () => client.query("SELECT setval('audit_logs_id_seq', nextval('audit_logs_id_seq') + 5)"),
    });
    const store = await openAuditStore(url, { create: false });
    const verify = () => verifyStore(store, [key]);
    try {
      const pristine = await verify();
      assert.equal(brokenOf(pristine), []);
      assert.ok(pristine.chains.every((c) => c.sealed.keyed && c.sealed.unsealed === 0), JSON.stringify(pristine.chains));
      const rows = (await client.query("SELECT * FROM audit_logs ORDER BY instance, chain_seq")).rows.map((r) => ({ ...r, id: Number(r.id), timestamp: Number(r.timestamp), chain_seq: Number(r.chain_seq) }));
      // the pristine log, put back after each tampering
      await client.query("CREATE TABLE keep_logs AS SELECT * FROM audit_logs; CREATE TABLE keep_heads AS SELECT * FROM audit_chain_heads");
      let spare = 1_000_000;
      const numbered = (sql) => { let n = 0; return sql.replace(/\?/g, () => `$${++n}`); };
      const found = await tamperLoop(TRIES, {
        rows,
        freeId: () => ++spare,
        apply: async (statements) => { for (const [sql, params] of statements) await client.query(numbered(sql), params); },
        verify,
        undo: () => client.query(`BEGIN; DELETE FROM audit_logs; INSERT INTO audit_logs SELECT * FROM keep_logs;
          DELETE FROM audit_chain_heads; INSERT INTO audit_chain_heads SELECT * FROM keep_heads; COMMIT`),
      });
      assert.ok(KINDS.every((k) => found[k] > 0), JSON.stringify(found));
  console.log(`  found ${JSON.stringify(found)}`);
      assert.equal(brokenOf(await verify()), []);
      const cutoff = rows.map((r) => r.timestamp).sort((a, b) => a - b)[Math.floor(rows.length / 2)];
      assert.ok((await store.prune(cutoff)) > 0);
      const pruned = await verify();
      assert.equal(brokenOf(pruned), []);
      assert.ok(pruned.chains.every((c) => c.from === "checkpoint" && c.sealed.unsealed === 0), JSON.stringify(pruned.chains));
    } finally {
      await store.close();
    }
  } finally {
    await client.end();
  }
});

sqlite.run();
postgres.run();
