/**
 * Differences between two rulesets, so a backend can send the kernel only what changed.
 */
import equal from "fast-deep-equal";
import { mappingKey, sortMappings } from "./mapping.js";
import type { FamilyRuleset, Mapping, Ruleset, RulesetDiff } from "./types.js";

function settingsOf(ruleset: Ruleset): RulesetDiff["settings"] {
  return {
    masqueradeMark: ruleset.masqueradeMark,
    families: ruleset.families.map(({ family, localPods }) => ({ family, localPods })),
  };
}

function indexMappings(ruleset: Ruleset): Map<string, Mapping> {
  const index = new Map<string, Mapping>();
  for (const family of ruleset.families) {
    for (const mapping of family.mappings) index.set(mappingKey(mapping), mapping);
  }
  return index;
}

/**
 * Whether two mappings with the same key translate to the same place for the same owner. Written out
 * rather than deep-compared: it runs for every mapping on every sync.
 */
function sameTranslation(a: Mapping, b: Mapping): boolean {
  return (
    a.clusterIP === b.clusterIP &&
    a.service.namespace === b.service.namespace &&
    a.service.name === b.service.name
  );
}

/**
 * Compares two rulesets mapping by mapping, keyed by (family, external IP, protocol, port).
 * `diffRulesets(a, a)` is empty and `applyDiff(a, diffRulesets(a, b))` equals `b`.
 */
export function diffRulesets(previous: Ruleset, next: Ruleset): RulesetDiff {
  const before = indexMappings(previous);
  const added: Mapping[] = [];
  const changed: { before: Mapping; after: Mapping }[] = [];
  for (const family of next.families) {
    for (const mapping of family.mappings) {
      const key = mappingKey(mapping);
      const old = before.get(key);
      if (old === undefined) added.push(mapping);
      else if (!sameTranslation(old, mapping)) changed.push({ before: old, after: mapping });
      before.delete(key);
    }
  }
  const settings = settingsOf(next);
  return {
    added,
    removed: [...before.values()],
    changed,
    settingsChanged: !equal(settingsOf(previous), settings),
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

/** Applies a diff to the ruleset it was computed from, giving the ruleset it was computed to. */
export function applyDiff(previous: Ruleset, diff: RulesetDiff): Ruleset {
  const index = indexMappings(previous);
  for (const mapping of diff.removed) index.delete(mappingKey(mapping));
  for (const { after } of diff.changed) index.set(mappingKey(after), after);
  for (const mapping of diff.added) index.set(mappingKey(mapping), mapping);
  const all = sortMappings([...index.values()]);
  const families: FamilyRuleset[] = diff.settings.families.map(({ family, localPods }) => ({
    family,
    localPods,
    mappings: all.filter((mapping) => mapping.family === family),
  }));
  return { masqueradeMark: diff.settings.masqueradeMark, families };
}
