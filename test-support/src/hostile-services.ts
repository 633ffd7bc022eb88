/**
 * A large set of Services, most of them good and some hostile, with what the controller must make
 * of each: the good ones' mappings (every one must reach the kernel), and for each bad one the
 * reasons it must be reported with, once. Deterministic: the same options give the same objects.
 *
 * Bad kinds cover wrong types in every field the core reads, very long strings, injection strings,
 * IPv4-mapped IPv6, zone IDs, leading zeros, addresses that are never external (loopback,
 * unspecified, multicast), a Service with 10,000 bad ports, duplicates and conflicting claims
 * across namespaces. Among the good ones is a Service with 10,000 ports.
 *
 * @example
 * ```ts
 * const set = hostileServiceSet({ good: 10_000, bad: 1_000 });
 * await writeFile(file, JSON.stringify({ apiVersion: "v1", kind: "List", items: set.services }));
 * // expectedMappings(set.good) must equal the kernel's map; each set.bad[i].token must be named once.
 * ```
 */
import { seededRandom } from "./seeded-random.js";

/** One bad Service and how it must be reported. */
export interface BadService {
  /** Which malformation it carries. */
  readonly kind: string;
  /** A text found in the reported name of this Service and of no other. */
  readonly token: string;
  /** The skip reasons it must be reported with (the core's vocabulary). */
  readonly reasons: readonly string[];
}

/** What {@link hostileServiceSet} returns. */
export interface HostileServiceSet {
  /** Every object, good and bad, in a deterministic shuffled order. */
  readonly services: readonly unknown[];
  /** The good Services (conflict winners included): all of their mappings must be applied. */
  readonly good: readonly unknown[];
  /** The bad Services and their expected reports. */
  readonly bad: readonly BadService[];
  /** Objects that are not Services the controller handles at all (no report, no mapping). */
  readonly ignored: number;
}

const CREATED = "2024-01-01T00:00:00Z";
const LATER = "2024-06-01T00:00:00Z";
const LONG = 100_000;

const PORTS = [
  { name: "http", port: 80, protocol: "TCP" },
  { name: "https", port: 443, protocol: "TCP" },
  { name: "quic", port: 443, protocol: "UDP" },
];

/** Cluster IP number i, in 10.96.0.0/12 (well-formed, never validated against a range here). */
function clusterIP(i: number): string {
  return `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

/** LB IP number i, in 172.16.0.0/12: unique per good Service. */
function lbIP(i: number): string {
  return `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

function pad(i: number, width: number): string {
  return String(i).padStart(width, "0");
}

/** A good LoadBalancer Service: one LB IP, three ports. */
export function goodLoadBalancer(i: number, overrides: { name?: string; ports?: unknown[] } = {}) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      namespace: "default",
      name: overrides.name ?? `good-${pad(i, 5)}`,
      creationTimestamp: CREATED,
    },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      clusterIP: clusterIP(i),
      clusterIPs: [clusterIP(i)],
      ports: overrides.ports ?? PORTS,
    },
    status: { loadBalancer: { ingress: [{ ip: lbIP(i), ipMode: "VIP" }] } },
  };
}

type Service = ReturnType<typeof goodLoadBalancer>;
type Mutation = (service: Service, token: string, i: number) => unknown;

