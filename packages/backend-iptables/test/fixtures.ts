/**
 * Hand-made rulesets and Service generators shared by this package's tests.
 */
import {
  type FamilyRuleset,
  type IpFamily,
  type L4Protocol,
  type LocalPodMatch,
  type Mapping,
  mappingKey,
  type Ruleset,
  type ServiceInput,
  sortMappings,
} from "@ipvs-node-controller/core";
import fc from "fast-check";

/** A Service as the API returns it: what the core reads, plus the object's kind. */
export type Service = ServiceInput & { readonly apiVersion: string; readonly kind: string };

/** A mapping with defaults that can be overridden field by field. */
export function mapping(
  externalIP: string,
  port: number,
  clusterIP: string,
  options: {
    protocol?: L4Protocol;
    namespace?: string;
    name?: string;
    allowedSources?: readonly string[];
  } = {},
): Mapping {
  return {
    family: externalIP.includes(":") ? "ipv6" : "ipv4",
    externalIP,
    protocol: options.protocol ?? "tcp",
    port,
    clusterIP,
    service: { namespace: options.namespace ?? "default", name: options.name ?? "web" },
    ...(options.allowedSources === undefined ? {} : { allowedSources: options.allowedSources }),
  };
}

/** One family's ruleset; mappings are sorted the way the core sorts them. */
export function family(
  ipFamily: IpFamily,
  localPods: LocalPodMatch,
  mappings: readonly Mapping[],
): FamilyRuleset {
  return { family: ipFamily, localPods, mappings };
}

export function ruleset(
  families: readonly FamilyRuleset[],
  masqueradeMark = 0x4000,
  markPodTraffic = false,
): Ruleset {
  return { masqueradeMark, markPodTraffic, families };
}

/** Strings that try to break out of an iptables-restore document, or are just invalid. */
export const HOSTILE_STRINGS = [
  '"',
  "'",
  "\\",
  "\n",
  "\r",
  " ",
  "\t",
  "#",
  "",
  '192.0.2.1" -j ACCEPT "',
  "192.0.2.1\n-A INPUT -j DROP",
  "192.0.2.1 -j ACCEPT",
  "web\nCOMMIT",
  'web" --comment "x',
  "web -j DROP",
  "$(reboot)",
  "`id`",
  "::ffff:192.0.2.1",
  "fe80::1%eth0",
  "192.0.2.01",
  "2001:DB8::1",
  "2001:db8:0:0:0:0:0:1",
  "10.0.0.0/33",
  "10.0.0.1/24",
  "eth0+",
  "a-very-long-interface-name",
  "Web",
  "-web",
] as const;

export const hostileString = fc.constantFrom(...HOSTILE_STRINGS);

const ipv4 = fc
  .tuple(fc.constantFrom(192, 198, 203), fc.nat(3), fc.integer({ min: 1, max: 9 }))
  .map(([a, c, d]) => `${a}.0.${c}.${d}`);
const ipv6 = fc
  .tuple(fc.constantFrom("2001:db8", "fd00"), fc.nat(3), fc.integer({ min: 1, max: 15 }))
  .map(([prefix, b, d]) => `${prefix}:${b}::${d.toString(16)}`);

/** A string that is usually valid for its slot and sometimes hostile. */
function sometimesHostile<T>(valid: fc.Arbitrary<T>): fc.Arbitrary<T | string> {
  return fc.oneof({ weight: 6, arbitrary: valid }, { weight: 1, arbitrary: hostileString });
}

