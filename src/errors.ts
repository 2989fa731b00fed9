/** Errors of the command line itself, apart from the core's and the audit store's. */

/** A usage problem: a bad flag, variable or config file. Exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A command that could not do its job for a reason it can state in one line. Exit status 1. */
export class CommandFailure extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CommandFailure";
  }
}
