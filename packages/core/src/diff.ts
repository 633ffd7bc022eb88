/**
 * Differences between two rulesets, so a backend can send the kernel only what changed.
 */
import equal from "fast-deep-equal";
import { portKey, sortMappings } from "./mapping.js";
import type { FamilyRuleset, Mapping, Ruleset, RulesetDiff } from "./types.js";

function settingsOf(ruleset: Ruleset): RulesetDiff["settings"] {
  return {
    masqueradeMark: ruleset.masqueradeMark,
    families: ruleset.families.map(({ family, localPods }) => ({ family, localPods })),
  };
}

/**
 * Mappings by external IP, then by protocol and port. Keyed by the address strings the mappings
 * already hold (whose hashes V8 caches) rather than by freshly built key strings: this runs for
 * every mapping on every sync. IPv4 and IPv6 texts never collide, so one map serves both families.
 */
type MappingIndex = Map<string, Map<number, Mapping>>;

function indexMappings(ruleset: Ruleset): MappingIndex {
  const index: MappingIndex = new Map();
  for (const family of ruleset.families) {
    for (const mapping of family.mappings) {
      let ports = index.get(mapping.externalIP);
      if (ports === undefined) {
        ports = new Map();
        index.set(mapping.externalIP, ports);
      }
      ports.set(portKey(mapping), mapping);
    }
  }
  return index;
}

function* allMappings(index: MappingIndex): Generator<Mapping> {
  for (const ports of index.values()) yield* ports.values();
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
      const ports = before.get(mapping.externalIP);
      const key = portKey(mapping);
      const old = ports?.get(key);
      if (old === undefined) added.push(mapping);
      else if (!sameTranslation(old, mapping)) changed.push({ before: old, after: mapping });
      ports?.delete(key);
    }
  }
  const settings = settingsOf(next);
  return {
    added,
    removed: [...allMappings(before)],
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
  for (const mapping of diff.removed) index.get(mapping.externalIP)?.delete(portKey(mapping));
  const put = (mapping: Mapping) => {
    const ports = index.get(mapping.externalIP) ?? new Map<number, Mapping>();
    index.set(mapping.externalIP, ports.set(portKey(mapping), mapping));
  };
  for (const { after } of diff.changed) put(after);
  for (const mapping of diff.added) put(mapping);
  const all = sortMappings([...allMappings(index)]);
  const families: FamilyRuleset[] = diff.settings.families.map(({ family, localPods }) => ({
    family,
    localPods,
    mappings: all.filter((mapping) => mapping.family === family),
  }));
  return { masqueradeMark: diff.settings.masqueradeMark, families };
}
