/**
 * fast-check generators for Services as the API might return them: mostly valid, sometimes hostile.
 * Exported for the backends' property tests as well.
 */
import type { V1Service } from "@kubernetes/client-node";
import fc from "fast-check";

/** Strings that try to break out of an nft or iptables document. */
export const hostileString = fc.constantFrom(
  '"',
  "'",
  ";",
  "\n",
  "#",
  "}",
  "\\",
  '192.0.2.1"; flush ruleset; "',
  "10.0.0.1\n-A INPUT -j DROP",
  "web # comment",
  "$(reboot)",
  "`id`",
  "::ffff:192.0.2.1",
  "fe80::1%eth0",
  "192.0.2.01",
  "",
);

const ipv4 = fc
  .tuple(fc.constantFrom(192, 198, 203, 10), fc.nat(3), fc.nat(3), fc.integer({ min: 1, max: 6 }))
  .map(([a, b, c, d]) => `${a}.${b}.${c}.${d}`);
const ipv6 = fc
  .tuple(fc.constantFrom("2001:db8", "2001:DB8", "fd00"), fc.nat(3), fc.integer({ min: 1, max: 6 }))
  .map(([prefix, b, d]) => `${prefix}:0:${b}::${d.toString(16)}`);
const address = fc.oneof(
  { weight: 5, arbitrary: ipv4 },
  { weight: 3, arbitrary: ipv6 },
  { weight: 1, arbitrary: hostileString },
);
const label = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.constantFrom("web", "dns", "api", "db", "default", "kube-system", "team-a"),
  },
  { weight: 1, arbitrary: hostileString },
);
const port = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(53, 80, 443, 8080) },
  { weight: 1, arbitrary: fc.constantFrom(0, 70000, -1, 1.5, "80" as unknown as number) },
);
const protocol = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom("TCP", "UDP", "SCTP", undefined) },
  { weight: 1, arbitrary: fc.constantFrom("ICMP", "tcp;", "") },
);

/** One Service; clusterIPs may be single- or dual-stack, headless, or hostile. */
export const serviceArbitrary: fc.Arbitrary<V1Service> = fc
  .record({
    namespace: label,
    name: label,
    type: fc.constantFrom("LoadBalancer", "LoadBalancer", "ClusterIP", "NodePort"),
    clusterIPs: fc.oneof(
      fc.tuple(ipv4).map((t) => [...t]),
      fc.tuple(ipv4, ipv6).map((t) => [...t]),
      fc.tuple(ipv6).map((t) => [...t]),
      fc.constant(["None"] as string[]),
      fc.array(address, { maxLength: 2 }),
    ),
    ingress: fc.array(
      fc.record(
        {
          ip: address,
          hostname: fc.constantFrom("lb.example.com"),
          ipMode: fc.constantFrom("VIP", "Proxy"),
        },
        { requiredKeys: [] },
      ),
      { maxLength: 3 },
    ),
    externalIPs: fc.option(fc.array(address, { maxLength: 2 }), { nil: undefined }),
    ports: fc.array(fc.record({ port, protocol }), { maxLength: 3 }),
    local: fc.boolean(),
    optOut: fc.boolean(),
    created: fc.integer({ min: 0, max: 5 }),
  })
  .map((s) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      namespace: s.namespace,
      name: s.name,
      creationTimestamp: new Date(Date.UTC(2024, 0, 1 + s.created)),
      annotations: s.optOut ? { "ipvs-node-controller.io/skip": "true" } : undefined,
    },
    spec: {
      type: s.type,
      clusterIP: s.clusterIPs[0],
      clusterIPs: s.clusterIPs,
      externalIPs: s.externalIPs,
      externalTrafficPolicy: s.local ? "Local" : "Cluster",
      ports: s.ports as never,
    },
    status: { loadBalancer: { ingress: s.ingress } },
  }));

/** A list of Services. */
export const servicesArbitrary = fc.array(serviceArbitrary, { maxLength: 12 });
