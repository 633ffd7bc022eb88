/**
 * `spec.loadBalancerSourceRanges` and the masquerade mark, read the way kube-proxy reads them
 * (pkg/proxy/serviceport.go and the IPVS proxier of v1.37): the sources a translation admits are
 * exactly those kube-proxy's IPVS mode lets through its source-range firewall.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  cidrContains,
  computeRuleset,
  type Mapping,
  nodeIPsOf,
  outermostCIDRs,
  parseSourceRange,
  RulesetEngine,
  type RulesetInput,
} from "../src/index.js";
import { lbService, nodeWith } from "./fixtures.js";

const dualStack = {
  families: ["ipv4", "ipv6"] as const,
};

function mappingsOf(input: RulesetInput): Mapping[] {
  return computeRuleset(input).ruleset.families.flatMap((family) => family.mappings);
}

function sourcesOf(input: RulesetInput): Record<string, readonly string[] | undefined> {
  return Object.fromEntries(mappingsOf(input).map((m) => [m.externalIP, m.allowedSources]));
}

describe("parseSourceRange", () => {
  it.each([
    ["10.0.0.0/8", "10.0.0.0/8"],
    [" 10.0.0.0/8 ", "10.0.0.0/8"],
    ["\t192.0.2.0/24\n", "192.0.2.0/24"],
    ["010.001.0.0/16", "10.1.0.0/16"],
    ["10.0.0.0/08", "10.0.0.0/8"],
    ["10.1.2.3/8", "10.0.0.0/8"],
    ["2001:DB8::1/32", "2001:db8::/32"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["::/0", "::/0"],
  ])("reads %j as kube-proxy does: %s", (text, cidr) => {
    expect(parseSourceRange(text)).toEqual({
      ok: true,
      value: { family: cidr.includes(":") ? "ipv6" : "ipv4", cidr },
    });
  });

  it.each([
    "10.0.0.0",
    "10.0.0.0/33",
    "10.0.0.0/-1",
    "2001:db8::/129",
    "10.0.0.256/24",
    "::ffff:10.0.0.0/104",
    "10.0.0.0/8; flush ruleset",
    "fe80::/10%eth0",
    "",
  ])("refuses %j", (text) => {
    expect(parseSourceRange(text).ok).toBe(false);
  });
});

describe("outermostCIDRs", () => {
  it.each([
    [["10.0.0.0/8", "10.1.0.0/16"], ["10.0.0.0/8"]],
    [["10.1.0.0/16", "10.0.0.0/8"], ["10.0.0.0/8"]],
    [
      ["10.0.0.0/25", "10.0.0.128/25"],
      ["10.0.0.0/25", "10.0.0.128/25"],
    ],
    [["10.0.0.0/24", "10.0.0.0/24"], ["10.0.0.0/24"]],
    [["0.0.0.0/0", "192.0.2.1/32"], ["0.0.0.0/0"]],
    [
      ["fd00::/8", "fd00:10:244::/48", "2001:db8::/32"],
      ["2001:db8::/32", "fd00::/8"],
    ],
    [
      ["192.0.2.0/24", "10.0.0.0/8"],
      ["10.0.0.0/8", "192.0.2.0/24"],
    ],
    [[], []],
  ])("%j -> %j", (input, expected) => {
    expect(outermostCIDRs(input)).toEqual(expected);
  });
});

describe("nodeIPsOf", () => {
  it("takes the first InternalIP of each family, then ExternalIP, as kube-proxy does", () => {
    const node = {
      status: {
        addresses: [
          { type: "ExternalIP", address: "203.0.113.5" },
          { type: "InternalIP", address: "fd00::5" },
          { type: "InternalIP", address: "172.18.0.2" },
          { type: "InternalIP", address: "172.18.0.3" },
        ],
      },
    };
    expect(nodeIPsOf({ nodeIPs: [] }, node).ips).toEqual({ ipv4: "172.18.0.2", ipv6: "fd00::5" });
    const external = { status: { addresses: [{ type: "ExternalIP", address: "203.0.113.5" }] } };
    expect(nodeIPsOf({ nodeIPs: [] }, external).ips.ipv4).toBe("203.0.113.5");
  });

  it("lets a configured address replace its family, and falls back to loopback", () => {
    const { ips, sources } = nodeIPsOf({ nodeIPs: ["2001:db8::9"] }, nodeWith());
    expect(ips).toEqual({ ipv4: "172.18.0.2", ipv6: "2001:db8::9" });
    expect(sources).toEqual({ ipv4: "Node status", ipv6: "configured" });
    expect(nodeIPsOf({ nodeIPs: [] }, undefined).ips).toEqual({ ipv4: "127.0.0.1", ipv6: "::1" });
  });
});

describe("allowed sources of a LoadBalancer ingress IP", () => {
  const node = nodeWith({ internalIPs: ["172.18.0.2", "fd00:18::2"] });

  it.each<[string, string[] | undefined, readonly string[] | undefined]>([
    ["no ranges: unrestricted", undefined, undefined],
    ["an empty list: unrestricted", [], undefined],
    ["the pod CIDR only: pods in it", ["10.244.0.0/16"], ["10.244.0.0/16"]],
    [
      "a range holding the node IP: the node, through the LB IP it sends from",
      ["172.18.0.0/16"],
      ["172.18.0.0/16", "192.0.2.10/32"],
    ],
    ["/0 means any source, as kube-proxy reads it", ["10.244.0.0/16", "0.0.0.0/0"], undefined],
    ["ranges of the other family only: unrestricted", ["2001:db8::/32"], undefined],
    [
      "sorted, without repeats, the outermost of nested ranges",
      ["198.51.100.0/24", "10.244.0.0/16", " 10.244.0.0/16", "10.0.0.0/8", "10.1.0.0/16"],
      ["10.0.0.0/8", "198.51.100.0/24"],
    ],
    [
      "the LB IP inside a range the node is in: the range covers it",
      ["172.18.0.0/16", "192.0.2.0/24"],
      ["172.18.0.0/16", "192.0.2.0/24"],
    ],
    [
      "the LB IP's own /32 given as a range admits the node's traffic too",
      ["192.0.2.10/32"],
      ["192.0.2.10/32"],
    ],
  ])("%s", (_name, sourceRanges, expected) => {
    const services = [lbService({ sourceRanges })];
    expect(mappingsOf({ services, node })[0]?.allowedSources).toEqual(expected);
  });

  it("restricts IPv6 ingress IPs by the IPv6 ranges, with the node's IPv6 address", () => {
    const service = lbService({
      clusterIPs: ["10.96.0.10", "fd00:96::10"],
      ingress: [{ ip: "192.0.2.10" }, { ip: "2001:db8::10" }],
      sourceRanges: ["10.244.0.0/16", "fd00:18::/64", "fd00:244::/56"],
    });
    expect(sourcesOf({ services: [service], node, config: dualStack })).toEqual({
      "192.0.2.10": ["10.244.0.0/16"],
      "2001:db8::10": ["2001:db8::10/128", "fd00:18::/64", "fd00:244::/56"],
    });
  });

  it("leaves externalIPs unrestricted, as kube-proxy applies ranges to ingress IPs only", () => {
    const service = lbService({ externalIPs: ["198.51.100.7"], sourceRanges: ["10.244.0.0/16"] });
    expect(sourcesOf({ services: [service], node })).toEqual({
      "192.0.2.10": ["10.244.0.0/16"],
      "198.51.100.7": undefined,
    });
  });

  it("restricts an address listed both as ingress and as externalIP", () => {
    const service = lbService({ externalIPs: ["192.0.2.10"], sourceRanges: ["10.244.0.0/16"] });
    expect(sourcesOf({ services: [service], node })).toEqual({ "192.0.2.10": ["10.244.0.0/16"] });
  });

  it("reports entries that are not CIDRs and ignores them, keeping the others", () => {
    const service = lbService({ sourceRanges: ["10.244.0.0/16", "not-a-cidr", "10.0.0.0/33"] });
    const result = computeRuleset({ services: [service], node });
    expect(result.ruleset.families[0]?.mappings[0]?.allowedSources).toEqual(["10.244.0.0/16"]);
    expect(result.skipped.map((s) => [s.reason, s.detail])).toEqual([
      [
        "InvalidSourceRange",
        expect.stringMatching(/^spec\.loadBalancerSourceRanges\[1\]: .*"not-a-cidr".*ignored/),
      ],
      ["InvalidSourceRange", expect.stringMatching(/^spec\.loadBalancerSourceRanges\[2\]: /)],
    ]);
  });

  it("translates nothing when no range of the family can be read: what kube-proxy admits is unknown", () => {
    const service = lbService({ sourceRanges: ["garbage"] });
    const result = computeRuleset({ services: [service], node });
    expect(result.ruleset.families[0]?.mappings).toEqual([]);
    expect(result.skipped.map((s) => s.reason)).toEqual([
      "InvalidSourceRange",
      "InvalidSourceRange",
    ]);
    expect(result.skipped[1]?.detail).toMatch(/192\.0\.2\.10: .*not translated/);
  });

  it("uses the configured node IP over the Node's", () => {
    const services = [lbService({ sourceRanges: ["198.51.100.0/24"] })];
    const config = { nodeIPs: ["198.51.100.9"] };
    expect(mappingsOf({ services, node, config })[0]?.allowedSources).toEqual([
      "192.0.2.10/32",
      "198.51.100.0/24",
    ]);
  });

  it("counts allowed sources against the per-Service limit", () => {
    const service = lbService({
      ports: [{ port: 80 }, { port: 81 }],
      sourceRanges: ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"],
    });
    const result = computeRuleset({ services: [service], config: { maxMappingsPerService: 7 } });
    expect(result.skipped.map((s) => s.reason)).toEqual(["TooManyMappings"]);
    expect(result.skipped[0]?.detail).toMatch(/4 allowed sources \(loadBalancerSourceRanges\)/);
  });
});

describe("the engine follows the node's IPs", () => {
  it("re-admits the node when its IP moves into a range, as a change of that mapping only", () => {
    const engine = new RulesetEngine({ node: nodeWith({ internalIPs: ["172.18.0.2"] }) });
    engine.setService("default/web", lbService({ sourceRanges: ["198.51.100.0/24"] }));
    engine.setService("default/open", lbService({ name: "open", ingress: [{ ip: "192.0.2.11" }] }));
    engine.takeChanges();
    expect(engine.setNode(nodeWith({ internalIPs: ["198.51.100.2"] }))).toBe(true);
    const changes = engine.takeChanges();
    // Only the restricted Service's key is touched, with its new sources.
    expect(changes.removed).toEqual([]);
    expect(changes.mappings.map((m) => [m.externalIP, m.allowedSources])).toEqual([
      ["192.0.2.10", ["192.0.2.10/32", "198.51.100.0/24"]],
    ]);
    expect(engine.result().ruleset).toEqual(
      computeRuleset({
        services: [
          lbService({ sourceRanges: ["198.51.100.0/24"] }),
          lbService({ name: "open", ingress: [{ ip: "192.0.2.11" }] }),
        ],
        node: nodeWith({ internalIPs: ["198.51.100.2"] }),
      }).ruleset,
    );
  });
});

describe("the masquerade mark", () => {
  it("is for host-network traffic only, unless pod traffic is asked for", () => {
    expect(computeRuleset({ services: [] }).ruleset.markPodTraffic).toBe(false);
    const config = { masqueradePodTraffic: true };
    expect(computeRuleset({ services: [], config }).ruleset.markPodTraffic).toBe(true);
  });
});

/**
 * kube-proxy IPVS mode's source-range firewall, written out independently of the core: the
 * source may reach the LB IP when the Service lists no readable range of its family (or a /0), or
 * the source is inside one, or the source is the LB IP itself and the node IP is inside one.
 */
