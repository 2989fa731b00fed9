// verify's fast page readers (linkPages) on SQLite and PostgreSQL say of every row exactly
// what the old reader (chainPages, then linkRowOf) says. On SQLite, which renders each page
// as one string, a row whose values SQLite would not render as the chain's encoding does (a
// duration stored as text, an integer column holding a real, a real one ulp off, a blob that
// reads as JSON, text that is not UTF-8, links of the wrong type or holding the separators)
// is read the old way; on PostgreSQL, a row whose bigints JavaScript reads rounded, whose
// links are odd, or a column retyped. Each tampering is done by SQL on a copy of a log
// written by the real store, some with the links remade over what a careless reader would
// render; both readers are compared row by row, across page edges, and verify must report
// the break the old reader found.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import pg from "pg";
import { AuditStore } from "../dist/audit/store.js";
import { openAuditStore } from "../dist/audit/open-store.js";
import { startPostgres } from "./fixtures/postgres.js";
import { encodeRow, linkOf, linkRowOf } from "../dist/audit/chain.js";
import { verifyStore } from "../dist/audit/verify.js";
import { syntheticRecord } from "./fixtures/audit-records.js";
import { tempDir } from "./helpers.js";

const rawDb = (path) => open({ filename: path, driver: sqlite3.Database });
const test = suite("verify's fast reader on SQLite");

/** 400 records in chains "a" and "b", fractional durations, text with every kind of character. */
function oddRecords({ maxTokens = 2 ** 53 - 1 } = {}) {
  const odd = ["quote \" and \\ back", "tab\tnew\nline\r", "\u0001\u0002\u001f\u007f", "\u2028\u2029", "é ü 中文 😀", "null", "", "[1,2]"];
  const records = [];
  for (let i = 0; i < 400; i++) {
    records.push({
      ...syntheticRecord(i, { now: Date.now() - 86_400_000 }),
      duration_ms: i % 7 === 0 ? 250 : 100 + Math.random() * 1000,
      ttft_ms: i % 5 === 0 ? null : Math.random() * 50,
      load_ms: i % 3 === 0 ? Math.random() * 9000 : null,
      error_message: i % 4 === 0 ? odd[i % odd.length] : null,
      client: i % 9 === 0 ? odd[(i + 3) % odd.length] : null,
      prompt_tokens: i === 17 ? maxTokens : 10 + i,
      instance: i % 3 === 0 ? "b" : "a",
    });
  }
  return records;
}

async function log(dir) {
  const path = join(dir, "audit.db");
  const store = await AuditStore.open(path);
  const records = oddRecords();
  for (let i = 0; i < records.length; i += 50) assert.is(await store.insert(records.slice(i, i + 50)), 50);
  await store.close();
  return path;
}

/**
 * Both readers over the whole file, with pages of `size` rows: equal row by row. Returns the
 * rows, and how many pages the fast reader read again the old way.
 */
async function compareReaders(path, size, opened) {
  const store = opened ?? (await AuditStore.open(path, { create: false }));
  try {
    // (the fast reader reads a page with get(), the old way with all())
    const all = store.db?.all.bind(store.db);
    let oldReads = 0;
    if (all) store.db.all = (...args) => { oldReads++; return all(...args); };
    const fast = [];
    for await (const page of store.linkPages(size)) fast.push(...page);
    if (all) store.db.all = all;
    const old = [];
    for await (const page of store.chainPages(size)) old.push(...page.map(linkRowOf));
    assert.is(fast.length, old.length);
    for (let i = 0; i < old.length; i++) assert.equal(fast[i], old[i], `row ${old[i].id}`);
    return { rows: old, oldReads };
  } finally {
    if (!opened) await store.close();
  }
}

async function verify(path) {
  const store = await AuditStore.open(path, { create: false });
  try {
    return await verifyStore(store, []);
  } finally {
    await store.close();
  }
}

/**
 * Remakes the links of a chain from row `id` on, as anyone with the file could (the kept
 * head moved to match): the row's own over `forged(row)` where given (a careless reader's
 * rendering of it), else over its encoding as the old reader reads it.
 */
