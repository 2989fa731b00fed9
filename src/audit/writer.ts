/**
 * The background audit writer. `record()` only appends to a bounded buffer and returns;
 * a timer (or `batchSize` waiting records) flushes the buffer into SQLite, one
 * transaction per flush.
 * When the database is locked by another process for longer than the busy timeout, or
 * cannot be written for a while (read-only, immutable, a full disk), the records wait in
 * the buffer for the next flush. When the buffer overflows or the database fails otherwise,
 * records are dropped and counted, the program goes on, and stderr says so; the next
 * flush tries the database again.
 */
import { describePgError, describeStoreError } from "./errors.js";
import { isPostgresLocation, openAuditStore, type AuditLogStore } from "./open-store.js";
import type { AuditRecord } from "./schema.js";
import { genesisHead } from "./chain.js";
import { Sealer, SealError, type Seal } from "./seal.js";
import { currentInstance } from "./track.js";

export interface AuditWriterOptions {
  /** flush at least this often (default 250 ms) */
  flushIntervalMs?: number;
  /** flush as soon as this many records wait (default 500) */
  batchSize?: number;
  /** records kept waiting at most; more are dropped (default 10 000) */
  maxBuffer?: number;
  /** where problems are reported (default: stderr) */
  warn?: (message: string) => void;
  /**
   * The sealing key file (seal.ts): when it exists, the head of this process's chain is
   * sealed once per epoch while the writer is open, and when it closes.
   */
  sealKey?: string;
}

export interface AuditWriterCounts {
  recorded: number;
  written: number;
  dropped: number;
  pending: number;
}

type StoreSource = AuditLogStore | (() => Promise<AuditLogStore>);

export class AuditWriter {
  private buffer: AuditRecord[] = [];
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private store?: Promise<AuditLogStore>;
  private closed = false;
  /** trouble is going on: the next good write says so */
  private failing = false;
  /** told the seconds each batch took to write (the daemon's /metrics) */
  onWrite?: (seconds: number) => void;
  /** this trouble has already said that records are being dropped */
  private droppingSaid = false;
  private readonly counts = { recorded: 0, written: 0, dropped: 0 };
  private readonly flushIntervalMs: number;
  private readonly batchSize: number;
  private readonly maxBuffer: number;
  private readonly warn: (message: string) => void;
  private readonly sealer?: Sealer;
  private sealTimer?: NodeJS.Timeout;
  /** the last sealing problem said, so that one that lasts is said once */
  private sealTrouble?: string;

  /** `store` may be a function, so that the database is only opened once there is something to write. */
  constructor(private readonly source: StoreSource, options: AuditWriterOptions = {}) {
    this.flushIntervalMs = options.flushIntervalMs ?? 250;
    this.batchSize = options.batchSize ?? 500;
    this.maxBuffer = options.maxBuffer ?? 10_000;
    this.warn = options.warn ?? ((message) => process.stderr.write(`mlxs: ${message}\n`));
    if (options.sealKey) this.sealer = new Sealer(options.sealKey, currentInstance());
  }

  /** The writer of the audit store at `location` (an SQLite file, or a postgres:// URL), opened (and created) at the first flush. */
  static forLocation(location: string, options?: AuditWriterOptions): AuditWriter {
    const writer = new AuditWriter(async () => (await openAuditStore(location))!, options);
    writer.postgres = isPostgresLocation(location);
    return writer;
  }

  /** errors are PostgreSQL's (described without the location, which may hold a password) */
  private postgres = false;

  /** Queues one record; never waits, never throws. */
  record(entry: AuditRecord): void {
    this.counts.recorded++;
    if (this.closed || this.buffer.length >= this.maxBuffer) {
      this.drop(1, this.closed ? "the audit writer is closed" : `the audit buffer is full (${this.maxBuffer} records)`);
      return;
    }
    this.buffer.push(entry);
    if (this.buffer.length >= this.batchSize) this.schedule(0);
    else this.schedule(this.flushIntervalMs);
  }

  get stats(): AuditWriterCounts {
    return { ...this.counts, pending: this.buffer.length };
  }

  private schedule(delay: number): void {
    if (this.timer && delay > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delay);
    // a pending flush alone must not keep a finished command alive: close() flushes it
    this.timer.unref();
  }

  /** Writes what is buffered now; resolves when it is written (or dropped). Never rejects. */
  flush(): Promise<void> {
    this.flushing = (this.flushing ?? Promise.resolve()).then(() => this.writeBuffered());
    return this.flushing;
  }

  private async writeBuffered(): Promise<void> {
    while (this.buffer.length > 0) {
      // everything waiting goes in one transaction: a writer that fell behind catches up
      // with fewer, larger commits
      const batch = this.buffer;
      this.buffer = [];
      try {
        const store = await this.currentStore();
        const started = performance.now();
        const stored = await store.insert(batch);
        this.onWrite?.((performance.now() - started) / 1000);
        // what the database says it stored, not what was handed to it: the count and the rows agree
        this.counts.written += stored;
        if (this.failing) {
          this.failing = false;
          this.droppingSaid = false;
          this.warn(`audit log writable again (${this.counts.dropped} records dropped in all)`);
        }
        if (stored < batch.length) this.drop(batch.length - stored, "the audit database stored fewer records than it was given");
      } catch (error) {
        const reason = this.postgres ? describePgError(error) : describeStoreError(error);
        if (!this.closed && isPassing(error)) {
          // another process held the lock past the busy timeout (a VACUUM, a long
          // transaction), the file cannot be written for now, or the database server is
          // restarting: the records wait for the next flush
          this.hold(batch, reason);
          // a connection the restart broke is not reused
          if (this.postgres) this.reopen();
          return;
        }
        this.drop(batch.length, `cannot write the audit log: ${reason}`);
      }
    }
  }

