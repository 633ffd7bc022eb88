/**
 * Configuration of the rule engine: defaults, validation and the parsers the CLI shares.
 *
 * Unlike Service data, which comes from other people and is skipped when bad, configuration is the
 * operator's own: a bad value stops everything with a {@link ConfigError} that names it.
 */
import { parseCIDR, parseIP } from "./address.js";
import { quote } from "./errors.js";
import type { CoreConfig, IpFamily, LocalDetection } from "./types.js";

/** A configuration value is invalid. The message names the option and the value. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** The defaults: IPv4 only, externalIPs on, every Service, kube-proxy's mark bit 14, NodeCIDR detection. */
export const DEFAULT_CONFIG: CoreConfig = Object.freeze({
  families: Object.freeze(["ipv4"]) as readonly IpFamily[],
  externalIPs: true,
  onlyLocalTrafficPolicy: false,
  masqueradeBit: 14,
  localDetection: Object.freeze({ mode: "NodeCIDR" }) as LocalDetection,
  extraPodCIDRs: Object.freeze([]) as readonly string[],
  maxMappingsPerService: 65_536,
  masqueradePodTraffic: false,
  nodeIPs: Object.freeze([]) as readonly string[],
});

/** Characters of a Linux interface name that cannot quote or escape anything in a rule. */
const INTERFACE_NAME = /^[A-Za-z0-9_.-]+$/;
/** IFNAMSIZ - 1. */
const MAX_INTERFACE_NAME = 15;

const FAMILY_ORDER: Record<IpFamily, number> = { ipv4: 0, ipv6: 1 };

/**
 * Validates an interface name (BridgeInterface mode) or prefix (InterfaceNamePrefix mode). A
 * prefix may be at most 14 characters: iptables writes it with a trailing `+` into the same
 * 15-character field.
 */
export function validateInterfaceName(
  option: string,
  value: unknown,
  kind: "name" | "prefix" = "name",
): string {
  const max = kind === "prefix" ? MAX_INTERFACE_NAME - 1 : MAX_INTERFACE_NAME;
  if (typeof value !== "string" || !INTERFACE_NAME.test(value) || value.length > max) {
    throw new ConfigError(
      `${option}: ${quote(value)} is not a valid interface ${kind} (1–${max} characters of A-Z a-z 0-9 _ . -)`,
    );
  }
  return value;
}

/**
 * Parses a `NET_STACK` / `--net-stack` value: `ipv4`, `ipv6` or `ipv4,ipv6` (either order, spaces allowed).
 */
export function parseFamilies(text: string): IpFamily[] {
  const items = text
    .split(",")
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== "");
  if (items.length === 0) throw new ConfigError(`net stack ${quote(text)} names no IP family`);
  for (const item of items) {
    if (item !== "ipv4" && item !== "ipv6") {
      throw new ConfigError(`net stack ${quote(text)}: ${quote(item)} is not "ipv4" or "ipv6"`);
    }
  }
  return normaliseFamilies(items as IpFamily[]);
}

function normaliseFamilies(families: readonly unknown[]): IpFamily[] {
  if (families.length === 0)
    throw new ConfigError("families: at least one IP family must be enabled");
  for (const family of families) {
    if (family !== "ipv4" && family !== "ipv6") {
      throw new ConfigError(`families: ${quote(family)} is not "ipv4" or "ipv6"`);
    }
  }
  const unique = [...new Set(families as IpFamily[])];
  return unique.sort((a, b) => FAMILY_ORDER[a] - FAMILY_ORDER[b]);
}

/** Canonical, de-duplicated CIDRs; throws a ConfigError naming `option` for a bad one. */
function canonicalCIDRs(option: string, cidrs: readonly unknown[]): string[] {
  const canonical = cidrs.map((cidr) => {
    const parsed = parseCIDR(cidr);
    if (!parsed.ok) throw new ConfigError(`${option}: ${parsed.error}`);
    return parsed.value.cidr;
  });
  return [...new Set(canonical)];
}

