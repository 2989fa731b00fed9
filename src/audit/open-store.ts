/**
 * The one place that picks the audit store: a `postgres://` or `postgresql://` URL is a
 * PostgreSQL database (a fleet's shared log, pg-store.ts), anything else an SQLite file
 * (store.ts). Both answer the same operations with the same rows and bytes.
 */
import type { AuditStore } from "./store.js";
import type { PgAuditStore } from "./pg-store.js";

export type AuditLogStore = AuditStore | PgAuditStore;

export function isPostgresLocation(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

/** The location as it may be shown in messages: a URL without its password. */
export async function shownAuditLocation(location: string): Promise<string> {
  return isPostgresLocation(location) ? (await import("./pg-store.js")).shownLocation(location) : location;
}

/**
 * Opens the audit store at `location` (with `create`, creating it and its schema);
 * undefined when there is none and `create` is false. The drivers load only when needed.
 */
export async function openAuditStore(location: string, options: { create?: boolean } = {}): Promise<AuditLogStore | undefined> {
  if (isPostgresLocation(location)) return (await import("./pg-store.js")).PgAuditStore.open(location, options);
  return (await import("./store.js")).AuditStore.open(location, options);
}
