/**
 * The compiler: a core {@link Ruleset} in, `iptables-restore --noflush` documents out.
 *
 * Layout per family (nat table), one rule per mapping:
 *
 * ```
 * PREROUTING  (1st rule) -> IPVSNC-PREROUTING : local-pod match (-s CIDR / -i name / -i prefix+) -> IPVSNC-SERVICES
 * OUTPUT      (1st rule) -> IPVSNC-OUTPUT     : -m addrtype --src-type LOCAL                     -> IPVSNC-SERVICES
 * IPVSNC-SERVICES: returns unless the destination is local (`-m addrtype ! --dst-type LOCAL`),
 *                  sets the masquerade bit, tries IPVSNC-DNAT, clears the bit again on no match
 * IPVSNC-DNAT:     -d IP -p PROTO --dport N -m comment --comment "ns/name" -j DNAT --to-destination CLUSTERIP:N
 * ```
 *
 * Setting the mark once before the DNAT list instead of next to every DNAT halves the number of
 * rules (the classic layout needs a MARK and a DNAT rule per mapping): DNAT ends the nat table
 * for a packet, so a packet that matched leaves with the bit set; one that matched nothing gets
 * the bit cleared on return. Packets that already carried the bit skip both mark rules, so the
 * bit is never cleared on a packet that had it before: the mark a packet leaves with is exactly
 * the one it came with, unless it was translated.
 *
 * Every rule is written exactly as iptables-save prints it back (`/32`, `-m tcp`,
 * `--set-xmark`), so the live state can be compared to the rendered state rule by rule.
 */
import {
  type FamilyRuleset,
  type IpFamily,
  type Mapping,
  type Ruleset,
  validateRuleset,
} from "@ipvs-node-controller/core";
import { canonicalOrder } from "./dnat-order.js";
import { CHAIN_PREFIX, EMPTY_STATE, type LiveState, normalizeSpec } from "./state.js";

/** The chains this backend owns in the nat table of each family. All names are <= 28 characters. */
export const CHAINS = {
  /** Entered from the top of nat PREROUTING; selects traffic from local pods. */
  prerouting: `${CHAIN_PREFIX}PREROUTING`,
  /** Entered from the top of nat OUTPUT; selects traffic from the host itself. */
  output: `${CHAIN_PREFIX}OUTPUT`,
  /** Masquerade-mark bookkeeping around the DNAT list. */
  services: `${CHAIN_PREFIX}SERVICES`,
  /** One DNAT rule per mapping. */
  dnat: `${CHAIN_PREFIX}DNAT`,
} as const;

/**
 * The first rule of IPVSNC-SERVICES: leave unless the destination is an address of this node.
 * kube-proxy's IPVS mode binds every LoadBalancer IP and externalIP to `kube-ipvs0`, so there they
 * are local and the bug exists. In kube-proxy's iptables or nftables mode they are virtual: a DNAT
 * of ours would run before kube-proxy's rules, which are then skipped for the connection, and send
 * the cluster IP off the node. One address-type lookup here also spares those nodes the DNAT list.
 */
export const LOCAL_DESTINATIONS_ONLY = "-m addrtype ! --dst-type LOCAL -j RETURN";

/** The comment on our jump rules in the built-in chains. It needs no quoting in iptables-save. */
export const JUMP_COMMENT = "ipvs-node-controller";

/** The state a sync should leave behind in one family's nat table. */
export interface TargetState {
  /** Our chains in declaration order, each with its rule specs (the text after `-A CHAIN `). */
  readonly chains: ReadonlyMap<string, readonly string[]>;
  /** Jump rules that must be the first, and only, jump into our chains of their built-in chain. */
  readonly jumps: readonly { readonly chain: string; readonly spec: string }[];
}

/** A target that holds nothing of ours, i.e. what cleanup leaves behind. */
export const EMPTY_TARGET: TargetState = { chains: new Map(), jumps: [] };

