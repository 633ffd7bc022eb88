/**
 * The compiler: a core {@link Ruleset} in, `iptables-restore --noflush` documents out.
 *
 * Layout per family (nat table), one rule per mapping:
 *
 * ```
 * PREROUTING  (1st rule) -> IPVSNC-PREROUTING : local-pod match (-s CIDR / -i name / -i prefix+) -> IPVSNC-PODS
 * OUTPUT      (1st rule) -> IPVSNC-OUTPUT     : -m addrtype --src-type LOCAL                     -> IPVSNC-SERVICES
 * IPVSNC-PODS:     returns unless the destination is local (`-m addrtype ! --dst-type LOCAL`),
 *                  then tries IPVSNC-DNAT: pod traffic keeps its source address, unmarked
 * IPVSNC-SERVICES: the same, but sets the masquerade bit around IPVSNC-DNAT and clears it again
 *                  on no match (host traffic, and pod traffic when the ruleset marks it)
 * IPVSNC-DNAT:     one rule per bucket: -d 0.0.0.7/0.0.0.255 -g IPVSNC-DNAT-07   (IPv6: -d ::7/::ff)
 * IPVSNC-DNAT-07:  -d IP -p PROTO --dport N -m comment --comment "ns/name" -j DNAT --to-destination CLUSTERIP:N
 *                  or, for a mapping that admits only some sources, the same match -g IPVSNC-SRC-<hash>
 * IPVSNC-SRC-<hash>: one rule per admitted source: -s CIDR -p PROTO -j DNAT --to-destination CLUSTERIP:N
 * ```
 *
 * A source that a restricted mapping does not admit falls off the end of its IPVSNC-SRC chain
 * and leaves untranslated (and, in IPVSNC-SERVICES, unmarked): the packet then meets kube-proxy's
 * own source-range firewall for the LoadBalancer IP, as it would without us.
 *
 * Setting the mark once before the DNAT list instead of next to every DNAT halves the number of
 * rules (the classic layout needs a MARK and a DNAT rule per mapping): DNAT ends the nat table
 * for a packet, so a packet that matched leaves with the bit set; one that matched nothing gets
 * the bit cleared on return. Packets that already carried the bit skip both mark rules, so the
 * bit is never cleared on a packet that had it before: the mark a packet leaves with is exactly
 * the one it came with, unless it was translated.
 *
 * The DNAT rules are split into up to 256 buckets by the last byte of the external IP, which a
 * non-CIDR mask matches. Buckets keep every chain that a change edits small: iptables-nft reads
 * and decodes every rule of a chain it edits, so one list of 10,000 rules made every change cost
 * as much as reading all of them. A packet meets at most 256 cheap mask tests and one bucket,
 * instead of every mapping. The jumps into buckets are gotos (`-g`): a packet that no rule of its
 * bucket translates returns straight to IPVSNC-SERVICES, which clears the mark, without testing
 * the buckets after its own.
 *
 * Every rule is written exactly as iptables-save prints it back (`/32`, `-m tcp`,
 * `--set-xmark`, `::/::ff`), so the live state can be compared to the rendered state rule by rule.
 */
import { createHash } from "node:crypto";
import {
  type FamilyRuleset,
  type IpFamily,
  type Mapping,
  mappingKey,
  type Ruleset,
  type RulesetSettings,
  validateRuleset,
} from "@ipvs-node-controller/core";
import { bucketOf, canonicalOrder } from "./dnat-order.js";
import { CHAIN_PREFIX, EMPTY_STATE, type LiveState, normalizeSpec } from "./state.js";

/** The chains this backend owns in the nat table of each family. All names are <= 28 characters. */
export const CHAINS = {
  /** Entered from the top of nat PREROUTING; selects traffic from local pods. */
  prerouting: `${CHAIN_PREFIX}PREROUTING`,
  /** Entered from the top of nat OUTPUT; selects traffic from the host itself. */
  output: `${CHAIN_PREFIX}OUTPUT`,
  /** Locality guard before the DNAT list, for pod traffic that keeps its address. */
  pods: `${CHAIN_PREFIX}PODS`,
  /** Locality guard and masquerade-mark bookkeeping around the DNAT list. */
  services: `${CHAIN_PREFIX}SERVICES`,
  /** One goto per non-empty bucket, in bucket order; see {@link bucketChain}. */
  dnat: `${CHAIN_PREFIX}DNAT`,
} as const;

