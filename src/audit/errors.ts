/** The audit store's error, apart from the store itself, so that reporting it never loads SQLite. */

/** A database that cannot be used: not SQLite, damaged, from a newer mlxs, unwritable. */
export class AuditStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AuditStoreError";
  }
}
