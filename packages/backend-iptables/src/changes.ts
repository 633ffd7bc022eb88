/**
 * Incremental changes: the `iptables-restore --noflush` document that applies a change to the DNAT
 * buckets of one family and nothing else, in one atomic commit. Only the bucket chains that the
 * change touches are named, so iptables-nft reads only those.
 *
 * Deletes name the rule by its full spec (`-D CHAIN spec`), so a rule that is not there, because
 * someone removed or edited it, makes the kernel refuse the whole document instead of deleting a
 * neighbour; the backend then rewrites everything. Inserts go to the position the canonical order
 * gives them (`-I CHAIN n spec`, or `-A` one past the end), in ascending order, so the rule each
 * one is placed before is always one that was there before the document started. Jumps into
 * buckets that appear or empty are placed the same way in IPVSNC-DNAT.
 */
import type { Mapping, RulesetDiff } from "@ipvs-node-controller/core";
import type { FamilyChange } from "./applied.js";
import { bucketOf, byBucket, type DnatBuckets, type DnatOrder, dnatKey } from "./dnat-order.js";
import { bucketChain, bucketJump, CHAINS, dnatRule, sourceChain, sourceRules } from "./render.js";

interface Keyed {
  readonly key: string;
  readonly mapping: Mapping;
}

const byKey = (a: Keyed, b: Keyed) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/**
 * What `diff` (measured against what the kernel holds) changes in each family: the rules to
 * delete, as the kernel holds them, and the rules to insert, both in key order, IPv4 first.
 * O(changed · log changed).
 */
export function planChanges(
  diff: Pick<RulesetDiff, "added" | "removed" | "changed">,
): FamilyChange[] {
  const families = new Map<Mapping["family"], { deletes: Keyed[]; inserts: Keyed[] }>();
  const listsOf = (family: Mapping["family"]) => {
    let lists = families.get(family);
    if (lists === undefined) {
      lists = { deletes: [], inserts: [] };
      families.set(family, lists);
    }
    return lists;
  };
  for (const mapping of diff.removed) {
    listsOf(mapping.family).deletes.push({ key: dnatKey(mapping), mapping });
  }
  for (const mapping of diff.added) {
    listsOf(mapping.family).inserts.push({ key: dnatKey(mapping), mapping });
  }
  for (const { before, after } of diff.changed) {
    const lists = listsOf(after.family);
    lists.deletes.push({ key: dnatKey(before), mapping: before });
    lists.inserts.push({ key: dnatKey(after), mapping: after });
  }
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

/**
 * How many rules iptables-nft decodes to find the rules that `change` deletes by spec: each `-D`
 * reads its bucket's chain until the rule matches, so count the whole bucket for each. Buckets
 * that empty are flushed instead and cost nothing here.
 */
export function deleteScanCost(change: FamilyChange, buckets: DnatBuckets): number {
  let cost = 0;
  const inserted = new Set(change.insertKeys.map(bucketOf));
  for (const [bucket, keys] of byBucket(change.deleteKeys)) {
    const size = buckets.sizeOf(bucket);
    if (size === keys.length && !inserted.has(bucket)) continue;
    cost += size * keys.length;
  }
  return cost;
}

/**
 * `-D` of every delete, then `-I`/`-A` of every insert at the position `order` gives it, in one
 * chain. Both lists are sorted, and `order` is the chain before the change.
 */
function editChain(
  lines: string[],
  chain: string,
  order: DnatOrder,
  deletes: readonly { readonly key: string; readonly spec: string }[],
  inserts: readonly { readonly key: string; readonly spec: string }[],
): void {
  for (const { spec } of deletes) lines.push(`-D ${chain} ${spec}`);
  const positions = order.insertPositions(
    deletes.map((entry) => entry.key),
    inserts.map((entry) => entry.key),
  );
  const remaining = order.size - deletes.length;
  inserts.forEach(({ spec }, done) => {
    const position = positions[done] as number;
    // Rules are numbered from 1; one past the last rule is an append.
    lines.push(
      position === remaining + done + 1 ? `-A ${chain} ${spec}` : `-I ${chain} ${position} ${spec}`,
    );
  });
}

/**
 * The restore document of `change` against the DNAT buckets `buckets` (before the change).
 *
 * A bucket that stays edits its chain rule by rule. A bucket that appears is created with `-N`,
 * which, unlike a `:CHAIN` line (that flushes a chain that exists under `--noflush`), makes the
 * kernel refuse the document if the chain is already there: the applied state was wrong, and the
 * rewrite that follows puts it right. A bucket that empties loses its jump and then its chain
 * (`-F`, `-X`) instead of each rule: flushing costs nothing per rule, and a rule that is not
 * where we think it is cannot matter in a chain that goes away.
 *
 * The source chain of a restricted mapping follows its rule: created (`-N`) and filled before the
 * rule that goes to it is inserted, flushed and refilled when the mapping stays restricted, and
 * removed (`-F`, `-X`) after the rule that went to it is deleted.
 */
export function changeDocument(change: FamilyChange, buckets: DnatBuckets): string {
  const entries = (mappings: readonly Mapping[], keys: readonly string[]) => {
    const byKey = new Map(keys.map((key, i) => [key, dnatRule(mappings[i] as Mapping)]));
    return (bucketKeys: readonly string[] | undefined) =>
      (bucketKeys ?? []).map((key) => ({ key, spec: byKey.get(key) as string }));
  };
  const deleteEntries = entries(change.deletes, change.deleteKeys);
  const insertEntries = entries(change.inserts, change.insertKeys);
  const deleted = byBucket(change.deleteKeys);
  const inserted = byBucket(change.insertKeys);
  const touched = [...new Set([...deleted.keys(), ...inserted.keys()])].sort();

  const born: string[] = [];
  const gone: string[] = [];
  const edits: string[] = [];
  for (const bucket of touched) {
    const chain = buckets.chain(bucket);
    const deletes = deleteEntries(deleted.get(bucket));
    const inserts = insertEntries(inserted.get(bucket));
    if (chain.size === 0) born.push(bucket);
    else if (chain.size === deletes.length && inserts.length === 0) {
      gone.push(bucket);
      continue;
    }
    editChain(edits, bucketChain(bucket), chain, deletes, inserts);
  }

  const restrictedBy = (mappings: readonly Mapping[]) =>
    new Map(
      mappings
        .filter((mapping) => mapping.allowedSources !== undefined)
        .map((mapping) => [sourceChain(mapping), mapping]),
    );
  const sourcesBefore = restrictedBy(change.deletes);
  const sourcesAfter = restrictedBy(change.inserts);

  const lines = ["*nat"];
  for (const bucket of born) lines.push(`-N ${bucketChain(bucket)}`);
  for (const [chain, mapping] of sourcesAfter) {
    lines.push(sourcesBefore.has(chain) ? `-F ${chain}` : `-N ${chain}`);
    for (const spec of sourceRules(mapping)) lines.push(`-A ${chain} ${spec}`);
  }
  lines.push(...edits);
  const jump = (bucket: string) => ({ key: bucket, spec: bucketJump(change.family, bucket) });
  editChain(lines, CHAINS.dnat, buckets.buckets, gone.map(jump), born.map(jump));
  for (const bucket of gone) lines.push(`-F ${bucketChain(bucket)}`, `-X ${bucketChain(bucket)}`);
  for (const chain of sourcesBefore.keys()) {
    if (!sourcesAfter.has(chain)) lines.push(`-F ${chain}`, `-X ${chain}`);
  }
  lines.push("COMMIT", "");
  return lines.join("\n");
}