async function relink(db, id, forged) {
  const first = await db.get("SELECT * FROM audit_logs WHERE id = ?", id);
  const chain = first.instance ?? "";
  const rows = await db.all("SELECT * FROM audit_logs WHERE coalesce(instance, '') = ? AND id >= ? ORDER BY id", chain, id);
  let prev = first.chain_prev;
  for (const [i, row] of rows.entries()) {
    const link = linkOf(prev, i === 0 && forged ? forged(row) : encodeRow(row));
    await db.run("UPDATE audit_logs SET chain_prev = ?, chain_link = ? WHERE id = ?", prev, link, row.id);
    prev = link;
  }
  await db.run("UPDATE audit_chain_heads SET link = ? WHERE instance = ?", prev, chain);
}

/** The encoding of `row` with one column's value written as `text` (as SQLite's JSON would write it). */
const renderedAs = (row, column, text) => encodeRow({ ...row, [column]: "\u0000mark" }).replace(JSON.stringify("\u0000mark"), text);

test("every tampering reads the same both ways, and verify finds it where the old reader did", async () => {
  const dir = tempDir();
  const path = await log(dir);
  const pristine = await compareReaders(path, 7);
  assert.ok(pristine.rows.every((r) => r.holds), "a row of the untouched log does not hold");
  // only the page with a count of 2^53 - 1 tokens (16 digits) is read the old way
  assert.is(pristine.oldReads, 1);
  assert.ok((await verify(path)).whole);
  const db0 = await rawDb(path);
  // rows in the middle of chain "a", with a fractional duration, a status code and a model
  const rows = (await db0.all("SELECT * FROM audit_logs WHERE instance = 'a' AND duration_ms <> 250 AND ttft_ms IS NOT NULL ORDER BY id")).slice(10);
  await db0.close();
  const at = (i) => rows[i * 3];
  const cases = [
    // [what, row, statements(db, row), the break verify must report: null for none]
    ["a duration stored as text", at(0), (db, r) => db.run("UPDATE audit_logs SET duration_ms = 'slow' WHERE id = ?", r.id), "altered"],
    ["a duration stored as text, the links remade", at(1), async (db, r) => { await db.run("UPDATE audit_logs SET duration_ms = ' 12.5ms' WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["an integer column holding a real", at(2), (db, r) => db.run("UPDATE audit_logs SET prompt_tokens = prompt_tokens + 0.5 WHERE id = ?", r.id), "altered"],
    ["an integer column holding a real, the links remade", at(3), async (db, r) => { await db.run("UPDATE audit_logs SET prompt_tokens = 10.25 WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["a status code a hair past 200, its link remade over SQLite's rendering (200.0)", at(4), async (db, r) => {
      await db.run("UPDATE audit_logs SET status_code = 200.00000000000003 WHERE id = ?", r.id);
      await relink(db, r.id, (row) => renderedAs(row, "status_code", "200.0"));
    }, "altered"],
    ["a duration one ulp off, its link remade over the old value", at(5), async (db, r) => {
      const off = new Float64Array([r.duration_ms]);
      new BigInt64Array(off.buffer)[0] += 1n;
      await db.run("UPDATE audit_logs SET duration_ms = ? WHERE id = ?", off[0], r.id);
      await relink(db, r.id, (row) => encodeRow({ ...row, duration_ms: r.duration_ms }));
    }, "altered"],
    ["a duration that is no count of millionths, the links remade", at(6), async (db, r) => { await db.run("UPDATE audit_logs SET duration_ms = 0.1 + 0.2 WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["an integer past 2^53, the links remade (read rounded, as before)", at(7), async (db, r) => { await db.run("UPDATE audit_logs SET total_tokens = 9007199254740993 WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["the model as a blob that json_array() renders as the same string", at(8), (db, r) => db.run("UPDATE audit_logs SET model = jsonb(json_quote(model)) WHERE id = ?", r.id), "altered"],
    ["the model as a plain blob, the links remade", at(9), async (db, r) => { await db.run("UPDATE audit_logs SET model = CAST(model AS BLOB) WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["the model as text that is not UTF-8", at(10), (db, r) => db.run("UPDATE audit_logs SET model = CAST(x'616263ff' AS TEXT) WHERE id = ?", r.id), "altered"],
    ["the model as text that is not UTF-8, the links remade", at(11), async (db, r) => { await db.run("UPDATE audit_logs SET model = CAST(x'61ff62c3' AS TEXT) WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["a status code as text, the links remade", at(12), async (db, r) => { await db.run("UPDATE audit_logs SET status_code = 'OK' WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["a whole-number duration and no ttft, the links remade", at(13), async (db, r) => { await db.run("UPDATE audit_logs SET duration_ms = 300, ttft_ms = NULL WHERE id = ?", r.id); await relink(db, r.id); }, null],
    ["the link as a blob", at(14), (db, r) => db.run("UPDATE audit_logs SET chain_link = CAST(chain_link AS BLOB) WHERE id = ?", r.id), "unchained"],
    ["the link before in capitals", at(15), (db, r) => db.run("UPDATE audit_logs SET chain_prev = upper(chain_prev) WHERE id = ?", r.id), "altered"],
    ["the link before ending in the row separator", at(16), (db, r) => db.run("UPDATE audit_logs SET chain_prev = substr(chain_prev, 1, 63) || char(2) WHERE id = ?", r.id), "altered"],
    ["the link ending in the field separator", at(17), (db, r) => db.run("UPDATE audit_logs SET chain_link = substr(chain_link, 1, 63) || char(1) WHERE id = ?", r.id), "altered"],
  ];
  const copy = join(dir, "copy.db");
  for (const [what, row, tamper, kind] of cases) {
    assert.ok(row, `no row for: ${what}`);
    copyFileSync(path, copy);
    const db = await rawDb(copy);
    await tamper(db, row);
    await db.close();
    for (const size of [5, 64, 5000]) await compareReaders(copy, size);
    const result = await verify(copy);
    const broken = result.chains.filter((c) => c.broken).map((c) => `${c.chain}: ${c.broken.kind} at ${c.broken.id}`);
    assert.equal(broken, kind ? [`a: ${kind} at ${row.id}`] : [], what);
  }
});

test("every value the store writes goes the fast way, and the fast way agrees with the old on 20 000 random durations", async () => {
  const dir = tempDir();
  const path = join(dir, "audit.db");
  const store = await AuditStore.open(path);
  const records = [];
  for (let i = 0; i < 20_000; i++) {
    const scale = 10 ** Math.floor(Math.random() * 12 - 3);
    records.push({ ...syntheticRecord(i), duration_ms: Math.random() * scale, ttft_ms: i % 2 ? Math.random() : -Math.random() * scale, load_ms: i % 11 ? null : Math.random() * 1e9, instance: "r" });
  }
  for (let i = 0; i < records.length; i += 1000) await store.insert(records.slice(i, i + 1000));
  await store.close();
  const { rows, oldReads } = await compareReaders(path, 5000);
  assert.ok(rows.every((r) => r.holds));
  assert.is(oldReads, 0);
  assert.ok((await verify(path)).whole);
});

test.run();

const postgres = suite("verify's fast reader on PostgreSQL");
let cluster;
postgres.before(async () => {
  cluster = await startPostgres();
  process.on("exit", () => cluster.destroySync());
});
postgres.after(() => cluster.destroySync());

postgres("every tampering reads the same both ways, and verify finds it where the old reader did", async () => {
  const admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
  await admin.query("CREATE DATABASE kinds");
  await admin.end();
  const url = cluster.url.replace(/\/postgres$/, "/kinds");
  const store = await openAuditStore(url);
  // (PostgreSQL's token counts are 32-bit)
  const records = oddRecords({ maxTokens: 2 ** 31 - 1 });
  for (let i = 0; i < records.length; i += 50) assert.is(await store.insert(records.slice(i, i + 50)), 50);
  // rows as the store reads them (bigints as numbers)
  const client = new pg.Client({ connectionString: url, types: { getTypeParser: (oid, format) => (oid === 20 ? Number : pg.types.getTypeParser(oid, format)) } });
  await client.connect();
  try {
    const pristine = await compareReaders(null, 7, store);
    assert.ok(pristine.rows.every((r) => r.holds));
    assert.ok((await verifyStore(store, [])).whole);
    await client.query("CREATE TABLE keep_logs AS SELECT * FROM audit_logs; CREATE TABLE keep_heads AS SELECT * FROM audit_chain_heads");
    const rows = (await client.query("SELECT * FROM audit_logs WHERE instance = 'a' ORDER BY chain_seq")).rows.slice(10);
    // (chain "a" from place `seq` on)
    const relink = async (seq, forged) => {
      const chain = "a";
      const tail = (await client.query("SELECT * FROM audit_logs WHERE instance = $1 AND chain_seq >= $2 ORDER BY chain_seq", [chain, seq])).rows;
      let prev = tail[0].chain_prev;
      for (const [i, row] of tail.entries()) {
        const link = linkOf(prev, i === 0 && forged ? forged(row) : encodeRow(row));
        await client.query("UPDATE audit_logs SET chain_prev = $1, chain_link = $2 WHERE instance = $3 AND chain_seq = $4", [prev, link, chain, row.chain_seq]);
        prev = link;
      }
      await client.query("UPDATE audit_chain_heads SET link = $1 WHERE instance = $2", [prev, chain]);
    };
    const at = (i) => rows[i * 3];
    const cases = [
      ["a duration edited", at(0), (r) => client.query("UPDATE audit_logs SET duration_ms = duration_ms + 1 WHERE id = $1", [r.id]), "altered"],
      ["a duration that is no count of millionths, the links remade", at(1), async (r) => { await client.query("UPDATE audit_logs SET duration_ms = 0.1::float8 + 0.2::float8 WHERE id = $1", [r.id]); await relink(r.chain_seq); }, null],
      ["a duration one ulp off, its link remade over the old value", at(2), async (r) => {
        const off = new Float64Array([r.duration_ms]);
        new BigInt64Array(off.buffer)[0] += 1n;
        await client.query("UPDATE audit_logs SET duration_ms = $1 WHERE id = $2", [off[0], r.id]);
        await relink(r.chain_seq, (row) => encodeRow({ ...row, duration_ms: r.duration_ms }));
      }, "altered"],
      ["a duration of NaN, the links remade", at(3), async (r) => { await client.query("UPDATE audit_logs SET duration_ms = 'NaN' WHERE id = $1", [r.id]); await relink(r.chain_seq); }, null],
      ["an id past 2^53, the links remade (read rounded, as before)", at(4), async (r) => { await client.query("UPDATE audit_logs SET id = 9007199254740993 WHERE id = $1", [r.id]); await relink(r.chain_seq); }, null],
      ["the link before in capitals", at(5), (r) => client.query("UPDATE audit_logs SET chain_prev = upper(chain_prev) WHERE id = $1", [r.id]), "altered"],
      ["the link ending in the field separator", at(6), (r) => client.query("UPDATE audit_logs SET chain_link = substr(chain_link, 1, 63) || chr(1) WHERE id = $1", [r.id]), "altered"],
      ["no link", at(7), (r) => client.query("UPDATE audit_logs SET chain_link = NULL WHERE id = $1", [r.id]), "unchained"],
      ["the model column retyped to bytea", at(8), () => client.query("ALTER TABLE audit_logs ALTER COLUMN model TYPE bytea USING convert_to(model, 'UTF8')"), "altered"],
      ["the model column retyped to jsonb (read as the same strings)", at(8), () => client.query("ALTER TABLE audit_logs ALTER COLUMN model TYPE jsonb USING to_jsonb(model)"), null],
    ];
    for (const [what, row, tamper, kind] of cases) {
      await tamper(row);
      for (const size of [5, 5000]) await compareReaders(null, size, store);
      const result = await verifyStore(store, []);
      const broken = result.chains.filter((c) => c.broken).map((c) => `${c.chain}: ${c.broken.kind} at ${c.broken.id}`);
      // a column retyped breaks the chain at its first row
      const firsts = (await client.query("SELECT instance, id FROM audit_logs WHERE chain_seq = 1 ORDER BY instance")).rows;
      const expected = kind === null ? [] : what.includes("bytea") ? firsts.map((f) => `${f.instance}: altered at ${f.id}`) : [`a: ${kind} at ${row.id}`];
      assert.equal(broken, expected, what);
      if (what.includes("bytea")) await client.query("ALTER TABLE audit_logs ALTER COLUMN model TYPE text USING convert_from(model, 'UTF8')");
      if (what.includes("jsonb")) await client.query("ALTER TABLE audit_logs ALTER COLUMN model TYPE text USING model #>> '{}'");
      await client.query(`BEGIN; DELETE FROM audit_logs; INSERT INTO audit_logs SELECT * FROM keep_logs;
        DELETE FROM audit_chain_heads; INSERT INTO audit_chain_heads SELECT * FROM keep_heads; COMMIT`);
    }
    assert.ok((await verifyStore(store, [])).whole);
  } finally {
    await client.end();
    await store.close();
  }
});

postgres.run();
