/**
 * Differences between two rulesets, so a backend can send the kernel only what changed.
 */
import equal from "fast-deep-equal";
import { sameTranslation } from "./mapping.js";
import { MappingTable } from "./mapping-table.js";
import type { Mapping, Ruleset, RulesetDiff, RulesetSettings } from "./types.js";

/** Everything in `ruleset` except its mappings. */
export function settingsOf(ruleset: Ruleset): RulesetSettings {
  return {
    masqueradeMark: ruleset.masqueradeMark,
    markPodTraffic: ruleset.markPodTraffic,
    families: ruleset.families.map(({ family, localPods }) => ({ family, localPods })),
  };
}

/**
 * Compares `next` with the mappings in `previous`, keyed by (family, external IP, protocol, port).
 * `previousSettings` decides `settingsChanged`.
 */
function diffAgainst(
  previous: MappingTable,
  previousSettings: RulesetSettings,
  next: Ruleset,
): RulesetDiff {
  const added: Mapping[] = [];
  const changed: { before: Mapping; after: Mapping }[] = [];
  const kept = new Set<Mapping>();
  for (const family of next.families) {
    for (const mapping of family.mappings) {
      const old = previous.get(mapping);
      if (old === undefined) {
        added.push(mapping);
        continue;
      }
      kept.add(old);
      if (!sameTranslation(old, mapping)) changed.push({ before: old, after: mapping });
    }
  }
  const removed = [...previous.values()].filter((mapping) => !kept.has(mapping));
  const settings = settingsOf(next);
  return {
    added,
    removed,
    changed,
    settingsChanged: !equal(previousSettings, settings),
    settings,
  };
}

/**
 * Compares two rulesets mapping by mapping, keyed by (family, external IP, protocol, port).
 * `diffRulesets(a, a)` is empty and `applyDiff(a, diffRulesets(a, b))` equals `b`.
 */
export function diffRulesets(previous: Ruleset, next: Ruleset): RulesetDiff {
  return diffAgainst(MappingTable.of(previous), settingsOf(previous), next);
}

/** Compares a ruleset with the contents of a table holding a ruleset with `settings`. */
export function diffTable(
  previous: MappingTable,
  previousSettings: RulesetSettings,
  next: Ruleset,
): RulesetDiff {
  return diffAgainst(previous, previousSettings, next);
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

/** Applies a diff to the ruleset it was computed from, giving the ruleset it was computed to. */
export function applyDiff(previous: Ruleset, diff: RulesetDiff): Ruleset {
  return MappingTable.of(previous).rulesetAfter(diff);
}