/** The bad kinds: each mutates a good Service into one with exactly the listed reasons. */
const BAD_KINDS: readonly { kind: string; reasons: string[]; mutate: Mutation }[] = [
  // metadata
  {
    kind: "name-number",
    reasons: ["InvalidMetadata"],
    mutate: (s, _t, i) => ({ ...s, metadata: { ...s.metadata, name: 9_000_000 + i } }),
  },
  {
    kind: "name-upper-case",
    reasons: ["InvalidMetadata"],
    mutate: (s, t) => ({ ...s, metadata: { ...s.metadata, name: `${t}-Upper` } }),
  },
  {
    kind: "name-very-long",
    reasons: ["InvalidMetadata"],
    mutate: (s, t) => ({ ...s, metadata: { ...s.metadata, name: `${t}-${"x".repeat(LONG)}` } }),
  },
  {
    kind: "name-injection",
    reasons: ["InvalidMetadata"],
    mutate: (s, t) => ({
      ...s,
      metadata: { ...s.metadata, name: `${t}"; flush ruleset; add rule inet x y drop; "` },
    }),
  },
  {
    kind: "namespace-object",
    reasons: ["InvalidMetadata"],
    mutate: (s) => ({ ...s, metadata: { ...s.metadata, namespace: { evil: true } } }),
  },
  // LB ingress
  ...(
    [
      ["ingress-ip-number", 42],
      ["ingress-ip-object", { octets: [192, 0, 2, 1] }],
      ["ingress-ip-injection", '192.0.2.1"; flush ruleset'],
      ["ingress-ip-newline", "192.0.2.1\n-A INPUT -j DROP"],
      ["ingress-ip-mapped", "::ffff:198.51.100.7"],
      ["ingress-ip-zone", "fe80::1%eth0"],
      ["ingress-ip-leading-zeros", "198.051.100.007"],
      ["ingress-ip-hex", "0xc6.0x33.0x64.0x07"],
      ["ingress-ip-very-long", "1".repeat(LONG)],
      ["ingress-ip-loopback", "127.0.0.1"],
      ["ingress-ip-unspecified", "0.0.0.0"],
      ["ingress-ip-multicast", "224.0.0.1"],
      ["ingress-ip-broadcast", "255.255.255.255"],
    ] as const
  ).map(([kind, ip]) => ({
    kind,
    reasons: ["InvalidIP"],
    mutate: ((s) => ({ ...s, status: { loadBalancer: { ingress: [{ ip }] } } })) as Mutation,
  })),
  {
    kind: "ingress-null-entry",
    reasons: ["InvalidIP"],
    mutate: (s) => ({ ...s, status: { loadBalancer: { ingress: [null] } } }),
  },
  {
    kind: "ingress-ipv6-family-not-enabled",
    reasons: ["FamilyNotEnabled"],
    mutate: (s) => ({ ...s, status: { loadBalancer: { ingress: [{ ip: "2001:db8::7" }] } } }),
  },
  {
    kind: "ingress-ipmode-proxy",
    reasons: ["ProxyIPMode"],
    mutate: (s) => ({
      ...s,
      status: { loadBalancer: { ingress: [{ ip: "198.51.100.8", ipMode: "Proxy" }] } },
    }),
  },
  {
    kind: "ingress-hostname-only",
    reasons: ["HostnameOnlyIngress"],
    mutate: (s) => ({
      ...s,
      status: { loadBalancer: { ingress: [{ hostname: "lb.example.com" }] } },
    }),
  },
  {
    kind: "ingress-not-an-array",
    reasons: ["NoIngress"],
    mutate: (s) => ({ ...s, status: { loadBalancer: { ingress: "198.51.100.9" } } }),
  },
  {
    kind: "status-string",
    reasons: ["NoIngress"],
    mutate: (s) => ({ ...s, status: "up" }),
  },
  // cluster IP
  {
    kind: "cluster-ip-number",
    reasons: ["InvalidIP", "NoClusterIP"],
    mutate: (s) => ({ ...s, spec: { ...s.spec, clusterIP: 42, clusterIPs: [42] } }),
  },
  {
    kind: "cluster-ip-injection",
    reasons: ["InvalidIP", "NoClusterIP"],
    mutate: (s) => ({
      ...s,
      spec: { ...s.spec, clusterIP: "10.96.0.1; drop", clusterIPs: ["10.96.0.1; drop"] },
    }),
  },
  {
    kind: "cluster-ip-headless",
    reasons: ["NoClusterIP"],
    mutate: (s) => ({ ...s, spec: { ...s.spec, clusterIP: "None", clusterIPs: ["None"] } }),
  },
  // ports
  ...(
    [
      ["port-string", { port: "80", protocol: "TCP" }],
      ["port-out-of-range", { port: 70_000, protocol: "TCP" }],
      ["port-zero", { port: 0, protocol: "TCP" }],
      ["port-negative", { port: -80, protocol: "TCP" }],
      ["port-fraction", { port: 80.5, protocol: "TCP" }],
      ["port-null", { port: null, protocol: "TCP" }],
      ["protocol-unknown", { port: 80, protocol: "ICMP" }],
      ["protocol-number", { port: 80, protocol: 6 }],
      ["protocol-lower-case", { port: 80, protocol: "tcp" }],
    ] as const
  ).map(([kind, port]) => ({
    kind,
    reasons: ["InvalidPort", "NoPorts"],
    mutate: ((s) => ({ ...s, spec: { ...s.spec, ports: [port] } })) as Mutation,
  })),
  {
    kind: "ports-not-an-array",
    reasons: ["NoPorts"],
    mutate: (s) => ({ ...s, spec: { ...s.spec, ports: "80/TCP" } }),
  },
  // external IPs
  {
    kind: "external-ip-garbage",
    reasons: ["InvalidIP"],
    mutate: (s) => ({
      ...s,
      spec: { ...s.spec, type: "ClusterIP", externalIPs: ["not-an-ip"] },
      status: {},
    }),
  },
];

