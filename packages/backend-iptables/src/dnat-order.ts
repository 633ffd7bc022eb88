/**
 * The order of the DNAT list: one rule per mapping, in core's canonical mapping order (external
 * IP numerically, then protocol, then port). A full sync writes the list in this order; an
 * incremental change inserts each new rule at the position this order gives it, so that any
 * sequence of changes leaves the chain exactly as one full sync of the result would.
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
 * The keys of the DNAT rules in one family's chain, in chain order. Positions are found by binary
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