/** What a sync of one family has to do. */
export interface TransitionPlan {
  /** True when the live state already equals the target: nothing needs to be sent. */
  readonly upToDate: boolean;
  /** The `iptables-restore --noflush` input that turns the live state into the target. */
  readonly document: string;
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/** `-s CIDR` as iptables-save prints it: a /0 source matches everything and is not printed. */
function sourceMatch(cidr: string): string {
  return cidr.endsWith("/0") ? "" : `-s ${cidr} `;
}

/** The DNAT rule of one mapping, exactly as iptables-save prints it back. */
export function dnatRule(mapping: Mapping): string {
  const hostMask = mapping.family === "ipv4" ? "/32" : "/128";
  const destination =
    mapping.family === "ipv4"
      ? `${mapping.clusterIP}:${mapping.port}`
      : `[${mapping.clusterIP}]:${mapping.port}`;
  const { externalIP, protocol, port, service } = mapping;
  // The comment is a DNS label, '/', and a DNS label (validateRuleset): nothing can end the quotes.
  return (
    `-d ${externalIP}${hostMask} -p ${protocol} -m ${protocol} --dport ${port} ` +
    `-m comment --comment "${service.namespace}/${service.name}" -j DNAT --to-destination ${destination}`
  );
}

/** What a full sync of one family writes, and the keys of its DNAT rules in chain order. */
export interface FamilyPlan {
  readonly target: TargetState;
  /** See `dnatKey`: the order that incremental changes keep. */
  readonly dnatKeys: readonly string[];
}

/**
 * The chains and jumps one family needs, from a validated family ruleset. The DNAT list is in
 * core's canonical order whatever the order of `family.mappings`, so that incremental changes,
 * which insert by that order, always agree with a full sync.
 */
export function familyTarget(family: FamilyRuleset, masqueradeMark: number): TargetState {
  return familyPlan(family, masqueradeMark).target;
}

/** {@link familyTarget}, with the DNAT keys it sorted by. */
export function familyPlan(family: FamilyRuleset, masqueradeMark: number): FamilyPlan {
  const mark = hex(masqueradeMark);
  const dnat = canonicalOrder(family.mappings);
  const toServices = `-j ${CHAINS.services}`;
  const localPods = family.localPods;
  const prerouting =
    localPods.kind === "sourceCIDRs"
      ? localPods.cidrs.map((cidr) => `${sourceMatch(cidr)}${toServices}`)
      : localPods.kind === "inputInterface"
        ? [`-i ${localPods.name} ${toServices}`]
        : [`-i ${localPods.prefix}+ ${toServices}`];
  const services = [
    // Only destinations that are addresses of this node: see LOCAL_DESTINATIONS_ONLY.
    LOCAL_DESTINATIONS_ONLY,
    `-m mark --mark ${mark}/${mark} -j ${CHAINS.dnat}`,
    `-m mark --mark ${mark}/${mark} -j RETURN`,
    `-j MARK --set-xmark ${mark}/${mark}`,
    `-j ${CHAINS.dnat}`,
    `-j MARK --set-xmark 0x0/${mark}`,
  ];
  const target: TargetState = {
    chains: new Map([
      [CHAINS.prerouting, prerouting],
      [CHAINS.output, [`-m addrtype --src-type LOCAL ${toServices}`]],
      [CHAINS.services, services],
      [CHAINS.dnat, dnat.mappings.map(dnatRule)],
    ]),
    jumps: [
      { chain: "PREROUTING", spec: `-m comment --comment ${JUMP_COMMENT} -j ${CHAINS.prerouting}` },
      { chain: "OUTPUT", spec: `-m comment --comment ${JUMP_COMMENT} -j ${CHAINS.output}` },
    ],
  };
  return { target, dnatKeys: dnat.keys };
}

/** Validates a whole ruleset (core's canonical check) and returns the per-family targets. */
export function rulesetTargets(ruleset: Ruleset): Map<IpFamily, TargetState> {
  return new Map([...rulesetPlans(ruleset)].map(([family, plan]) => [family, plan.target]));
}

/** Validates a whole ruleset (core's canonical check) and returns the per-family plans. */
export function rulesetPlans(ruleset: Ruleset): Map<IpFamily, FamilyPlan> {
  validateRuleset(ruleset);
  return new Map(
    ruleset.families.map((family) => [family.family, familyPlan(family, ruleset.masqueradeMark)]),
  );
}

function sameRules(live: readonly string[] | undefined, target: readonly string[]): boolean {
  return (
    live !== undefined &&
    live.length === target.length &&
    live.every((spec, i) => {
      const wanted = target[i] as string;
      // Rules are rendered the way iptables-save prints them, so the cheap comparison nearly
      // always decides; tokenizing is only needed when the quoting differs.
      return spec === wanted || normalizeSpec(spec) === normalizeSpec(wanted);
    })
  );
}

/**
 * Plans the restore that turns `live` into `target`, touching only our chains and the jumps into
 * them.
 *
 * Jumps: a jump that is already the first rule of its chain, and the only one of ours there, is
 * left alone, so a repeated sync does not reorder anything. Otherwise every jump of ours in that
 * chain is deleted (`-D` with the spec exactly as iptables-save printed it) and one is inserted at
 * the top, in the same restore; so restarts never leave duplicates and a jump that something else
 * pushed down (kube-proxy prepending its own after a restart) moves back to the top. Chains are
 * declared (`:CHAIN - [0:0]`, which under --noflush creates or flushes) and refilled; chains of
 * ours that the target does not have are flushed and deleted after their jumps are gone.
 */
export function planTransition(live: LiveState, target: TargetState): TransitionPlan {
  const keepJump = new Set<string>();
  for (const jump of target.jumps) {
    const liveJumps = live.jumps.filter((j) => j.chain === jump.chain);
    const only = liveJumps[0];
    if (
      liveJumps.length === 1 &&
      only?.index === 0 &&
      normalizeSpec(only.spec) === normalizeSpec(jump.spec)
    ) {
      keepJump.add(jump.chain);
    }
  }
  const deleteJumps = live.jumps.filter((j) => !keepJump.has(j.chain));
  const insertJumps = target.jumps.filter((j) => !keepJump.has(j.chain));
  const dropChains = [...live.chains.keys()].filter((name) => !target.chains.has(name));

  const upToDate =
    deleteJumps.length === 0 &&
    insertJumps.length === 0 &&
    dropChains.length === 0 &&
    [...target.chains].every(([name, rules]) => sameRules(live.chains.get(name), rules));

  const lines = ["*nat"];
  for (const name of [...target.chains.keys(), ...dropChains]) lines.push(`:${name} - [0:0]`);
  for (const jump of deleteJumps) lines.push(`-D ${jump.chain} ${jump.spec}`);
  for (const name of dropChains) lines.push(`-X ${name}`);
  for (const [name, rules] of target.chains) {
    for (const spec of rules) lines.push(`-A ${name} ${spec}`);
  }
  for (const jump of insertJumps) lines.push(`-I ${jump.chain} 1 ${jump.spec}`);
  lines.push("COMMIT", "");
  return { upToDate, document: lines.join("\n") };
}

/** The restore tool a family's document is meant for. */
export function restoreToolName(family: IpFamily): string {
  return family === "ipv4" ? "iptables-restore" : "ip6tables-restore";
}

/**
 * Both documents a full sync into empty tables would feed the kernel, each headed by a comment
 * line naming its family and tool (comment lines are valid restore input). Throws an
 * InvalidRulesetError for a ruleset that is not canonical, before rendering anything.
 */
export function renderRuleset(ruleset: Ruleset): string {
  const parts: string[] = [];
  for (const [family, target] of rulesetTargets(ruleset)) {
    parts.push(`# ${family}: ${restoreToolName(family)} --noflush -w`);
    parts.push(planTransition(EMPTY_STATE, target).document);
  }
  return parts.join("\n");
}