/** Objects that are nobody's business: no report, no mapping. */
const IGNORED: readonly ((i: number) => unknown)[] = [
  (i) => ({ ...goodLoadBalancer(i), spec: "LoadBalancer" }),
  (i) => ({
    ...goodLoadBalancer(i),
    spec: { type: "ClusterIP", clusterIP: clusterIP(i), externalIPs: "198.51.100.10" },
  }),
];

/**
 * `good` good Services (plus one with 10,000 ports, and the winners of the conflicts) and `bad`
 * hostile ones: every bad kind in turn, one Service with 10,000 bad ports, duplicates of good
 * Services, and Services losing a conflict to an older one in another namespace.
 */
export function hostileServiceSet(options: {
  readonly good: number;
  readonly bad: number;
  readonly seed?: number;
}): HostileServiceSet {
  const good: unknown[] = [];
  const bad: BadService[] = [];
  const badObjects: unknown[] = [];
  for (let i = 0; i < options.good; i++) good.push(goodLoadBalancer(i));
  let next = options.good;
  good.push(
    goodLoadBalancer(next++, {
      name: "many-ports",
      ports: Array.from({ length: 10_000 }, (_, p) => ({ name: `p${p}`, port: p + 1 })),
    }),
  );
  const addBad = (kind: string, token: string, reasons: string[], object: unknown) => {
    bad.push({ kind, token, reasons });
    badObjects.push(object);
  };
  addBad(
    "ports-10000-bad",
    "bad-flood",
    ["InvalidPort", "NoPorts"],
    goodLoadBalancer(next++, {
      name: "bad-flood",
      ports: Array.from({ length: 10_000 }, (_, p) => ({ port: 70_000 + p })),
    }),
  );
  let ignored = 0;
  for (let b = 0; bad.length < options.bad; b++) {
    const token = `bad-${pad(b, 5)}`;
    const slot = b % (BAD_KINDS.length + 2 + IGNORED.length);
    if (slot < BAD_KINDS.length) {
      const { kind, reasons, mutate } = BAD_KINDS[slot] as (typeof BAD_KINDS)[number];
      const i = next++;
      const object = mutate(goodLoadBalancer(i, { name: token }), token, i);
      // A name that is a number is found by that number.
      const shown = kind === "name-number" ? String(9_000_000 + i) : token;
      addBad(kind, shown, reasons, object);
    } else if (slot === BAD_KINDS.length) {
      // A duplicate: the very same Service listed twice claims its mappings twice.
      const original = goodLoadBalancer(b % Math.max(options.good, 1));
      addBad("duplicate", original.metadata.name, ["Conflict"], structuredClone(original));
    } else if (slot === BAD_KINDS.length + 1) {
      // Two namespaces claim one LB IP and port; the older Service wins, the other is reported.
      const i = next++;
      const winner = goodLoadBalancer(i, { name: `win-${pad(b, 5)}` });
      const loser = goodLoadBalancer(next++, { name: `lose-${pad(b, 5)}` });
      const claimed = {
        ...loser,
        metadata: { ...loser.metadata, namespace: "other", creationTimestamp: LATER },
        status: winner.status,
      };
      good.push(winner);
      addBad("conflict-across-namespaces", `other/lose-${pad(b, 5)}`, ["Conflict"], claimed);
    } else {
      const make = IGNORED[slot - BAD_KINDS.length - 2] as (i: number) => unknown;
      badObjects.push(make(next++));
      ignored += 1;
    }
  }
  const services = [...good, ...badObjects];
  const shuffle = seededRandom(options.seed ?? 1);
  for (let i = services.length - 1; i > 0; i--) {
    const j = Math.floor(shuffle() * (i + 1));
    [services[i], services[j]] = [services[j], services[i]];
  }
  return { services, good, bad, ignored };
}
