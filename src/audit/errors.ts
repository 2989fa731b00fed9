/** The audit store's error, apart from the store itself, so that reporting it never loads SQLite. */

/** A database that cannot be used: not SQLite, damaged, from a newer mlxs, unwritable. */
export class AuditStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AuditStoreError";
  }
}

/** PostgreSQL's own words (they never quote a password), or the connection's error code. */
export function describePgError(error: unknown): string {
  const e = error as { code?: string; message?: string };
  if (e.code === "ECONNREFUSED") return "the server refused the connection (is PostgreSQL running, on that host and port?)";
  if (e.code === "28P01") return "password authentication failed";
  if (e.code === "3D000") return "the database does not exist";
  // pg's words when the server asks for a password that was given nowhere
  if (/client password must be a string/.test(e.message ?? "")) return "the server asks for a password and none was given (in the URL, PGPASSWORD or ~/.pgpass)";
  return (e.message ?? String(error)).split("\n")[0]!;
}

/** SQLite's error, said for people (the file's problem, not the driver's code). */
export function describeStoreError(error: unknown): string {
  const code = (error as { code?: string }).code;
  if (code === "SQLITE_NOTADB") return "the file is not an SQLite database";
  if (code === "SQLITE_CORRUPT") return "the database file is damaged";
  if (code === "SQLITE_CANTOPEN") return "the file cannot be opened (does its directory exist, and may mlxs write there?)";
  if (code === "SQLITE_READONLY") return "the database is read-only";
  if (code === "SQLITE_BUSY") return "the database stayed locked by another process";
  if (code === "SQLITE_FULL") return "the disk is full";
  return (error instanceof Error ? error.message : String(error)).replace(/^SQLITE_\w+:\s*/, "");
}
