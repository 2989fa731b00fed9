/**
 * The only place that hands out context sequences: a fixed set of slots, a bounded FIFO
 * queue of waiters, and refusal (`overloaded`) past it. A waiter whose signal aborts leaves
 * the queue at once; a released slot goes straight to the oldest waiter. Among free slots
 * the caller chooses (generate.ts: the sequence whose cache holds most of the prompt).
 */
import { CoreError } from "./types.js";

export interface Lease<T> {
  readonly slot: T;
  /** time spent waiting in the queue */
  readonly queueMs: number;
  /** gives the slot back; calling it twice is harmless */
  release(): void;
}

interface Waiter<T> {
  resolve: (lease: Lease<T>) => void;
  reject: (error: CoreError) => void;
  enqueuedAt: number;
  detach: () => void;
}

export class SequencePool<T> {
  private readonly free: T[];
  private readonly waiters: Waiter<T>[] = [];

  private readonly size: number;

  /** `onChange`: called whenever busy or waiting changes (for whoever reports them) */
  constructor(slots: T[], private readonly maxQueue: number, private readonly onChange: () => void = () => undefined) {
    this.free = [...slots];
    this.size = slots.length;
  }

  /** slots handed out now */
  get busy(): number { return this.size - this.free.length; }
  /** requests waiting for a slot */
  get waiting(): number { return this.waiters.length; }

  /** A slot: the free one `choose` picks (by its index in `free`), else the next one released, in turn. */
  acquire(signal?: AbortSignal, choose: (free: readonly T[]) => number = (free) => free.length - 1): Promise<Lease<T>> {
    if (signal?.aborted) return Promise.reject(cancelled());
    if (this.free.length > 0) {
      const [slot] = this.free.splice(choose(this.free), 1);
      this.onChange();
      return Promise.resolve(this.lease(slot!, 0));
    }
    if (this.waiters.length >= this.maxQueue) {
      return Promise.reject(new CoreError("overloaded", `all sequences are busy and the queue is full (${this.maxQueue} waiting)`));
    }
    return new Promise<Lease<T>>((resolve, reject) => {
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        this.onChange();
        reject(cancelled());
      };
      const waiter: Waiter<T> = {
        resolve, reject, enqueuedAt: performance.now(),
        detach: () => signal?.removeEventListener("abort", onAbort),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
      this.onChange();
    });
  }

  private lease(slot: T, queueMs: number): Lease<T> {
    let released = false;
    return {
      slot, queueMs,
      release: () => {
        if (released) return;
        released = true;
        this.handOver(slot);
      },
    };
  }

  private handOver(slot: T): void {
    const next = this.waiters.shift();
    if (!next) this.free.push(slot);
    else {
      next.detach();
      next.resolve(this.lease(slot, performance.now() - next.enqueuedAt));
    }
    this.onChange();
  }
}

const cancelled = () => new CoreError("cancelled", "the request was cancelled while waiting for a sequence");
