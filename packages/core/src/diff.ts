/**
 * Differences between rulesets, and between a ruleset and an update of some of its keys, so that
 * a backend can send the kernel only what changed.
 */
import equal from "fast-deep-equal";
import { MappingTable } from "./mapping-table.js";
import type {
  Ruleset,
  RulesetChanges,
  RulesetDiff,
  RulesetSettings,
  RulesetUpdate,
} from "./types.js";

/** Everything in `ruleset` except its mappings. */
export function settingsOf(ruleset: Ruleset): RulesetSettings {
  return {
    masqueradeMark: ruleset.masqueradeMark,
    markPodTraffic: ruleset.markPodTraffic,
    families: ruleset.families.map(({ family, localPods }) => ({ family, localPods })),
  };
}

/** Whether two settings give the same chains, sets and matches around the mappings. */
export function sameSettings(a: RulesetSettings, b: RulesetSettings): boolean {
  return equal(a, b);
}

/**
 * Compares two rulesets mapping by mapping, keyed by (family, external IP, protocol, port).
 * `diffRulesets(a, a)` is empty.
 */
export function diffRulesets(previous: Ruleset, next: Ruleset): RulesetDiff {
  const before = MappingTable.of(previous);
  const after = MappingTable.of(next);
  const settings = settingsOf(next);
  const { added, changed } = before.changesFrom({
    settings,
    mappings: [...after.values()],
    removed: [],
  });
  return {
    added,
    removed: [...before.values()].filter((mapping) => after.get(mapping) === undefined),
    changed,
    settingsChanged: !sameSettings(settingsOf(previous), settings),
    settings,
  };
}

/** True when the diff changes nothing at all. */
export function isEmptyDiff(diff: RulesetDiff): boolean {
  return (
    !diff.settingsChanged &&
    diff.added.length === 0 &&
    diff.removed.length === 0 &&
    diff.changed.length === 0
  );
}

/** True when `takeChanges` found nothing that could change the kernel. */
export function isEmptyChanges(changes: RulesetChanges): boolean {
  return !changes.settingsChanged && changes.mappings.length === 0 && changes.removed.length === 0;
}

/**
 * The update that turns `previous` into `next`: every key whose mapping differs, with its new
 * mapping or as removed, and `next`'s settings. What a library user who computes whole rulesets
 * hands to `applyChanges`.
 */
export function updateBetween(previous: Ruleset, next: Ruleset): RulesetUpdate {
  const diff = diffRulesets(previous, next);
  return {
    settings: diff.settings,
    mappings: [...diff.added, ...diff.changed.map(({ after }) => after)],
    removed: diff.removed,
  };
}
