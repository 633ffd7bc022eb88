/**
 * The order of our DNAT rules in the kernel since the last restore: for each family, its buckets
 * and the keys of each bucket's rules. It is an index of the mappings the shared applier keeps,
 * in iptables' own terms (rule numbers), so that a change can name where each rule goes without
 * reading the kernel or sorting the whole ruleset.
 */
import type { IpFamily, Mapping } from "@ipvs-node-controller/core";
import { DnatBuckets } from "./dnat-order.js";
import type { FamilyPlan } from "./render.js";

/** One family's part of an incremental change, as the kernel will carry it out. */
export interface FamilyChange {
  readonly family: IpFamily;
  /** Rules to delete, as the kernel holds them, in key order. */
  readonly deletes: readonly Mapping[];
  readonly deleteKeys: readonly string[];
  /** Rules to insert, in key order. */
  readonly inserts: readonly Mapping[];
  readonly insertKeys: readonly string[];
}

/** See the module comment. */
export class RuleOrder {
  private constructor(private readonly orders: ReadonlyMap<IpFamily, DnatBuckets>) {}

  /** The order a full sync written from `plans` leaves. */
  static of(plans: ReadonlyMap<IpFamily, FamilyPlan>): RuleOrder {
    const orders = new Map<IpFamily, DnatBuckets>();
    for (const [family, plan] of plans) orders.set(family, DnatBuckets.of(plan.dnatKeys));
    return new RuleOrder(orders);
  }

  /** Whether our chains exist in `family` (it was enabled in the last full sync). */
  has(family: IpFamily): boolean {
    return this.orders.has(family);
  }

  /** The DNAT buckets of an enabled family. */
  buckets(family: IpFamily): DnatBuckets {
    const order = this.orders.get(family);
    if (order === undefined) throw new Error(`no ${family} chains were applied`);
    return order;
  }

  /** Records a change the kernel just accepted. */
  commit(change: FamilyChange): void {
    this.buckets(change.family).apply(change.deleteKeys, change.insertKeys);
  }
}