/** A Service as the API could return it, mostly valid, sometimes carrying hostile strings. */
export const serviceArbitrary: fc.Arbitrary<Service> = fc
  .record({
    namespace: sometimesHostile(fc.constantFrom("default", "kube-system", "team-a")),
    name: sometimesHostile(fc.constantFrom("web", "dns", "api-v2", "db")),
    dualStack: fc.boolean(),
    clusterIP4: sometimesHostile(ipv4.map((ip) => ip.replace(/^\d+/, "10"))),
    clusterIP6: ipv6.map((ip) => ip.replace(/^[^:]+:[^:]+/, "fd00:96")),
    ingress: fc.array(sometimesHostile(fc.oneof(ipv4, ipv6)), { maxLength: 3 }),
    externalIPs: fc.array(sometimesHostile(fc.oneof(ipv4, ipv6)), { maxLength: 2 }),
    ports: fc.array(
      fc.record({
        port: fc.oneof(fc.constantFrom(53, 80, 443, 8443), fc.integer({ min: 1, max: 65535 })),
        protocol: fc.constantFrom("TCP", "UDP", "SCTP"),
      }),
      { minLength: 1, maxLength: 3 },
    ),
  })
  .map(
    (s): Service => ({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: s.namespace, name: s.name, creationTimestamp: new Date(0) },
      spec: {
        type: "LoadBalancer",
        externalTrafficPolicy: "Local",
        clusterIP: s.clusterIP4,
        clusterIPs: s.dualStack ? [s.clusterIP4, s.clusterIP6] : [s.clusterIP4],
        externalIPs: s.externalIPs,
        ports: s.ports.map((p, i) => ({ name: `p${i}`, port: p.port, protocol: p.protocol })),
      },
      status: { loadBalancer: { ingress: s.ingress.map((ip) => ({ ip })) } },
    }),
  );

/**
 * External IPs whose text order differs from their numeric order (`192.0.2.10` < `192.0.2.9` as
 * text), so that an order kept by text rather than by address shows. Their last bytes, which pick
 * the DNAT bucket, are in yet another order; two of them share one bucket (0A), and one falls into
 * bucket 00, whose IPv6 jump iptables prints as `::/::ff`.
 */
const EXTERNAL_IPS = {
  ipv4: ["192.0.2.9", "192.0.2.10", "192.0.2.100", "198.51.100.0", "198.51.100.1", "198.51.100.10"],
  ipv6: [
    "2001:db8::9",
    "2001:db8::a",
    "2001:db8::10",
    "2001:db8::100",
    "2001:db8:1::1",
    "2001:db8:1::a",
  ],
} as const;
const CLUSTER_IPS = {
  ipv4: ["10.96.0.1", "10.96.0.2", "10.96.0.3"],
  ipv6: ["fd00:96::1", "fd00:96::2", "fd00:96::3"],
} as const;
/** Restrictions a mapping may carry: none (most), or one of a few lists of admitted sources. */
const SOURCES = {
  ipv4: [undefined, undefined, ["10.244.0.0/16"], ["10.244.1.0/24", "172.18.0.0/16"]],
  ipv6: [undefined, undefined, ["fd00:10:244::/48"], ["2001:db8:100::/64", "fd00:10:244::/48"]],
} as const;

/**
 * A small dual-stack ruleset in canonical form (both families enabled with pod CIDRs, mark 0x4000)
 * whose mappings come from a pool of 72 keys per family (6 addresses, 3 protocols, 4 ports), so
 * that two of them share many keys and differ in a few, some only in their cluster IP, owner or
 * admitted sources, and DNAT buckets (and source chains) appear and empty between them.
 */
export const rulesetArbitrary: fc.Arbitrary<Ruleset> = fc
  .array(
    fc.record({
      family: fc.constantFrom<IpFamily>("ipv4", "ipv6"),
      ip: fc.nat(5),
      protocol: fc.constantFrom<L4Protocol>("tcp", "udp", "sctp"),
      port: fc.constantFrom(53, 80, 443, 8080),
      cluster: fc.nat(2),
      name: fc.constantFrom("web", "api"),
      sources: fc.nat(3),
    }),
    { maxLength: 12 },
  )
  .map((entries) => {
    const byKey = new Map<string, Mapping>();
    for (const e of entries) {
      const m = mapping(
        EXTERNAL_IPS[e.family][e.ip] as string,
        e.port,
        CLUSTER_IPS[e.family][e.cluster] as string,
        {
          protocol: e.protocol,
          name: e.name,
          allowedSources: SOURCES[e.family][e.sources],
        },
      );
      byKey.set(mappingKey(m), m);
    }
    const sorted = sortMappings([...byKey.values()]);
    return ruleset([
      family(
        "ipv4",
        { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] },
        sorted.filter((m) => m.family === "ipv4"),
      ),
      family(
        "ipv6",
        { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64"] },
        sorted.filter((m) => m.family === "ipv6"),
      ),
    ]);
  });

/** The settings of {@link ruleset} by default: kube-proxy's mark, pod traffic unmarked. */
export const SETTINGS = { masqueradeMark: 0x4000, markPodTraffic: false } as const;
