/**
 * What a backend reads back from the kernel, translation by translation: the shape a backend's
 * read-back hands to the controller, so that `doctor` can compare the kernel with the desired
 * ruleset mapping by mapping without knowing either kernel syntax.
 */
import type { MappingKeyFields } from "./mapping.js";

/** One translation found in the kernel: (family, external IP, protocol, port) to a cluster IP. */
export interface LiveMapping extends MappingKeyFields {
  /** Where the rule sends the traffic, canonical. */
  readonly clusterIP: string;
  /** The `namespace/name` the rule's comment names; empty when it names none. */
  readonly owner: string;
  /**
   * Present when the kernel translates only some sources to this address (see
   * `Mapping.allowedSources`): the source CIDRs it admits, canonical, in address order; empty
   * when it admits none.
   */
  readonly allowedSources?: readonly string[];
}

/** Everything of one backend that is in the kernel. */
export interface LiveRules {
  /** The backend that wrote them: `nft` or `iptables`. */
  readonly backend: string;
  /** The program the rules were read with, e.g. `nft` or `iptables-nft-save`. */
  readonly tool: string;
  /** True when anything of this backend exists (a table, a chain, a jump). */
  readonly present: boolean;
  /** The translations in the kernel, in canonical order (see `compareMappings`). */
  readonly mappings: readonly LiveMapping[];
  /**
   * How everything around the translations (chains, hooks, jumps, the match of local pods)
   * differs from what a full sync of the expected settings writes, and any rule that could not be
   * read as a translation: one sentence each, empty when all is as a sync leaves it. Empty as well
   * when nothing is present.
   */
  readonly problems: readonly string[];
}
