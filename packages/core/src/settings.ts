/**
 * The per-node settings of a ruleset: the masquerade mark and, per family, how traffic from local
 * pods is recognised. They depend on the configuration and the Node, never on Services.
 */
import { parseCIDR } from "./address.js";
import { markForBit } from "./config.js";
import { type NodeInput, podCIDRsOf } from "./input.js";
import type { CoreConfig, IpFamily, LocalPodMatch, RulesetSettings } from "./types.js";

/** Settings and the problems met while deriving them (skipped, never fatal). */
export interface DerivedSettings {
  readonly settings: RulesetSettings;
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

/** The settings for `config` (already resolved) on a node. */
export function deriveSettings(config: CoreConfig, node: NodeInput | undefined): DerivedSettings {
  const warnings: string[] = [];
  const matches = localPodMatches(config, node, warnings);
  return {
    settings: {
      masqueradeMark: markForBit(config.masqueradeBit),
      families: config.families.map((family) => ({
        family,
        localPods: matches.get(family) as LocalPodMatch,
      })),
    },
    warnings,
  };
}
