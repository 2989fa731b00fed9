// Readers that stop reading, vanish, or never read at all: a streamed response (an export,
// the live audit stream) notices and ends its handler, and SIGTERM always ends the daemon
// within --drain-timeout plus a small margin, with the audit log written.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { connect } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AuditStore } from "../dist/audit/store.js";
import { syntheticRecords } from "./fixtures/audit-records.js";
import { auditRows, httpCall, startServer, tempDir, testModel, waitFor } from "./helpers.js";

const DRAIN_S = 2;
// past the drain timeout: two one-second graces in the server, the last flush, process exit,
// on a loaded machine
const MARGIN_MS = 10_000;

async function seededHome(count) {
  const home = tempDir();
  const store = await AuditStore.open(join(home, "audit.db"));
  for (let i = 0; i < count; i += 50_000) await store.insert(syntheticRecords(Math.min(50_000, count - i), { prefix: `s${i}`, spacingMs: 1 }));
  await store.close();
  return home;
}

/** A GET whose reader reads `readBytes` and then stops reading (with `readBytes` 0, never reads). */
function pausingReader(url, path, readBytes) {
  const { port } = new URL(url);
  const socket = connect(Number(port), "127.0.0.1");
  let received = 0;
  let pausedAt;
  const pause = () => { socket.pause(); pausedAt ??= Date.now(); };
  socket.on("error", () => undefined);
  if (readBytes === 0) pause();
  socket.on("data", (chunk) => {
    received += chunk.length;
    if (received >= readBytes) pause();
  });
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: the-reader\r\n\r\n`);
  return { socket, received: () => received, pausedAt: () => pausedAt };
}

/** The kernel's entry for a TCP connection from local port `from` to remote port `to`. */
function tcpEntry(from, to) {
  const hex = (port) => `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1]?.endsWith(hex(from)) && fields[2]?.endsWith(hex(to))) return { state: fields[3], unread: parseInt(fields[4].split(":")[1], 16) };
  }
  return undefined;
}

/** How far the server got before it had to wait for the reader: what the reader's kernel holds unread. */
const unreadBytes = (socket) => tcpEntry(socket.localPort, socket.remotePort)?.unread ?? 0;

/**
 * The server closed its end. Neither a paused socket (its 'close' waits for the unread data
 * to be read) nor its kernel (the FIN waits behind the data) can tell, so the server's side
 * of the connection is looked at: no longer ESTABLISHED (01), or gone.
 */
const closedByServer = (socket) => tcpEntry(socket.remotePort, socket.localPort)?.state !== "01";

/** Resolves once the server can send no more: the unread bytes stop growing. */
async function serverBlocked(socket) {
  let last = -1;
  await waitFor(async () => {
    const now = unreadBytes(socket);
    const still = now > 0 && now === last;
    last = now;
    return still;
  }, { intervalMs: 500, timeoutMs: 60_000, what: "the server to fill the reader's socket" });
}

async function stopTimed(server) {
  const started = Date.now();
  const code = await server.stop("SIGTERM");
  return { code, ms: Date.now() - started };
}

const readers = suite("slow, stalled and vanished readers");

readers("a 300 000-record export whose reader pauses, then vanishes; then SIGTERM: exit 0 within the drain timeout", async () => {
  const server = await startServer(["--model", await testModel(), "--drain-timeout", String(DRAIN_S), "--retention-days", "0"], { home: await seededHome(300_000) });
  const reader = pausingReader(server.url, "/v1/audit/export?format=jsonl", 1_000_000);
  await waitFor(() => reader.received() >= 1_000_000, { what: "the first megabyte of the export" });
  await serverBlocked(reader.socket);
  reader.socket.destroy();
  const { code, ms } = await stopTimed(server);
  assert.is(code, 0, server.stderr());
  assert.ok(ms < DRAIN_S * 1000 + MARGIN_MS, `stopped after ${ms} ms`);
  const record = (await auditRows(server.db)).find((r) => r.request_id === "the-reader");
  assert.equal([record.endpoint, record.status, record.status_code], ["/v1/audit/export", "cancelled", 499]);
});

readers("an export whose reader stops reading and stays: SIGTERM ends it at the drain timeout", async () => {
  const server = await startServer(["--model", await testModel(), "--drain-timeout", String(DRAIN_S), "--retention-days", "0"], { home: await seededHome(300_000) });
  const reader = pausingReader(server.url, "/v1/audit/export?format=csv", 200_000);
  await waitFor(() => reader.received() >= 200_000, { what: "the start of the export" });
  await serverBlocked(reader.socket);
  const { code, ms } = await stopTimed(server);
  assert.is(code, 0, server.stderr());
  assert.ok(ms >= DRAIN_S * 1000 - 100 && ms < DRAIN_S * 1000 + MARGIN_MS, `stopped after ${ms} ms`);
  assert.ok(closedByServer(reader.socket), "the connection was closed");
  reader.socket.destroy();
  assert.ok((await auditRows(server.db)).some((r) => r.request_id === "the-reader"), "the export has its record");
});

readers("a reader that stops reading is cut off after --stall-timeout; the daemon goes on", async () => {
  const server = await startServer(["--model", await testModel(), "--stall-timeout", "1", "--retention-days", "0"], { home: await seededHome(300_000) });
  try {
    const reader = pausingReader(server.url, "/v1/audit/export?format=jsonl", 100_000);
    await waitFor(() => reader.received() >= 100_000, { what: "the start of the export" });
    await waitFor(() => closedByServer(reader.socket), { what: "the stalled export to be ended" });
    // the server's last wait for the reader began about when it paused (the moment this
    // test noticed the pause could be later, on a loaded machine)
    assert.ok(Date.now() - reader.pausedAt() >= 900, "not before the stall timeout");
    reader.socket.destroy();
    assert.is((await httpCall(`${server.url}/health`)).status, 200);
    const rows = await waitFor(async () => (await auditRows(server.db)).find((r) => r.request_id === "the-reader"), { what: "the export's record" });
    assert.is(rows.status, "cancelled");
  } finally {
    assert.is(await server.stop(), 0);
  }
});

readers("a live audit stream whose reader never reads: SIGTERM still ends the daemon within the drain timeout", async () => {
  const server = await startServer(["--model", await testModel(), "--drain-timeout", String(DRAIN_S), "--retention-days", "0"]);
  const reader = pausingReader(server.url, "/v1/audit/stream", 0);
  // the stream has begun (its first poll found the database), then records pour in
  const store = await waitFor(() => AuditStore.open(server.db, { create: false }), { what: "the audit database" });
  for (let i = 0; i < 4; i++) await store.insert(syntheticRecords(25_000, { prefix: `live${i}`, spacingMs: 0 }));
  await store.close();
  await serverBlocked(reader.socket);
  const { code, ms } = await stopTimed(server);
  assert.is(code, 0, server.stderr());
  assert.ok(ms < DRAIN_S * 1000 + MARGIN_MS, `stopped after ${ms} ms`);
  reader.socket.destroy();
  assert.ok((await auditRows(server.db)).some((r) => r.request_id === "the-reader"), "the stream has its record");
});

readers.run();