/** Canonical node IPs, at most one per family; throws a ConfigError for a bad one. */
function canonicalNodeIPs(values: unknown): string[] {
  if (!Array.isArray(values)) throw new ConfigError(`node IPs: ${quote(values)} is not a list`);
  const byFamily = new Map<string, string>();
  for (const value of values) {
    const parsed = parseIP(value);
    if (!parsed.ok) throw new ConfigError(`node IP: ${parsed.error}`);
    const { family, address } = parsed.value;
    const earlier = byFamily.get(family);
    if (earlier !== undefined && earlier !== address) {
      throw new ConfigError(
        `node IP: ${earlier} and ${address} are both ${family}; give one per family`,
      );
    }
    byFamily.set(family, address);
  }
  return [...byFamily.values()];
}

function normaliseDetection(detection: LocalDetection): LocalDetection {
  switch (detection.mode) {
    case "NodeCIDR":
      return { mode: "NodeCIDR" };
    case "ClusterCIDR": {
      if (!Array.isArray(detection.cidrs) || detection.cidrs.length === 0) {
        throw new ConfigError(
          "cluster CIDR: the ClusterCIDR detection mode needs at least one CIDR",
        );
      }
      return { mode: "ClusterCIDR", cidrs: canonicalCIDRs("cluster CIDR", detection.cidrs) };
    }
    case "BridgeInterface":
      return {
        mode: "BridgeInterface",
        interfaceName: validateInterfaceName("pod bridge interface", detection.interfaceName),
      };
    case "InterfaceNamePrefix":
      return {
        mode: "InterfaceNamePrefix",
        interfacePrefix: validateInterfaceName(
          "pod interface name prefix",
          detection.interfacePrefix,
          "prefix",
        ),
      };
    default:
      throw new ConfigError(
        `detect-local-mode: ${quote((detection as { mode?: unknown }).mode)} is not NodeCIDR, ClusterCIDR, BridgeInterface or InterfaceNamePrefix`,
      );
  }
}

/**
 * Fills in defaults and validates a partial configuration. Throws {@link ConfigError} naming the
 * first invalid value.
 */
export function resolveConfig(partial: Partial<CoreConfig> = {}): CoreConfig {
  const merged = { ...DEFAULT_CONFIG, ...partial };
  const bit = merged.masqueradeBit;
  if (!Number.isInteger(bit) || bit < 0 || bit > 31) {
    throw new ConfigError(`masquerade bit: ${quote(bit)} is not an integer from 0 to 31`);
  }
  if (typeof merged.externalIPs !== "boolean") {
    throw new ConfigError(`externalIPs: ${quote(merged.externalIPs)} is not a boolean`);
  }
  if (typeof merged.onlyLocalTrafficPolicy !== "boolean") {
    throw new ConfigError(
      `onlyLocalTrafficPolicy: ${quote(merged.onlyLocalTrafficPolicy)} is not a boolean`,
    );
  }
  const cap = merged.maxMappingsPerService;
  if (!Number.isInteger(cap) || cap < 1) {
    throw new ConfigError(`max mappings per Service: ${quote(cap)} is not a positive integer`);
  }
  if (typeof merged.masqueradePodTraffic !== "boolean") {
    throw new ConfigError(
      `masqueradePodTraffic: ${quote(merged.masqueradePodTraffic)} is not a boolean`,
    );
  }
  if (!Array.isArray(merged.extraPodCIDRs)) {
    throw new ConfigError(`extra pod CIDRs: ${quote(merged.extraPodCIDRs)} is not a list`);
  }
  return {
    families: normaliseFamilies(merged.families),
    masqueradePodTraffic: merged.masqueradePodTraffic,
    nodeIPs: canonicalNodeIPs(merged.nodeIPs),
    extraPodCIDRs: canonicalCIDRs("pod CIDR", merged.extraPodCIDRs),
    maxMappingsPerService: cap,
    externalIPs: merged.externalIPs,
    onlyLocalTrafficPolicy: merged.onlyLocalTrafficPolicy,
    masqueradeBit: bit,
    localDetection: normaliseDetection(merged.localDetection),
  };
}

/** The mark value for a masquerade bit, as an unsigned 32-bit integer. */
export function markForBit(bit: number): number {
  return (1 << bit) >>> 0;
}
