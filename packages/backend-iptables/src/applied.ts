/**
 * What the kernel holds since our last successful restore: the mappings, the settings they were
 * written with, and each family's DNAT buckets with the order of their rules. Trusted between verifies, so that a
 * change costs neither a read of the kernel nor work in proportion to the ruleset.
 */
import {
  type IpFamily,
  type LocalPodMatch,
  type Mapping,
  MappingTable,
  type Ruleset,
  type RulesetSettings,
  settingsOf,
} from "@ipvs-node-controller/core";
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

function sameLocalPods(a: LocalPodMatch, b: LocalPodMatch): boolean {
  switch (a.kind) {
    case "sourceCIDRs":
      return (
        b.kind === "sourceCIDRs" &&
        a.cidrs.length === b.cidrs.length &&
        a.cidrs.every((cidr, i) => cidr === b.cidrs[i])
      );
    case "inputInterface":
      return b.kind === "inputInterface" && a.name === b.name;
    case "inputInterfacePrefix":
      return b.kind === "inputInterfacePrefix" && a.prefix === b.prefix;
  }
}

/** Whether two settings produce the same chains around the DNAT list. */
export function sameSettings(a: RulesetSettings, b: RulesetSettings): boolean {
  return (
    a.masqueradeMark === b.masqueradeMark &&
    a.markPodTraffic === b.markPodTraffic &&
    a.families.length === b.families.length &&
    a.families.every((entry, i) => {
      const other = b.families[i];
      return (
        other !== undefined &&
        entry.family === other.family &&
        sameLocalPods(entry.localPods, other.localPods)
      );
    })
  );
}

/** See the module comment. */
export class AppliedState {
  /**
   * False after something went wrong half way (a tool that timed out, a failed rollback) or a
   * verify found drift: the next change then rewrites everything instead of trusting this state.
   */
  trusted = true;

  private constructor(
    readonly table: MappingTable,
    readonly settings: RulesetSettings,
    private readonly orders: ReadonlyMap<IpFamily, DnatBuckets>,
  ) {}

  /** The state a full sync of `ruleset` leaves, from the plans that sync wrote. */
  static of(ruleset: Ruleset, plans: ReadonlyMap<IpFamily, FamilyPlan>): AppliedState {
    const orders = new Map<IpFamily, DnatBuckets>();
    for (const [family, plan] of plans) orders.set(family, DnatBuckets.of(plan.dnatKeys));
    return new AppliedState(MappingTable.of(ruleset), settingsOf(ruleset), orders);
  }

  /** Whether our chains exist in `family` (it is enabled in the applied settings). */
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
    for (const mapping of change.deletes) this.table.delete(mapping);
    for (const mapping of change.inserts) this.table.put(mapping);
    this.buckets(change.family).apply(change.deleteKeys, change.insertKeys);
  }
}
