/**
 * The core's errors: a ruleset that breaks the canonical form, and the quoting every error message
 * uses for values from outside. (What can go wrong once a kernel tool runs is the backend
 * contract's: see `@ipvs-node-controller/backend`.)
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
