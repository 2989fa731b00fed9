// Sealing the audit log (src/audit/seal.ts) and verifying it, on a database and offline on
// its exports: `audit seal --init` shows the verification key once and keeps the sealing key
// to its owner; keys evolve one way, so a key file taken later cannot make an ended epoch's
// seal again and a log rewritten with it is still found; two daemons of two instances on one
// file seal both their chains as epochs pass, and what they wrote last is sealed when they
// stop; every export format (and /v1/audit/export) verifies offline with the key, and an
// edited export does not.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sqlite3 from "sqlite3";
import { open } from "sqlite";
import { AuditStore } from "../dist/audit/store.js";
import { encodeRow, linkOf } from "../dist/audit/chain.js";
import { Sealer, initSealKey, parseVerificationKey, formatVerificationKey } from "../dist/audit/seal.js";
import { createHmac } from "node:crypto";
import { verifyStore } from "../dist/audit/verify.js";
import { AuditWriter } from "../dist/audit/writer.js";
import { setInstance } from "../dist/audit/track.js";
import { syntheticRecord } from "./fixtures/audit-records.js";
import { httpCall, jsonRequest, runCli, startServer, tempDir, testModel, waitFor } from "./helpers.js";

const cli = suite("audit seal and verify --key, from the command line");

cli("seal --init prints the verification key once, on stdout alone; the key file is its owner's; a second --init is refused; verify --key proves the log", async () => {
  const home = tempDir();
  const db = join(home, "audit.db");
  const env = { MLXS_AUDIT_DB: db, MLXS_HOME: home };
  const none = await runCli(["audit", "seal"], { env });
  assert.is(none.code, 1);
  assert.match(none.stderr, /no sealing key at .*audit\.db\.seal-key: mlxs audit seal --init creates one/);
  const init = await runCli(["audit", "seal", "--init"], { env });
  assert.is(init.code, 0, init.stderr);
  const key = init.stdout.trim();
  assert.match(key, /^mlxs-seal-v1-\d+-900000-[0-9a-f]{64}$/);
  assert.match(init.stderr, /keep it OFF this machine/);
  const keyFile = `${db}.seal-key`;
  assert.is(statSync(keyFile).mode & 0o777, 0o600);
  assert.not.match(readFileSync(keyFile, "utf8"), key.slice(-64), "the file holds no verification key");
  const again = await runCli(["audit", "seal", "--init"], { env });
  assert.is(again.code, 1);
  assert.match(again.stderr, /a sealing key already exists/);
  assert.is(again.stdout, "");
  // records through a real CLI door, which seals as it closes
  const embed = await runCli(["embed", "--model", await testModel(), "hello"], { env });
  assert.is(embed.code, 0, embed.stderr);
  const verified = await runCli(["audit", "verify", "--key", key, "--json"], { env });
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  const report = JSON.parse(verified.stdout);
  assert.is(report.whole, true);
  assert.is(report.seals.checked_with_key, true);
  const chain = report.chains.find((c) => c.records === 1);
  assert.ok(chain && chain.sealed.keyed && chain.sealed.unsealed === 0 && chain.sealed.through_seq === 1, JSON.stringify(report.chains));
  // the key from a file, as it is best kept off the command line
  const keyPath = join(tempDir(), "verification.key");
  writeFileSync(keyPath, `${key}\n`);
  const text = await runCli(["audit", "verify", "--key", keyPath], { env });
  assert.is(text.code, 0, text.stdout);
  assert.match(text.stdout, /sealed \(key checked\) through row 1 of it \(id 1\) on \d{4}-.*, 0 newer row\(s\) not sealed yet/);
  // another log's key made no seal here: a break, said so
  const other = formatVerificationKey({ ...parseVerificationKey(key), first: Buffer.alloc(32, 7) });
  const wrong = await runCli(["audit", "verify", "--key", other], { env });
  assert.is(wrong.code, 1);
  assert.match(wrong.stdout, /no seal in this audit log was made with key [0-9a-f]{16}: its seals were removed, or the key is not this log's/);
  const bad = await runCli(["audit", "verify", "--key", "mlxs-seal-v1-nonsense"], { env });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--key: not an mlxs verification key/);
  assert.is(bad.stderr.trim().split("\n").length, 1);
});

const keys = suite("keys that evolve one way");

