/**
 * What can go wrong once a kernel tool is involved. Every one of these leaves the kernel with its
 * previous rules:
 *
 * | error                       | what happened                              | nothing changed because                      |
 * | --------------------------- | ------------------------------------------ | -------------------------------------------- |
 * | {@link ToolNotStartedError} | the program could not be started           | it never ran                                 |
 * | {@link ToolRefusedError}    | the program ran and exited non-zero        | kernel transactions are atomic               |
 * | {@link ToolTimedOutError}   | the program did not finish and was killed  | an unfinished transaction is never committed |
 *
 * A ruleset that is not canonical never gets this far: the core's `InvalidRulesetError` is thrown
 * before any program starts.
 */

/** A kernel tool failed; the message names the tool. The kernel keeps its previous rules. */
export abstract class BackendError extends Error {
  constructor(
    message: string,
    /** The program, e.g. `nft` or `iptables-nft-restore`. */
    readonly tool: string,
  ) {
    super(message);
  }
}

/** The program could not be started at all: not installed, not executable, no such directory. */
export class ToolNotStartedError extends BackendError {
  override readonly name = "ToolNotStartedError";
  constructor(
    tool: string,
    /** Why, e.g. `ENOENT` or the system's message. */
    readonly reason: string,
  ) {
    super(`${tool} could not be started: ${reason}`, tool);
  }
}

/** The program ran and refused: it exited non-zero. `stderr` holds its own words. */
export class ToolRefusedError extends BackendError {
  override readonly name = "ToolRefusedError";
  constructor(
    message: string,
    tool: string,
    /** Its exit code. */
    readonly exitCode: number,
    /** Its standard error, trimmed. */
    readonly stderr: string,
  ) {
    super(message, tool);
  }
}

/** The program did not finish within its time limit and was killed. */
export class ToolTimedOutError extends BackendError {
  override readonly name = "ToolTimedOutError";
  constructor(
    tool: string,
    /** The limit that was exceeded. */
    readonly timeoutMs: number,
  ) {
    super(`${tool} did not finish within ${timeoutMs} ms and was killed`, tool);
  }
}