function kubeProxyAdmits(
  ranges: readonly string[] | undefined,
  lbIP: string,
  source: string,
  nodeIP: string,
): boolean {
  const family = lbIP.includes(":") ? "ipv6" : "ipv4";
  const own = (ranges ?? [])
    .map(parseSourceRange)
    .flatMap((parsed) => (parsed.ok && parsed.value.family === family ? [parsed.value.cidr] : []));
  if (own.length === 0 || own.some((cidr) => cidr.endsWith("/0"))) return true;
  if (own.some((cidr) => cidrContains(cidr, source))) return true;
  return source === lbIP && own.some((cidr) => cidrContains(cidr, nodeIP));
}

function translates(mapping: Mapping, source: string): boolean {
  return (
    mapping.allowedSources === undefined ||
    mapping.allowedSources.some((cidr) => cidrContains(cidr, source))
  );
}

describe("property: never open what kube-proxy keeps closed", () => {
  const octet = fc.integer({ min: 0, max: 255 });
  const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join("."));
  const prefix = fc.integer({ min: 0, max: 32 });
  const range = fc.oneof(
    { weight: 6, arbitrary: fc.tuple(ipv4, prefix).map(([a, p]) => `${a}/${p}`) },
    { weight: 1, arbitrary: fc.constantFrom("garbage", " 10.0.0.0/8 ", "2001:db8::/32", "") },
  );

  it("a source kube-proxy's firewall refuses is never translated, and one it admits is", () => {
    fc.assert(
      fc.property(
        fc.array(range, { maxLength: 4 }),
        ipv4,
        ipv4,
        fc.array(ipv4, { maxLength: 3 }),
        (ranges, lbIP, nodeIP, otherSources) => {
          fc.pre(!lbIP.startsWith("0.") && !lbIP.startsWith("127.") && !lbIP.startsWith("2"));
          const service = lbService({ ingress: [{ ip: lbIP }], sourceRanges: ranges });
          const node = nodeWith({ internalIPs: [nodeIP] });
          const mapping = mappingsOf({ services: [service], node })[0];
          for (const source of [lbIP, nodeIP, ...otherSources]) {
            const admitted = kubeProxyAdmits(ranges, lbIP, source, nodeIP);
            if (mapping === undefined) continue; // not translated at all: nothing opened
            expect(translates(mapping, source)).toBe(admitted);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