/**
 * Every bucket chain's name is this prefix and two upper-case hex digits (`IPVSNC-DNAT-0A`): 14
 * characters, and iptables-save, which lists chains by name, lists them in bucket order right
 * after the chain that jumps into them.
 */
export const BUCKET_CHAIN_PREFIX = `${CHAINS.dnat}-`;

/** The chain of a bucket (see `bucketOf`): `IPVSNC-DNAT-` and its byte in upper-case hex. */
export function bucketChain(bucket: string): string {
  return `${BUCKET_CHAIN_PREFIX}${bucket.toUpperCase()}`;
}

/**
 * The rule in IPVSNC-DNAT that sends a bucket's packets to its chain, exactly as iptables-save
 * prints it: the byte as the last one of an address, under a mask of only that byte. IPv6
 * addresses print in their canonical form, so byte 0 is `::`.
 */
export function bucketJump(family: IpFamily, bucket: string): string {
  const byte = Number.parseInt(bucket, 16);
  const match =
    family === "ipv4" ? `0.0.0.${byte}/0.0.0.255` : `::${byte === 0 ? "" : byte.toString(16)}/::ff`;
  return `-d ${match} -g ${bucketChain(bucket)}`;
}

/**
 * The first rule of IPVSNC-SERVICES: leave unless the destination is an address of this node.
 * kube-proxy's IPVS mode binds every LoadBalancer IP and externalIP to `kube-ipvs0`, so there they
 * are local and the bug exists. In kube-proxy's iptables or nftables mode they are virtual: a DNAT
 * of ours would run before kube-proxy's rules, which are then skipped for the connection, and send
 * the cluster IP off the node. One address-type lookup here also spares those nodes the DNAT list.
 */
export const LOCAL_DESTINATIONS_ONLY = "-m addrtype ! --dst-type LOCAL -j RETURN";

/** Every per-mapping chain of admitted sources starts with this prefix. */
export const SOURCE_CHAIN_PREFIX = `${CHAIN_PREFIX}SRC-`;

/**
 * The chain holding the sources a restricted mapping admits: the prefix and 16 hex digits of a
 * hash of the mapping's key (27 characters; iptables allows 28). It depends on the key only, so a
 * change of the admitted sources refills the same chain.
 */
export function sourceChain(
  mapping: Pick<Mapping, "family" | "externalIP" | "protocol" | "port">,
): string {
  const hash = createHash("sha256").update(mappingKey(mapping)).digest("hex");
  return `${SOURCE_CHAIN_PREFIX}${hash.slice(0, 16).toUpperCase()}`;
}

/** The DNAT target of a mapping, exactly as iptables-save prints it. */
function dnatTarget(mapping: Mapping): string {
  const destination =
    mapping.family === "ipv4"
      ? `${mapping.clusterIP}:${mapping.port}`
      : `[${mapping.clusterIP}]:${mapping.port}`;
  return `-j DNAT --to-destination ${destination}`;
}

/**
 * The rules of a restricted mapping's source chain: one DNAT per admitted source (DNAT to a port
 * needs the protocol in the rule; the bucket rule already matched it).
 */
export function sourceRules(mapping: Mapping): string[] {
  return (mapping.allowedSources ?? []).map(
    (cidr) => `-s ${cidr} -p ${mapping.protocol} ${dnatTarget(mapping)}`,
  );
}

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

/**
 * The rule of one mapping in its bucket, exactly as iptables-save prints it back: the DNAT itself,
 * or for a restricted mapping a goto into its source chain.
 */
