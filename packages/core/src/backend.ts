/**
 * The contract between the controller and a kernel backend (nftables or iptables).
 *
 * Only types and one error class live here: the backends implement the contract, the controller
 * consumes it, and neither needs to know the other.
 */
import type { Ruleset } from "./types.js";

/** What a finished process reported. A non-zero `exitCode` is returned, not thrown. */
export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

/**
 * Runs one program with an argument array (never a shell), optionally feeding `input` on stdin.
 * Backends take one so that callers can choose how processes are started, e.g. inside another
 * network namespace with `ip netns exec NAME` in tests.
 */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  options?: { readonly input?: string },
) => Promise<CommandResult>;

/** How an {@link Backend.apply} call changed the kernel. */
export interface ApplyResult {
  /** `full`: everything of ours was replaced; `incremental`: only changed elements; `none`: nothing to do. */
  readonly mode: "full" | "incremental" | "none";
  /** Number of mappings added, removed or changed by this apply (all of them for a full sync). */
  readonly changedMappings: number;
}

/** A kernel backend. Implementations keep the last successfully applied ruleset to compute differences. */
export interface Backend {
  /** `nft` or `iptables`. */
  readonly name: string;
  /** The exact document(s) that a full sync would feed to the kernel tool, for `render` and debugging. */
  render(ruleset: Ruleset): string;
  /**
   * Makes the kernel match `ruleset`, atomically per tool invocation. Sends only what differs from the
   * last applied ruleset unless `full` is set or the live state drifted. On failure throws a
   * {@link BackendError} and leaves the previously applied rules in place.
   */
  apply(ruleset: Ruleset, options?: { readonly full?: boolean }): Promise<ApplyResult>;
  /** True when the live kernel state holds exactly `ruleset` (what a full sync would produce). */
  verify(ruleset: Ruleset): Promise<boolean>;
  /** Removes everything this backend ever created and nothing else. Returns true if anything was removed. */
  cleanup(): Promise<boolean>;
}

/** A kernel tool failed or is missing. The message names the tool and quotes its error output. */
export class BackendError extends Error {
  override readonly name = "BackendError";
  constructor(
    message: string,
    /** The program that failed, e.g. `nft` or `iptables-restore`. */
    readonly tool: string,
    /** Its standard error, trimmed. */
    readonly stderr = "",
    /**
     * True when the program could not be started at all (not installed, not executable), as
     * opposed to running and failing: callers may treat a missing tool as "nothing to do".
     */
    readonly notStarted = false,
  ) {
    super(message);
  }
}