  /** Puts a batch back in front of the buffer, dropping what no longer fits, and flushes again later. */
  private hold(batch: AuditRecord[], reason: string): void {
    const waiting = [...batch, ...this.buffer];
    this.buffer = waiting.slice(0, this.maxBuffer);
    if (!this.failing) {
      this.failing = true;
      this.warn(`cannot write the audit log: ${reason}; keeping ${this.buffer.length} records to write when it can be written`);
    }
    if (waiting.length > this.maxBuffer) this.drop(waiting.length - this.maxBuffer, `the audit buffer is full (${this.maxBuffer} records)`);
    this.schedule(this.flushIntervalMs);
  }

  /**
   * The open store, unless its file was moved or deleted while open (a log rotation by
   * hand): then that file is finished and closed (see AuditStore.closeDetached) and a new
   * one is begun where the log belongs.
   */
  private async currentStore(): Promise<AuditLogStore> {
    const store = await this.openStore();
    if (typeof this.source !== "function" || !store.isDetached()) return store;
    this.store = undefined;
    await store.closeDetached().catch(() => undefined);
    this.warn(`the audit database ${store.path} was moved or deleted while open: what it held stays in the old file; new records go to a new ${store.path}`);
    return this.openStore();
  }

  private openStore(): Promise<AuditLogStore> {
    if (!this.store) {
      const source = this.source;
      this.store = typeof source === "function" ? source() : Promise.resolve(source);
      // a failed open is tried again at the next flush
      this.store.catch(() => { this.store = undefined; });
    }
    return this.store;
  }

  /** Forgets the open store (closing it in the background): the next flush opens a new one. */
  private reopen(): void {
    const store = this.store;
    this.store = undefined;
    void store?.then((s) => s.close()).catch(() => undefined);
  }

  private drop(count: number, reason: string): void {
    this.counts.dropped += count;
    this.failing = true;
    // one line when dropping starts, not one per record
    if (!this.droppingSaid) {
      this.droppingSaid = true;
      this.warn(`${reason}; dropping audit records (${this.counts.dropped} so far)`);
    }
  }

  /**
   * Seals the epochs as they end, from now on, while the process runs (a daemon); each
   * seal follows a flush, so it covers every record handed over before it.
   */
  startSealing(): void {
    if (!this.sealer || this.closed) return;
    let wait: number | undefined;
    try {
      wait = this.sealer.nextEpochIn();
    } catch (error) {
      this.sealProblem(error);
      return;
    }
    if (wait === undefined) return;
    clearTimeout(this.sealTimer);
    // a moment into the new epoch, so that a clock a little behind does not find it unbegun
    this.sealTimer = setTimeout(() => void this.seal().then(() => this.startSealing()), Math.min(wait + 50, 2 ** 31 - 1));
    this.sealTimer.unref();
  }

  /**
   * Writes what is pending, then seals the head of this process's chain with this epoch's
   * key: the seal, or null (no key, this epoch sealed already, or a problem, said once on
   * stderr). Never rejects.
   */
  async seal(): Promise<Seal | null> {
    if (!this.sealer) return null;
    await this.flush();
    try {
      if (!this.sealer.enabled()) return null;
      const store = await this.currentStore();
      const head = (await store.chainHeads()).get(this.sealer.chain) ?? genesisHead(this.sealer.chain);
      const seal = this.sealer.seal(head);
      if (seal) await store.insertSeal(seal);
      if (this.sealTrouble) this.warn("sealing the audit log again");
      this.sealTrouble = undefined;
      return seal;
    } catch (error) {
      this.sealProblem(error);
      return null;
    }
  }

  private sealProblem(error: unknown): void {
    const reason = error instanceof SealError ? error.message
      : `cannot seal the audit log: ${this.postgres ? describePgError(error) : describeStoreError(error)}`;
    if (reason !== this.sealTrouble) this.warn(reason);
    this.sealTrouble = reason;
  }

  /** Writes everything still pending, seals it (with a key), then closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearTimeout(this.sealTimer);
    await this.seal();
    this.closed = true;
    clearTimeout(this.timer);
    await this.flush();
    const store = await this.store?.catch(() => undefined);
    // a file moved away since the last write still gets what its WAL holds
    await (store?.isDetached() ? store.closeDetached() : store?.close())?.catch(() => undefined);
  }
}

/**
 * A condition that may pass: SQLite locked by another process, or its file unwritable for
 * a while (made read-only or immutable, a full disk, an I/O error: an operator's fix);
 * PostgreSQL unreachable, restarting or shutting down, a connection it cut (class 08,
 * 57P0x), too many clients, its disk full. The records wait in the buffer, up to its size.
 */
function isPassing(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? ((error as { cause?: { code?: string } }).cause?.code);
  if (code !== undefined && /^SQLITE_(BUSY|LOCKED|READONLY|IOERR|FULL|CANTOPEN|PERM)/.test(code)) return true;
  if (code === "53100" || code === "EACCES" || code === "EPERM" || code === "EROFS" || code === "ENOSPC") return true;
  if (code !== undefined && (/^08/.test(code) || /^57P0[1-3]$/.test(code) || code === "53300" || ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND"].includes(code))) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test((error as Error)?.message ?? "");
}