export function dnatRule(mapping: Mapping): string {
  const hostMask = mapping.family === "ipv4" ? "/32" : "/128";
  const { externalIP, protocol, port, service } = mapping;
  const target =
    mapping.allowedSources === undefined ? dnatTarget(mapping) : `-g ${sourceChain(mapping)}`;
  // The comment is a DNS label, '/', and a DNS label (validateRuleset): nothing can end the quotes.
  return (
    `-d ${externalIP}${hostMask} -p ${protocol} -m ${protocol} --dport ${port} ` +
    `-m comment --comment "${service.namespace}/${service.name}" ${target}`
  );
}

/** What a full sync of one family writes, and the keys of its DNAT rules in canonical order. */
export interface FamilyPlan {
  readonly target: TargetState;
  /** See `dnatKey`: the order that incremental changes keep, in each bucket. */
  readonly dnatKeys: readonly string[];
}

/**
 * The chains and jumps one family needs, from a validated family ruleset. Each bucket holds its
 * rules in core's canonical order whatever the order of `family.mappings`, and the buckets follow
 * their byte, so that incremental changes, which insert by that order, always agree with a full
 * sync.
 */
export function familyTarget(
  family: FamilyRuleset,
  settings: Pick<RulesetSettings, "masqueradeMark" | "markPodTraffic">,
): TargetState {
  return familyPlan(family, settings).target;
}

/** {@link familyTarget}, with the DNAT keys it sorted by. */
export function familyPlan(
  family: FamilyRuleset,
  settings: Pick<RulesetSettings, "masqueradeMark" | "markPodTraffic">,
): FamilyPlan {
  const mark = hex(settings.masqueradeMark);
  const dnat = canonicalOrder(family.mappings);
  const podChain = settings.markPodTraffic ? CHAINS.services : CHAINS.pods;
  const toPods = `-j ${podChain}`;
  const localPods = family.localPods;
  const prerouting =
    localPods.kind === "sourceCIDRs"
      ? localPods.cidrs.map((cidr) => `${sourceMatch(cidr)}${toPods}`)
      : localPods.kind === "inputInterface"
        ? [`-i ${localPods.name} ${toPods}`]
        : [`-i ${localPods.prefix}+ ${toPods}`];
  // Only destinations that are addresses of this node: see LOCAL_DESTINATIONS_ONLY.
  const pods = [LOCAL_DESTINATIONS_ONLY, `-j ${CHAINS.dnat}`];
  const services = [
    LOCAL_DESTINATIONS_ONLY,
    `-m mark --mark ${mark}/${mark} -j ${CHAINS.dnat}`,
    `-m mark --mark ${mark}/${mark} -j RETURN`,
    `-j MARK --set-xmark ${mark}/${mark}`,
    `-j ${CHAINS.dnat}`,
    `-j MARK --set-xmark 0x0/${mark}`,
  ];
  const buckets = new Map<string, string[]>();
  dnat.mappings.forEach((mapping, i) => {
    const bucket = bucketOf(dnat.keys[i] as string);
    const rules = buckets.get(bucket);
    if (rules === undefined) buckets.set(bucket, [dnatRule(mapping)]);
    else rules.push(dnatRule(mapping));
  });
  const order = [...buckets.keys()].sort();
  const restricted = dnat.mappings.filter((mapping) => mapping.allowedSources !== undefined);
  const target: TargetState = {
    chains: new Map([
      [CHAINS.prerouting, prerouting],
      [CHAINS.output, [`-m addrtype --src-type LOCAL -j ${CHAINS.services}`]],
      ...(settings.markPodTraffic ? [] : [[CHAINS.pods, pods] as [string, string[]]]),
      [CHAINS.services, services],
      [CHAINS.dnat, order.map((bucket) => bucketJump(family.family, bucket))],
      ...order.map((bucket): [string, string[]] => [
        bucketChain(bucket),
        buckets.get(bucket) as string[],
      ]),
      ...restricted.map((mapping): [string, string[]] => [
        sourceChain(mapping),
        sourceRules(mapping),
      ]),
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
  return new Map(ruleset.families.map((family) => [family.family, familyPlan(family, ruleset)]));
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