keys("a key file taken after an epoch ended cannot seal that epoch again: a log rewritten and re-sealed with it is found, and so is an old seal re-made with it", async () => {
  const dir = tempDir();
  const db = join(dir, "audit.db");
  const keyPath = join(dir, "seal.key");
  const t0 = Date.now();
  const verification = initSealKey(keyPath, 60_000, t0);
  const first = JSON.parse(readFileSync(keyPath, "utf8")).key;
  // records of chain "a", sealed in epoch 1 (the key's first) by a writer that closes in it
  setInstance("a");
  const writer = AuditWriter.forLocation(db, { sealKey: keyPath });
  for (let i = 0; i < 20; i++) writer.record({ ...syntheticRecord(i), instance: "a" });
  await writer.close();
  const store = await AuditStore.open(db);
  try {
    // a minute on, the first seal of the next epoch is made with the old key, which is then evolved away
    const closing = new Sealer(keyPath, "a", () => t0 + 61_000).seal((await store.chainHeads()).get("a"));
    assert.is(closing.epoch, 1);
    await store.insertSeal(closing);
    const taken = JSON.parse(readFileSync(keyPath, "utf8"));
    assert.is(taken.epoch, 2);
    assert.is.not(taken.key, first);
    assert.equal((await verifyStore(store, [verification])).chains.map((c) => [c.chain, c.broken, c.sealed.through_seq]), [["a", null, 20]]);

    // the taker of the machine now: row 5 rewritten, every link after it recomputed, the head moved
    const raw = await open({ filename: db, driver: sqlite3.Database });
    const rows = await raw.all("SELECT * FROM audit_logs WHERE instance = 'a' ORDER BY chain_seq");
    let prev = rows[4].chain_prev;
    for (let k = 4; k < rows.length; k++) {
      const row = { ...rows[k], chain_prev: prev, ...(k === 4 ? { prompt_tokens: 0 } : {}) };
      row.chain_link = linkOf(prev, encodeRow(row));
      await raw.run("UPDATE audit_logs SET prompt_tokens = ?, chain_prev = ?, chain_link = ? WHERE id = ?", row.prompt_tokens, row.chain_prev, row.chain_link, row.id);
      prev = row.chain_link;
    }
    await raw.run("UPDATE audit_chain_heads SET link = ? WHERE instance = 'a'", prev);
    // ... and sealed with the key the file holds now: only epoch 2 and later can be sealed
    const resealed = new Sealer(keyPath, "a", () => t0 + 62_000).seal({ seq: 20, link: prev, id: rows[19].id });
    assert.is(resealed.epoch, 2);
    await store.insertSeal(resealed);
    const rewritten = await verifyStore(store, [verification]);
    assert.is(rewritten.whole, false);
    assert.equal(rewritten.chains.map((c) => [c.chain, c.broken?.kind, c.broken?.id]), [["a", "altered", rows[19].id]]);
    assert.match(rewritten.chains[0].broken.detail, /does not match its seal of/);

    // the epoch-1 seal re-made to match, with the only key the taker has: its tag fails
    const remade = createHmac("sha256", Buffer.from(taken.key, "hex"))
      .update(JSON.stringify(["mlxs audit seal v1", closing.key_id, 1, "a", 20, prev, closing.sealed_at])).digest("hex");
    await raw.run("UPDATE audit_seals SET link = ?, tag = ? WHERE epoch = 1", prev, remade);
    await raw.close();
    const forged = await verifyStore(store, [verification]);
    assert.is(forged.whole, false);
    assert.equal(forged.seals.forged.map((f) => f.seal.epoch), [1]);
    assert.equal(forged.chains.map((c) => [c.chain, c.broken?.kind]), [["a", "forged"]]);
    // without the key the seals are still matched against the rows, but their tags are not proven
    assert.is((await verifyStore(store, [])).seals.keyed, false);
  } finally {
    await store.close();
  }
});

const daemons = suite("two daemons sealing one file");

