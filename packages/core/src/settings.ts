/**
 * The per-node settings of a ruleset: the masquerade mark and, per family, how traffic from local
 * pods is recognised. They depend on the configuration and the Node, never on Services.
 */
import { parseCIDR, parseIP } from "./address.js";
import { markForBit } from "./config.js";
import { type NodeInput, podCIDRsOf } from "./input.js";
import type { CoreConfig, IpFamily, LocalPodMatch, RulesetSettings } from "./types.js";

/** This node's address per family, as kube-proxy decides it (see {@link nodeIPsOf}). */
export type NodeIPs = Readonly<Record<IpFamily, string>>;

/** Settings and the problems met while deriving them (skipped, never fatal). */
export interface DerivedSettings {
  readonly settings: RulesetSettings;
  /** The node IPs `loadBalancerSourceRanges` are checked against. */
  readonly nodeIPs: NodeIPs;
  /** E.g. a malformed pod CIDR on the Node, or no pod CIDR at all for a family. */
  readonly warnings: readonly string[];
}

function localPodMatches(
  config: CoreConfig,
  node: NodeInput | undefined,
  warnings: string[],
): Map<IpFamily, LocalPodMatch> {
  const detection = config.localDetection;
  const result = new Map<IpFamily, LocalPodMatch>();
  if (detection.mode === "BridgeInterface" || detection.mode === "InterfaceNamePrefix") {
    const match: LocalPodMatch =
      detection.mode === "BridgeInterface"
        ? { kind: "inputInterface", name: detection.interfaceName }
        : { kind: "inputInterfacePrefix", prefix: detection.interfacePrefix };
    for (const family of config.families) result.set(family, match);
    return result;
  }

  const texts =
    detection.mode === "ClusterCIDR"
      ? detection.cidrs
      : [...podCIDRsOf(node), ...config.extraPodCIDRs];
  const byFamily = new Map<IpFamily, Set<string>>();
  for (const text of texts) {
    const parsed = parseCIDR(text);
    if (!parsed.ok) {
      warnings.push(`pod CIDR ignored: ${parsed.error}`);
      continue;
    }
    const set = byFamily.get(parsed.value.family) ?? new Set<string>();
    set.add(parsed.value.cidr);
    byFamily.set(parsed.value.family, set);
  }
  for (const family of config.families) {
    const cidrs = [...(byFamily.get(family) ?? [])].sort();
    result.set(family, { kind: "sourceCIDRs", cidrs });
    if (cidrs.length === 0 && detection.mode === "NodeCIDR") {
      warnings.push(
        `no ${family} pod CIDR is known for this node: only host-network traffic is translated for ${family}`,
      );
    }
  }
  return result;
}

/** Where a node IP came from, for reports. */
export type NodeIPSource = "Node status" | "configured" | "none known: loopback";

/**
 * This node's IP per family, as kube-proxy determines the "node IP" its source-range rules check:
 * the first address of the family among the Node's InternalIP addresses, then its ExternalIP
 * ones; an address configured for the family (kube-proxy's `--bind-address`) replaces it; with
 * neither, the loopback address, as kube-proxy assumes.
 */
export function nodeIPsOf(
  config: Pick<CoreConfig, "nodeIPs">,
  node: NodeInput | undefined,
): { readonly ips: NodeIPs; readonly sources: Readonly<Record<IpFamily, NodeIPSource>> } {
  const ips: Record<IpFamily, string> = { ipv4: "127.0.0.1", ipv6: "::1" };
  const sources: Record<IpFamily, NodeIPSource> = {
    ipv4: "none known: loopback",
    ipv6: "none known: loopback",
  };
  const addresses = Array.isArray(node?.status?.addresses) ? node.status.addresses : [];
  const found = new Set<IpFamily>();
  for (const type of ["InternalIP", "ExternalIP"]) {
    for (const entry of addresses) {
      if (entry?.type !== type) continue;
      const parsed = parseIP(entry.address);
      if (!parsed.ok || found.has(parsed.value.family)) continue;
      found.add(parsed.value.family);
      ips[parsed.value.family] = parsed.value.address;
      sources[parsed.value.family] = "Node status";
    }
  }
  for (const text of config.nodeIPs) {
    const parsed = parseIP(text);
    if (!parsed.ok) continue; // resolveConfig refuses such a value
    ips[parsed.value.family] = parsed.value.address;
    sources[parsed.value.family] = "configured";
  }
  return { ips, sources };
}

/** The settings for `config` (already resolved) on a node. */
export function deriveSettings(config: CoreConfig, node: NodeInput | undefined): DerivedSettings {
  const warnings: string[] = [];
  const matches = localPodMatches(config, node, warnings);
  return {
    nodeIPs: nodeIPsOf(config, node).ips,
    settings: {
      masqueradeMark: markForBit(config.masqueradeBit),
      markPodTraffic: config.masqueradePodTraffic,
      families: config.families.map((family) => ({
        family,
        localPods: matches.get(family) as LocalPodMatch,
      })),
    },
    warnings,
  };
}
