/** fast-check generators of rulesets, including hostile strings where a caller could put them. */
import {
  type IpFamily,
  type LocalPodMatch,
  type Mapping,
  mappingKey,
  outermostCIDRs,
  parseClusterIP,
  parseExternalIP,
  parseIP,
  type Ruleset,
  sortMappings,
} from "@ipvs-node-controller/core";
import fc from "fast-check";

/** Strings meant to break out of quotes, lines, JSON or nft syntax. */
export const hostileString = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 80 }),
  fc.constantFrom(
    '"; flush ruleset; "',
    "a\nb",
    "\\",
    "\u0000",
    "}",
    "' or 1=1",
    "$(reboot)",
    "web",
    "kube-system",
    "x".repeat(300),
  ),
);

const canonicalIPv6 = fc
  .ipV6()
  .map((text) => parseIP(text))
  .filter((parsed) => parsed.ok && parsed.value.family === "ipv6")
  .map((parsed) => (parsed.ok ? parsed.value.address : ""));

export const addressOf: Record<IpFamily, fc.Arbitrary<string>> = {
  ipv4: fc.ipV4(),
  ipv6: canonicalIPv6,
};

/** Addresses that can be a Service's external IP: unicast, not loopback. */
const externalAddressOf = (family: IpFamily) =>
  addressOf[family].filter((address) => parseExternalIP(address).ok);
/** Addresses that can be a cluster IP: anything but the unspecified address. */
const clusterAddressOf = (family: IpFamily) =>
  addressOf[family].filter((address) => parseClusterIP(address).ok);

const cidrOf: Record<IpFamily, fc.Arbitrary<string>> = {
  ipv4: fc.constantFrom(
    "10.244.0.0/16",
    "10.244.1.0/24",
    "192.0.2.0/24",
    "10.0.0.0/8",
    "0.0.0.0/0",
  ),
  ipv6: fc.constantFrom("fd00:10:244::/48", "fd00:10:244:1::/64", "2001:db8::/32", "::/0"),
};

function mappingOf(family: IpFamily, hostileNames: boolean): fc.Arbitrary<Mapping> {
  const label = fc.constantFrom("web", "api", "dns", "kube-system");
  const name = hostileNames
    ? fc.oneof({ weight: 3, arbitrary: label }, { weight: 1, arbitrary: hostileString })
    : label;
  return fc.record(
    {
      family: fc.constant(family),
      externalIP: externalAddressOf(family),
      protocol: fc.constantFrom("tcp", "udp", "sctp"),
      port: fc.integer({ min: 1, max: 65535 }),
      clusterIP: clusterAddressOf(family),
      service: fc.record({ namespace: name, name }),
      allowedSources: fc
        .uniqueArray(cidrOf[family], { minLength: 1, maxLength: 3 })
        .map(outermostCIDRs),
    },
    { requiredKeys: ["family", "externalIP", "protocol", "port", "clusterIP", "service"] },
  );
}

function localPodsOf(family: IpFamily): fc.Arbitrary<LocalPodMatch> {
  return fc.oneof(
    fc.record({
      kind: fc.constant("sourceCIDRs" as const),
      cidrs: fc.uniqueArray(cidrOf[family], { maxLength: 3 }),
    }),
    fc.record({
      kind: fc.constant("inputInterface" as const),
      name: fc.constantFrom("cni0", "br-pods"),
    }),
    fc.record({
      kind: fc.constant("inputInterfacePrefix" as const),
      prefix: fc.constantFrom("cali", "veth", "lxc"),
    }),
  );
}

/**
 * Rulesets in the canonical form, except that with `hostileNames` (the default) an owner's
 * namespace or name is sometimes a hostile string, which validation must refuse.
 */
export function arbitraryRuleset(
  options: { hostileNames?: boolean; maxMappings?: number } = {},
): fc.Arbitrary<Ruleset> {
  const hostile = options.hostileNames ?? true;
  const maxLength = options.maxMappings ?? 20;
  const familyRuleset = (family: IpFamily) =>
    fc.record({
      family: fc.constant(family),
      localPods: localPodsOf(family),
      mappings: fc
        .uniqueArray(mappingOf(family, hostile), { maxLength, selector: mappingKey })
        .map(sortMappings),
    });
  return fc.record({
    masqueradeMark: fc.integer({ min: 0, max: 31 }).map((bit) => 2 ** bit),
    markPodTraffic: fc.boolean(),
    families: fc.oneof(
      fc.tuple(familyRuleset("ipv4")),
      fc.tuple(familyRuleset("ipv6")),
      fc.tuple(familyRuleset("ipv4"), familyRuleset("ipv6")),
    ),
  });
}