daemons("two daemons of two instances on one SQLite file seal both chains as epochs pass; stopped, their last rows are sealed; the log and every export verify with the key; an edited export does not", async () => {
  const home = tempDir();
  const db = join(home, "audit.db");
  const init = await runCli(["audit", "seal", "--init", "--seal-interval", "1s"], { env: { MLXS_AUDIT_DB: db, MLXS_HOME: home } });
  assert.is(init.code, 0, init.stderr);
  const key = init.stdout.trim();
  const model = await testModel();
  const a = await startServer(["--model", model, "--instance", "east", "--db", db], { home });
  const b = await startServer(["--model", model, "--instance", "west", "--db", db], { home });
  let sent = 0;
  try {
    const send = async (server) => {
      const res = await httpCall(`${server.url}/v1/embeddings`, jsonRequest({ model: "tiny", input: "sealed" }));
      assert.is(res.status, 200, res.text);
      sent++;
    };
    // requests over more than two epochs: each daemon's timer seals as each one ends
    const started = Date.now();
    await waitFor(async () => {
      await Promise.all([send(a), send(b)]);
      return Date.now() - started > 2_500;
    }, { timeoutMs: 60_000, intervalMs: 50, what: "requests over three epochs" });
    const sealedSoFar = async () => {
      const raw = await open({ filename: db, driver: sqlite3.Database, mode: sqlite3.OPEN_READONLY });
      try { return await raw.all("SELECT instance, count(*) AS n FROM audit_seals GROUP BY instance ORDER BY instance"); } finally { await raw.close(); }
    };
    await waitFor(async () => {
      try {
        const n = await sealedSoFar();
        return ["east", "west"].every((chain) => n.some((r) => r.instance === chain && r.n >= 2));
      } catch { return false; }
    }, { timeoutMs: 30_000, intervalMs: 200, what: "two seals of each chain", describe: async () => JSON.stringify(await sealedSoFar().catch((e) => e.message)) });
  } finally {
    assert.is(await a.stop(), 0, a.stderr());
    assert.is(await b.stop(), 0, b.stderr());
  }
  const env = { MLXS_AUDIT_DB: db, MLXS_HOME: home };
  const verified = await runCli(["audit", "verify", "--key", key, "--json"], { env });
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  const report = JSON.parse(verified.stdout);
  const chains = Object.fromEntries(report.chains.map((c) => [c.chain, c]));
  assert.is(chains.east.records + chains.west.records, sent);
  for (const name of ["east", "west"]) assert.ok(chains[name].sealed.keyed && chains[name].sealed.unsealed === 0, JSON.stringify(chains[name]));

  // offline: every format, from the command line and from the daemon's route
  const dir = tempDir();
  for (const format of ["csv", "jsonl", "json"]) {
    const file = join(dir, `log.${format}`);
    const exported = await runCli(["audit", "export", "--format", format, "-o", file], { env });
    assert.is(exported.code, 0, exported.stderr);
    const offline = await runCli(["audit", "verify", "--file", file, "--key", key, "--json"], { env: { MLXS_HOME: tempDir() } });
    assert.is(offline.code, 0, `${format}: ${offline.stdout}${offline.stderr}`);
    const fileReport = JSON.parse(offline.stdout);
    assert.is(fileReport.source, "file");
    assert.is(fileReport.rows, sent);
    assert.ok(fileReport.chains.every((c) => c.from === "genesis" && c.sealed.keyed && c.sealed.unsealed === 0), JSON.stringify(fileReport.chains));
  }
  const server = await startServer(["--model", model, "--db", db], { home });
  let viaHttp;
  try {
    viaHttp = await httpCall(`${server.url}/v1/audit/export?format=jsonl&order=asc`);
  } finally {
    await server.stop();
  }
  assert.is(viaHttp.status, 200);
  const httpFile = join(dir, "http.jsonl");
  writeFileSync(httpFile, viaHttp.text);
  const fromHttp = await runCli(["audit", "verify", "--file", httpFile, "--key", key]);
  assert.is(fromHttp.code, 0, fromHttp.stdout + fromHttp.stderr);
  assert.match(fromHttp.stdout, /export whole: 2 chain\(s\)/);

  // an export edited after it was made: one number in one line
  const lines = readFileSync(join(dir, "log.jsonl"), "utf8").trim().split("\n");
  const victim = JSON.parse(lines[3]);
  victim.prompt_tokens = (victim.prompt_tokens ?? 0) + 1;
  lines[3] = JSON.stringify(victim);
  const edited = join(dir, "edited.jsonl");
  writeFileSync(edited, `${lines.join("\n")}\n`);
  const caught = await runCli(["audit", "verify", "--file", edited, "--key", key]);
  assert.is(caught.code, 1, caught.stdout);
  assert.match(caught.stdout, new RegExp(`BROKEN at row ${victim.id}: altered`));
  // a row taken out of a CSV export
  const csv = readFileSync(join(dir, "log.csv"), "utf8").split("\r\n");
  const cut = join(dir, "cut.csv");
  writeFileSync(cut, [...csv.slice(0, 3), ...csv.slice(4)].join("\r\n"));
  const removed = await runCli(["audit", "verify", "--file", cut, "--key", key]);
  assert.is(removed.code, 1, removed.stdout);
  assert.match(removed.stdout, /BROKEN at row \d+: (removed|inserted)/);
  // not an export at all: one line, exit 1
  const junk = join(dir, "junk.jsonl");
  writeFileSync(junk, "{not json\n");
  const unreadable = await runCli(["audit", "verify", "--file", junk]);
  assert.is(unreadable.code, 1);
  assert.match(unreadable.stderr, /junk\.jsonl: line 1 is not JSON/);
});

cli.run();
keys.run();
daemons.run();
