/**
 * A keyed collection of mappings: what a backend last applied, kept so that a change can be
 * applied in time proportional to the change, and the whole ruleset rebuilt only when needed.
 */
import { portKey, sameTranslation, sortMappings } from "./mapping.js";
import type {
  FamilyRuleset,
  Mapping,
  MappingKey,
  Ruleset,
  RulesetDiff,
  RulesetSettings,
  RulesetUpdate,
} from "./types.js";

/**
 * Mappings by external IP, then by protocol and port. Keyed by the address strings the mappings
 * already hold (whose hashes V8 caches) rather than by freshly built key strings. IPv4 and IPv6
 * texts never collide, so one map serves both families. An IP has few ports: a short array of
 * exact size per IP (concat, with and toSpliced allocate exactly what they return; push and
 * spread reserve room for 16 more) takes a fourth of the memory of a Map per IP.
 */
export class MappingTable {
  private readonly byIP = new Map<string, readonly Mapping[]>();
  private count = 0;

  /** A table holding the mappings of `ruleset`. */
  static of(ruleset: Ruleset): MappingTable {
    const table = new MappingTable();
    for (const family of ruleset.families)
      for (const mapping of family.mappings) table.put(mapping);
    return table;
  }

  /** An independent copy. */
  clone(): MappingTable {
    const copy = new MappingTable();
    for (const mapping of this.values()) copy.put(mapping);
    return copy;
  }

  /** Number of mappings. */
  get size(): number {
    return this.count;
  }

  /** The mapping with the key of `key`, if any. */
  get(key: MappingKey): Mapping | undefined {
    const ports = this.byIP.get(key.externalIP);
    if (ports === undefined) return undefined;
    const wanted = portKey(key);
    return ports.find((mapping) => portKey(mapping) === wanted);
  }

  /** Adds or replaces the mapping with `mapping`'s key. */
  put(mapping: Mapping): void {
    const ports = this.byIP.get(mapping.externalIP);
    if (ports === undefined) {
      this.byIP.set(mapping.externalIP, [mapping]);
      this.count += 1;
      return;
    }
    const wanted = portKey(mapping);
    const index = ports.findIndex((other) => portKey(other) === wanted);
    if (index < 0) {
      this.byIP.set(mapping.externalIP, ports.concat([mapping]));
      this.count += 1;
    } else {
      this.byIP.set(mapping.externalIP, ports.with(index, mapping));
    }
  }

  /** Removes the mapping with `key`'s key; true if there was one. */
  delete(key: MappingKey): boolean {
    const ports = this.byIP.get(key.externalIP);
    if (ports === undefined) return false;
    const wanted = portKey(key);
    const index = ports.findIndex((mapping) => portKey(mapping) === wanted);
    if (index < 0) return false;
    if (ports.length === 1) this.byIP.delete(key.externalIP);
    else this.byIP.set(key.externalIP, ports.toSpliced(index, 1));
    this.count -= 1;
    return true;
  }

  /** Applies the mapping changes of `diff`: O(changed mappings). */
  apply(diff: Pick<RulesetDiff, "added" | "removed" | "changed">): void {
    for (const mapping of diff.removed) this.delete(mapping);
    for (const { after } of diff.changed) this.put(after);
    for (const mapping of diff.added) this.put(mapping);
  }

  /**
   * What `update` changes in this table: the mappings it adds, removes and changes, measured
   * against what the table holds (a key the update mentions but leaves as it is changes
   * nothing). O(keys in the update).
   */
  changesFrom(update: RulesetUpdate): Pick<RulesetDiff, "added" | "removed" | "changed"> {
    const added: Mapping[] = [];
    const removed: Mapping[] = [];
    const changed: { before: Mapping; after: Mapping }[] = [];
    for (const key of update.removed) {
      const before = this.get(key);
      if (before !== undefined) removed.push(before);
    }
    for (const after of update.mappings) {
      const before = this.get(after);
      if (before === undefined) added.push(after);
      else if (!sameTranslation(before, after)) changed.push({ before, after });
    }
    return { added, removed, changed };
  }

  /**
   * The ruleset these mappings make once `update` is applied, with its settings; this table stays
   * as it is. What a backend rebuilds from when a change must become a full sync.
   */
  rulesetAfter(update: RulesetUpdate): Ruleset {
    const next = this.clone();
    for (const key of update.removed) next.delete(key);
    for (const mapping of update.mappings) next.put(mapping);
    return next.toRuleset(update.settings);
  }

  /** Every mapping, in no particular order. */
  *values(): IterableIterator<Mapping> {
    for (const ports of this.byIP.values()) yield* ports;
  }

  /** The canonical ruleset of these mappings with `settings`. O(mappings · log mappings). */
  toRuleset(settings: RulesetSettings): Ruleset {
    const all = sortMappings([...this.values()]);
    const families: FamilyRuleset[] = settings.families.map(({ family, localPods }) => ({
      family,
      localPods,
      mappings: all.filter((mapping) => mapping.family === family),
    }));
    return {
      masqueradeMark: settings.masqueradeMark,
      markPodTraffic: settings.markPodTraffic,
      families,
    };
  }
}
