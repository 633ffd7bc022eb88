/**
 * Incremental changes: the `iptables-restore --noflush` document that applies a change to the DNAT
 * list of one family and nothing else, in one atomic commit.
 *
 * Deletes name the rule by its full spec (`-D CHAIN spec`), so a rule that is not there, because
 * someone removed or edited it, makes the kernel refuse the whole document instead of deleting a
 * neighbour; the backend then rewrites everything. Inserts go to the position the canonical order
 * gives them (`-I CHAIN n spec`, or `-A` one past the end), in ascending order, so the rule each
 * one is placed before is always one that was there before the document started.
 */
import {
  type Mapping,
  mappingKey,
  type RulesetDiff,
  sameTranslation,
} from "@ipvs-node-controller/core";
import type { AppliedState, FamilyChange } from "./applied.js";
import { type DnatOrder, dnatKey } from "./dnat-order.js";
import { CHAINS, dnatRule } from "./render.js";

interface Keyed {
  readonly key: string;
  readonly mapping: Mapping;
}

const byKey = (a: Keyed, b: Keyed) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/**
 * What `diff` changes in the kernel, per family, measured against what was applied rather than
 * against what the diff says was there: a mapping the kernel already holds is not inserted twice
 * (which iptables would accept, unlike nft), and a removed one the kernel never had is not
 * deleted. O(changed · log changed).
 */
export function planChanges(
  applied: AppliedState,
  diff: Pick<RulesetDiff, "added" | "removed" | "changed">,
): FamilyChange[] {
  // The last word on every key the diff touches, in the order MappingTable.apply reads it.
  const wanted = new Map<string, { readonly ref: Mapping; readonly next: Mapping | undefined }>();
  for (const mapping of diff.removed)
    wanted.set(mappingKey(mapping), { ref: mapping, next: undefined });
  for (const { after } of diff.changed) wanted.set(mappingKey(after), { ref: after, next: after });
  for (const mapping of diff.added)
    wanted.set(mappingKey(mapping), { ref: mapping, next: mapping });

  const families = new Map<Mapping["family"], { deletes: Keyed[]; inserts: Keyed[] }>();
  for (const { ref, next } of wanted.values()) {
    const current = applied.table.get(ref);
    if (current === next || (current && next && sameTranslation(current, next))) continue;
    let lists = families.get(ref.family);
    if (lists === undefined) {
      lists = { deletes: [], inserts: [] };
      families.set(ref.family, lists);
    }
    const key = dnatKey(ref);
    if (current) lists.deletes.push({ key, mapping: current });
    if (next) lists.inserts.push({ key, mapping: next });
  }

  // IPv4 first, like a full sync, whatever order the diff listed its mappings in.
  const ordered = [...families].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return ordered.map(([family, { deletes, inserts }]) => {
    deletes.sort(byKey);
    inserts.sort(byKey);
    return {
      family,
      deletes: deletes.map((entry) => entry.mapping),
      deleteKeys: deletes.map((entry) => entry.key),
      inserts: inserts.map((entry) => entry.mapping),
      insertKeys: inserts.map((entry) => entry.key),
    };
  });
}

/** The change that undoes `change` once the kernel has taken it. */
export function inverseChange(change: FamilyChange): FamilyChange {
  return {
    family: change.family,
    deletes: change.inserts,
    deleteKeys: change.insertKeys,
    inserts: change.deletes,
    insertKeys: change.deleteKeys,
  };
}

/** Number of mappings a change adds, removes or retargets. */
export function changedMappings(changes: readonly FamilyChange[]): number {
  let count = 0;
  for (const change of changes) {
    const keys = new Set([...change.deleteKeys, ...change.insertKeys]);
    count += keys.size;
  }
  return count;
}

/** The restore document of `change` against the DNAT list `order` (before the change). */
export function changeDocument(change: FamilyChange, order: DnatOrder): string {
  const lines = ["*nat"];
  for (const mapping of change.deletes) lines.push(`-D ${CHAINS.dnat} ${dnatRule(mapping)}`);
  const positions = order.insertPositions(change.deleteKeys, change.insertKeys);
  const remaining = order.size - change.deletes.length;
  change.inserts.forEach((mapping, done) => {
    const position = positions[done] as number;
    // Rules are numbered from 1; one past the last rule is an append.
    lines.push(
      position === remaining + done + 1
        ? `-A ${CHAINS.dnat} ${dnatRule(mapping)}`
        : `-I ${CHAINS.dnat} ${position} ${dnatRule(mapping)}`,
    );
  });
  lines.push("COMMIT", "");
  return lines.join("\n");
}
