/**
 * What a backend reads back from the kernel, translation by translation: the shape a backend's
 * read-back hands to the controller, so that `doctor` can compare the kernel with the desired
 * ruleset mapping by mapping without knowing either kernel syntax.
 */
import { compareMappings, mappingKey, sameSources } from "./mapping.js";
import type { Mapping, MappingKey, Ruleset } from "./types.js";

/** One translation found in the kernel: (family, external IP, protocol, port) to a cluster IP. */
export interface LiveMapping extends MappingKey {
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

/** How the translations in the kernel differ from the wanted ones, key by key. */
export interface LiveComparison {
  /** Wanted mappings with no translation of their key in the kernel. */
  readonly missing: readonly Mapping[];
  /** Wanted mappings whose key the kernel translates otherwise: another cluster IP, owner or sources. */
  readonly differing: readonly { readonly wanted: Mapping; readonly live: LiveMapping }[];
  /** Translations no wanted mapping has the key of, and second translations of one key. */
  readonly unwanted: readonly LiveMapping[];
}

/** `namespace/name`, as a rule's comment names its owner. */
export function ownerOf(mapping: Mapping): string {
  return `${mapping.service.namespace}/${mapping.service.name}`;
}

/** Whether a translation in the kernel is exactly what a sync writes for `wanted`. */
export function sameLiveMapping(live: LiveMapping, wanted: Mapping): boolean {
  return (
    live.clusterIP === wanted.clusterIP &&
    live.owner === ownerOf(wanted) &&
    sameSources(live.allowedSources, wanted.allowedSources)
  );
}

/**
 * Compares the translations a backend read back with the wanted mappings, key by key: the one
 * comparison behind both `doctor`'s report and a backend's periodic verify. O(mappings).
 */
export function compareLive(
  wanted: readonly Mapping[],
  live: readonly LiveMapping[],
): LiveComparison {
  const liveByKey = new Map<string, LiveMapping>();
  const unwanted: LiveMapping[] = [];
  for (const found of live) {
    const key = mappingKey(found);
    if (liveByKey.has(key)) unwanted.push(found);
    else liveByKey.set(key, found);
  }
  const missing: Mapping[] = [];
  const differing: { wanted: Mapping; live: LiveMapping }[] = [];
  for (const mapping of wanted) {
    const key = mappingKey(mapping);
    const found = liveByKey.get(key);
    liveByKey.delete(key);
    if (found === undefined) missing.push(mapping);
    else if (!sameLiveMapping(found, mapping)) differing.push({ wanted: mapping, live: found });
  }
  unwanted.push(...liveByKey.values());
  return { missing, differing, unwanted: unwanted.sort(compareMappings) };
}

/**
 * Whether what a backend read back is exactly what a full sync of `ruleset` leaves: its rules are
 * present (when any family is enabled), nothing around the translations differs, and every
 * translation is the wanted one.
 */
export function liveMatches(ruleset: Ruleset, live: LiveRules): boolean {
  if (live.problems.length > 0) return false;
  if (ruleset.families.length > 0 && !live.present) return false;
  const comparison = compareLive(
    ruleset.families.flatMap((family) => family.mappings),
    live.mappings,
  );
  return (
    comparison.missing.length === 0 &&
    comparison.differing.length === 0 &&
    comparison.unwanted.length === 0
  );
}
