/**
 * The contract between the controller and a kernel backend (nftables or iptables), and the
 * process seam both backends start their tools through.
 *
 * Only types live here: the backends implement the contract, the controller consumes it, and
 * neither needs to know the other. `FakeBackend` implements it in memory.
 */
import type { Ruleset, RulesetDiff } from "./types.js";

/** What a finished process reported. A non-zero `exitCode` is returned, not thrown. */
export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

/**
 * Runs one program with an argument array (never a shell), optionally feeding `input` on stdin.
 * Returns non-zero exits; throws `ToolNotStartedError` when the program cannot be started and
 * `ToolTimedOutError` when it had to be killed. Backends take one so that callers choose how
 * processes are started, e.g. inside another network namespace with `ip netns exec NAME` in tests.
 */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  options?: { readonly input?: string },
) => Promise<CommandResult>;

/** How a call changed the kernel. */
export interface ApplyResult {
  /** `full`: everything of ours was replaced; `incremental`: only changed elements; `none`: nothing to do. */
  readonly mode: "full" | "incremental" | "none";
  /** Number of mappings added, removed or changed (all of them for a full sync). */
  readonly changedMappings: number;
}

/**
 * A kernel backend. It remembers what it last applied, so that a change costs work in proportion
 * to the change. Every method validates its input first (an `InvalidRulesetError` means nothing
 * ran) and fails with a `BackendError` subclass that leaves the previous rules in place. Calls on
 * one backend that change the kernel run one at a time, in the order they were made.
 */
export interface Backend {
  /** `nft` or `iptables`. */
  readonly name: string;
  /** The exact document(s) that a full sync would feed to the kernel tool, for `render` and debugging. */
  render(ruleset: Ruleset): string;
  /**
   * Makes the kernel hold `ruleset`. A full, atomic replacement the first time, when `full` is set,
   * or when the settings changed; otherwise only the mappings that differ from the last applied
   * ruleset are sent (finding them is O(mappings); see {@link Backend.applyChanges}).
   */
  apply(ruleset: Ruleset, options?: { readonly full?: boolean }): Promise<ApplyResult>;
  /**
   * Applies a change to the last applied ruleset (the empty ruleset before the first call), in
   * time proportional to the change. A change of settings, or a kernel that refuses the change
   * because its state drifted, is answered with a full sync of the resulting ruleset.
   */
  applyChanges(changes: RulesetDiff): Promise<ApplyResult>;
  /**
   * True when the kernel holds exactly `ruleset` (what a full sync would produce). Reads it all
   * back. A backend may read without waiting for queued changes, and then answers true when one of
   * its own changes landed while it read (the comparison would be meaningless): the next verify
   * decides. A false answer means drift, and the backend applies the next change in full.
   */
  verify(ruleset: Ruleset): Promise<boolean>;
  /** Removes everything this backend ever created and nothing else. Returns true if anything was removed. */
  cleanup(): Promise<boolean>;
}
