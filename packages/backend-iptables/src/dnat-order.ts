/**
 * The order of the DNAT rules: one rule per mapping, in core's canonical mapping order (external
 * IP numerically, then protocol, then port), split into buckets by the last byte of the external
 * IP. A full sync writes each bucket in this order and the buckets in the order of their byte; an
 * incremental change inserts each new rule, and each new bucket, at the position this order gives
 * it, so that any sequence of changes leaves the chains exactly as one full sync of the result
 * would.
 */
import { type Mapping, parseIP, portKey } from "@ipvs-node-controller/core";

/**
 * A string that sorts like core's canonical order within one family: the address's fixed-width
 * sort key, then (protocol, port) as five hex digits (`portKey` is below 0x30000).
 */
export function dnatKey(mapping: Pick<Mapping, "externalIP" | "protocol" | "port">): string {
  const parsed = parseIP(mapping.externalIP);
  // Only validated mappings get here; the fallback keeps the function total.
  const address = parsed.ok ? parsed.value.sortKey : mapping.externalIP;
  return address + portKey(mapping).toString(16).padStart(5, "0");
}

/** Mappings of one family in canonical order, with the key of each. */
export interface OrderedMappings {
  readonly mappings: readonly Mapping[];
  readonly keys: readonly string[];
}

/**
 * `mappings` (one family, unique keys) in canonical order. Core's rulesets already are, which one
 * pass over the keys confirms; only a hand-made ruleset in another order is sorted.
 */
export function canonicalOrder(mappings: readonly Mapping[]): OrderedMappings {
  const keys = mappings.map(dnatKey);
  let sorted = true;
  for (let i = 1; i < keys.length && sorted; i++) {
    sorted = (keys[i - 1] as string) < (keys[i] as string);
  }
  if (sorted) return { mappings, keys };
  const indices = keys.map((_, i) => i).sort((a, b) => compareKeys(keys[a], keys[b]));
  return {
    mappings: indices.map((i) => mappings[i] as Mapping),
    keys: indices.map((i) => keys[i] as string),
  };
}

function compareKeys(a: string | undefined, b: string | undefined): number {
  return (a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0;
}

/** Index of the first key in `sorted` that is not less than `key`. */
export function lowerBound(sorted: readonly string[], key: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((sorted[middle] as string) < key) low = middle + 1;
    else high = middle;
  }
  return low;
}

/**
 * The keys of the rules in one chain, in chain order. Positions are found by binary
 * search; an insert or removal moves the tail of the array, which for 10,000 keys costs
 * microseconds, far below one process start.
 */
export class DnatOrder {
  private constructor(private readonly keys: string[]) {}

  /** An order holding `keys`, which must already be sorted and unique. */
  static of(keys: readonly string[]): DnatOrder {
    return new DnatOrder([...keys]);
  }

  /** Number of rules. */
  get size(): number {
    return this.keys.length;
  }

  /** Every key in chain order. */
  list(): readonly string[] {
    return this.keys;
  }

  /** Whether `key` is in the chain. */
  has(key: string): boolean {
    const index = lowerBound(this.keys, key);
    return this.keys[index] === key;
  }

  /**
   * The 1-based rule numbers at which `inserts` go, if `deletes` are removed first and then
   * `inserts` are inserted one by one in ascending order, which is how a change document is laid
   * out. Both lists must be sorted; every delete must be present and, after the deletes, no insert
   * may be. Pure: the order itself changes only in {@link DnatOrder.apply}, once the kernel took
   * the change. O((deletes + inserts) · log size).
   */
  insertPositions(deletes: readonly string[], inserts: readonly string[]): number[] {
    return inserts.map(
      (key, done) => lowerBound(this.keys, key) - lowerBound(deletes, key) + done + 1,
    );
  }

  /** Removes `deletes`, then adds `inserts`, as the kernel just did. */
  apply(deletes: readonly string[], inserts: readonly string[]): void {
    for (const key of deletes) {
      const index = lowerBound(this.keys, key);
      if (this.keys[index] === key) this.keys.splice(index, 1);
    }
    for (const key of inserts) this.keys.splice(lowerBound(this.keys, key), 0, key);
  }
}

/**
 * The bucket of a {@link dnatKey}: the external IP's last byte as two lowercase hex digits, which
 * sort like the byte. The key is the address's bytes in hex followed by five digits of
 * (protocol, port), so the byte sits just before those.
 */
export function bucketOf(key: string): string {
  return key.slice(-7, -5);
}

/** Keys grouped by bucket: buckets in ascending order, keys in their given order within each. */
export function byBucket(keys: readonly string[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const key of keys) {
    const bucket = bucketOf(key);
    const group = groups.get(bucket);
    if (group === undefined) groups.set(bucket, [key]);
    else group.push(key);
  }
  return new Map([...groups].sort(([a], [b]) => compareKeys(a, b)));
}

/**
 * The DNAT rules of one family as the kernel holds them: which buckets exist (in the order of
 * their jumps) and the keys of each bucket's chain. A bucket exists exactly while it holds a rule.
 */
export class DnatBuckets {
  private constructor(
    private readonly chains: Map<string, DnatOrder>,
    private readonly jumps: DnatOrder,
    private total: number,
  ) {}

  /** The buckets of `keys`, which must be sorted and unique. */
  static of(keys: readonly string[]): DnatBuckets {
    const groups = byBucket(keys);
    const chains = new Map([...groups].map(([bucket, group]) => [bucket, DnatOrder.of(group)]));
    return new DnatBuckets(chains, DnatOrder.of([...groups.keys()]), keys.length);
  }

  /** Number of rules in all buckets. */
  get size(): number {
    return this.total;
  }

  /** The buckets that exist, in the order of their jumps. */
  get buckets(): DnatOrder {
    return this.jumps;
  }

  /** Number of rules in `bucket`; 0 when it does not exist. */
  sizeOf(bucket: string): number {
    return this.chains.get(bucket)?.size ?? 0;
  }

  /** The rules of a bucket; an empty order for one that does not exist. */
  chain(bucket: string): DnatOrder {
    return this.chains.get(bucket) ?? DnatOrder.of([]);
  }

  /** Every key, bucket by bucket: the rules in the order a packet could meet them. */
  list(): string[] {
    return this.jumps.list().flatMap((bucket) => this.chain(bucket).list());
  }

  /**
   * Removes `deletes`, then adds `inserts` (both sorted), as the kernel just did; creates the
   * buckets that gain their first rule and drops those that lose their last.
   */
  apply(deletes: readonly string[], inserts: readonly string[]): void {
    const gone: string[] = [];
    const born: string[] = [];
    const deleted = byBucket(deletes);
    const inserted = byBucket(inserts);
    for (const bucket of new Set([...deleted.keys(), ...inserted.keys()])) {
      let chain = this.chains.get(bucket);
      if (chain === undefined) {
        chain = DnatOrder.of([]);
        this.chains.set(bucket, chain);
        born.push(bucket);
      }
      const before = chain.size;
      chain.apply(deleted.get(bucket) ?? [], inserted.get(bucket) ?? []);
      this.total += chain.size - before;
      if (chain.size === 0) {
        this.chains.delete(bucket);
        // A bucket born and emptied by the same change never existed for the kernel.
        const index = born.indexOf(bucket);
        if (index >= 0) born.splice(index, 1);
        else gone.push(bucket);
      }
    }
    this.jumps.apply(gone.sort(), born.sort());
  }
}
