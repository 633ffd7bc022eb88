/**
 * The error vocabulary shared by the core, the backends and the controller.
 *
 * Four things can go wrong on the way to the kernel, and a caller reacts differently to each:
 *
 * | error                  | what happened                                   | nothing changed because |
 * | ---------------------- | ----------------------------------------------- | ----------------------- |
 * | {@link InvalidRulesetError} | a ruleset or change is not canonical       | no tool was started     |
 * | {@link ToolNotStartedError} | the program could not be started           | it never ran            |
 * | {@link ToolRefusedError}    | the program ran and exited non-zero        | kernel transactions are atomic |
 * | {@link ToolTimedOutError}   | the program did not finish and was killed  | an unfinished transaction is never committed |
 *
 * The last three are {@link BackendError}s: a backend could not bring the kernel to a ruleset.
 */

/** Renders an untrusted value for an error message without letting it span lines or run on. */
export function quote(value: unknown): string {
  if (typeof value !== "string") {
    return typeof value === "number" || typeof value === "boolean" ? String(value) : typeof value;
  }
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}

/**
 * A ruleset, or a change to one, breaks the canonical form (see `validateRuleset`). Raised before
 * any program runs, so the kernel is untouched.
 */
export class InvalidRulesetError extends Error {
  override readonly name = "InvalidRulesetError";
  constructor(
    /** Where the problem is, e.g. `families[0].mappings[3].port`. */
    readonly field: string,
    /** What is wrong with it, naming the value. */
    readonly problem: string,
  ) {
    super(`invalid ruleset: ${field} ${problem}`);
  }
}

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
