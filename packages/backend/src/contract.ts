/**
 * The contract between the controller and a kernel backend (nftables or iptables): what every
 * backend offers ({@link Backend}), and the little a backend supplies to get it ({@link Kernel}).
 */
import type {
  LiveRules,
  MappingTable,
  Ruleset,
  RulesetDiff,
  RulesetSettings,
  RulesetUpdate,
} from "@ipvs-node-controller/core";

/** How a call changed the kernel. */
export interface ApplyResult {
  /** `full`: everything of ours was replaced; `incremental`: only changed mappings; `none`: nothing to do. */
  readonly mode: "full" | "incremental" | "none";
  /** Number of mappings added, removed or changed (all of them for a full sync). */
  readonly changedMappings: number;
  /** For an incremental apply: what changed in the kernel, measured against what it held. */
  readonly changes?: RulesetDiff;
}

/**
 * A kernel backend. It remembers what the kernel holds since its last successful write, so that a
 * change costs work in proportion to the change. Every method validates its input first (an
 * `InvalidRulesetError` means nothing ran) and fails with a `BackendError` that leaves the
 * previous rules in place. Calls that change the kernel run one at a time, in call order.
 */
export interface Backend {
  /** `nft` or `iptables`. */
  readonly name: string;
  /** The exact document(s) a full sync of `ruleset` feeds to the kernel tool, for `render` and debugging. */
  render(ruleset: Ruleset): string;
  /** A full sync: replaces everything of ours in the kernel with `ruleset`, atomically per family. */
  apply(ruleset: Ruleset): Promise<ApplyResult>;
  /**
   * Applies an update of some keys to what the kernel holds, in time proportional to the update.
   * Nothing applied yet, a change of settings, a kernel that drifted (a verify found it elsewhere,
   * or it refuses the change) or a change cheaper rewritten whole is answered with a full sync of
   * the result.
   */
  applyChanges(update: RulesetUpdate): Promise<ApplyResult>;
  /** What our rules in the kernel are, compared with what a full sync of `settings` writes around the translations. */
  read(settings: RulesetSettings): Promise<LiveRules>;
  /**
   * True when the kernel holds exactly what a full sync of `ruleset` leaves: the comparison
   * `doctor` shows (`liveMatches`). The read does not wait for queued changes (a listing of
   * 30,000 elements takes half a second); when one of them landed meanwhile the answer is true
   * and the next verify decides. A false answer means drift: the next change is a full sync.
   */
  verify(ruleset: Ruleset): Promise<boolean>;
  /** Removes everything this backend ever created and nothing else. True if anything was removed. */
  cleanup(): Promise<boolean>;
}

/** What the kernel holds since the last successful write, as the shared applier keeps it. */
export interface Applied {
  readonly table: MappingTable;
  readonly settings: RulesetSettings;
}

/** What a kernel change came to. */
export type ChangeOutcome =
  /** The kernel took it. */
  | "written"
  /** The kernel refused it, having changed nothing: it was not where we thought (drift). */
  | "refused"
  /** Not sent: a full sync costs less than this change. */
  | "rewrite";

/**
 * What one kernel tool's backend supplies to the shared applier ({@link createBackend}): its
 * documents and how to send and read them. It keeps no record of what it wrote beyond indexes of
 * its own syntax (e.g. the order of rules in a chain); the applier keeps the mappings.
 */
export interface Kernel {
  readonly name: string;
  /** See {@link Backend.render}; `ruleset` is already validated. */
  render(ruleset: Ruleset): string;
  /**
   * Makes the kernel hold `ruleset` and nothing else of ours; `ruleset` is validated. Throws a
   * `BackendError` when it could not, having put back what it could.
   */
  writeFull(ruleset: Ruleset): Promise<void>;
  /**
   * Writes `diff`, measured against `applied` (what the kernel holds), whose settings it keeps.
   * Throws when a tool could not run to the end (the applier then trusts nothing it knows).
   */
  writeChange(diff: RulesetDiff, applied: Applied): Promise<ChangeOutcome>;
  /** See {@link Backend.read}. */
  read(settings: RulesetSettings): Promise<LiveRules>;
  /** See {@link Backend.cleanup}. */
  remove(): Promise<boolean>;
}
