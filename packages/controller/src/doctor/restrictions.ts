/**
 * Which sources reach each restricted LoadBalancer IP (`loadBalancerSourceRanges`) from this
 * node, for `doctor`: the source CIDRs a translation admits, whether the node itself is among
 * them, and how much of the node's pod CIDRs they cover. Pure.
 */
import {
  type CoreConfig,
  cidrRange,
  type Mapping,
  type NodeInput,
  nodeIPsOf,
  ownerOf,
  parseCIDR,
  podCIDRsOf,
} from "@ipvs-node-controller/core";
import type { NodeIPReport, PodCoverage, RestrictedAddress, RestrictedService } from "./schema.js";

/** This node's IPs as the core checks source ranges against them. */
export function nodeIPReport(
  config: Pick<CoreConfig, "nodeIPs" | "families">,
  node: NodeInput | undefined,
): NodeIPReport[] {
  const { ips, sources } = nodeIPsOf(config, node);
  return config.families.map((family) => ({
    family,
    address: ips[family],
    source: sources[family],
  }));
}

function coverage(allowed: readonly string[], podCIDRs: readonly string[]): PodCoverage {
  if (podCIDRs.length === 0) return "unknown";
  const ranges = allowed.flatMap((cidr) => {
    const range = cidrRange(cidr);
    return range ? [range] : [];
  });
  let covered = 0;
  let touched = 0;
  for (const pod of podCIDRs) {
    const podRange = cidrRange(pod);
    if (podRange === undefined) continue;
    if (ranges.some((r) => r.first <= podRange.first && r.last >= podRange.last)) covered += 1;
    else if (ranges.some((r) => r.first <= podRange.last && podRange.first <= r.last)) touched += 1;
  }
  if (covered === podCIDRs.length) return "all";
  return covered + touched > 0 ? "some" : "none";
}

/**
 * The restricted LoadBalancer IPs of the desired mappings, by Service. `podCIDRs` of the node
 * come from the Node and `--pod-cidr`; in ClusterCIDR or interface modes only those are known.
 */
export function restrictedServices(
  wanted: readonly Mapping[],
  config: Pick<CoreConfig, "extraPodCIDRs">,
  node: NodeInput | undefined,
): RestrictedService[] {
  const podCIDRs = [...podCIDRsOf(node), ...config.extraPodCIDRs].flatMap((text) => {
    const parsed = parseCIDR(text);
    return parsed.ok ? [parsed.value] : [];
  });
  const byService = new Map<string, Map<string, RestrictedAddress>>();
  for (const mapping of wanted) {
    const allowed = mapping.allowedSources;
    if (allowed === undefined) continue;
    const owner = ownerOf(mapping);
    const addresses = byService.get(owner) ?? new Map<string, RestrictedAddress>();
    byService.set(owner, addresses);
    const port = `${mapping.protocol}/${mapping.port}`;
    const known = addresses.get(mapping.externalIP);
    if (known !== undefined) {
      addresses.set(mapping.externalIP, { ...known, ports: [...known.ports, port] });
      continue;
    }
    const own = podCIDRs.filter((cidr) => cidr.family === mapping.family).map((c) => c.cidr);
    const hostBits = mapping.family === "ipv4" ? 32 : 128;
    addresses.set(mapping.externalIP, {
      family: mapping.family,
      externalIP: mapping.externalIP,
      ports: [port],
      allowedSources: allowed,
      // What the node sends to a local LB IP leaves with that IP as its source.
      admitsNode: coverage(allowed, [`${mapping.externalIP}/${hostBits}`]) === "all",
      admitsPods: coverage(allowed, own),
    });
  }
  return [...byService]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([service, addresses]) => ({ service, addresses: [...addresses.values()] }));
}
