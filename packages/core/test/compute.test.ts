import { describe, expect, it } from "vitest";
import {
  ConfigError,
  computeRuleset,
  type Mapping,
  type RulesetInput,
  SKIP_ANNOTATION,
  type SkipReason,
} from "../src/index.js";
import { lbService } from "./fixtures.js";

const bothFamilies = { families: ["ipv4", "ipv6"] as const };

function mappingsOf(input: RulesetInput): Mapping[] {
  return computeRuleset(input).ruleset.families.flatMap((family) => family.mappings);
}

function reasonsOf(input: RulesetInput): SkipReason[] {
  return computeRuleset(input).skipped.map((entry) => entry.reason);
}

describe("mappings", () => {
  it("maps the ingress IP and Service port (not targetPort or nodePort) to the cluster IP", () => {
    expect(mappingsOf({ services: [lbService()] })).toEqual([
      {
        family: "ipv4",
        externalIP: "192.0.2.10",
        protocol: "tcp",
        port: 80,
        clusterIP: "10.96.0.10",
        service: { namespace: "default", name: "web" },
      },
    ]);
  });

  it.each([
    ["TCP", "tcp"],
    ["UDP", "udp"],
    ["SCTP", "sctp"],
    [undefined, "tcp"],
  ])("handles protocol %s as %s", (protocol, expected) => {
    const [mapping] = mappingsOf({ services: [lbService({ ports: [{ port: 53, protocol }] })] });
    expect(mapping?.protocol).toBe(expected);
  });

  it("maps every port of the Service", () => {
    const service = lbService({
      ports: [
        { port: 80, protocol: "TCP" },
        { port: 443, protocol: "TCP" },
        { port: 443, protocol: "UDP" },
      ],
    });
    expect(mappingsOf({ services: [service] }).map((m) => `${m.protocol}/${m.port}`)).toEqual([
      "tcp/80",
      "tcp/443",
      "udp/443",
    ]);
  });

  it("takes every ingress IP and every externalIP", () => {
    const service = lbService({
      ingress: [{ ip: "192.0.2.10" }, { ip: "192.0.2.11" }],
      externalIPs: ["198.51.100.7"],
    });
    expect(mappingsOf({ services: [service] }).map((m) => m.externalIP)).toEqual([
      "192.0.2.10",
      "192.0.2.11",
      "198.51.100.7",
    ]);
  });

  it("takes externalIPs of a ClusterIP Service", () => {
    const service = lbService({ type: "ClusterIP", ingress: [], externalIPs: ["198.51.100.7"] });
    expect(mappingsOf({ services: [service] }).map((m) => m.externalIP)).toEqual(["198.51.100.7"]);
  });

  it("ignores externalIPs when they are turned off, and ingress of non-LoadBalancer Services", () => {
    const service = lbService({ type: "ClusterIP", externalIPs: ["198.51.100.7"] });
    expect(mappingsOf({ services: [service], config: { externalIPs: false } })).toEqual([]);
    expect(computeRuleset({ services: [service], config: { externalIPs: false } }).skipped).toEqual(
      [],
    );
  });

  it("lists an IP that appears as ingress and externalIP once", () => {
    const service = lbService({ externalIPs: ["192.0.2.10"] });
    expect(mappingsOf({ services: [service] })).toHaveLength(1);
  });

  it("maps each family of a dual-stack Service to its own cluster IP", () => {
    const service = lbService({
      clusterIPs: ["10.96.0.10", "fd00:10:96::a"],
      ingress: [{ ip: "192.0.2.10" }, { ip: "2001:DB8::0:10" }],
    });
    expect(
      mappingsOf({ services: [service], config: bothFamilies }).map((m) => [
        m.externalIP,
        m.clusterIP,
      ]),
    ).toEqual([
      ["192.0.2.10", "10.96.0.10"],
      ["2001:db8::10", "fd00:10:96::a"],
    ]);
  });

  it("falls back to spec.clusterIP when spec.clusterIPs is absent", () => {
    const service = lbService();
    delete service.spec?.clusterIPs;
    expect(mappingsOf({ services: [service] })[0]?.clusterIP).toBe("10.96.0.10");
  });
});

describe("skips, each with a reason", () => {
  it.each<[string, Parameters<typeof lbService>[0], SkipReason]>([
    ["headless", { clusterIP: "None", clusterIPs: ["None"] }, "NoClusterIP"],
    ["no cluster IP", { clusterIP: "", clusterIPs: [] }, "NoClusterIP"],
    ["hostname-only ingress", { ingress: [{ hostname: "lb.example.com" }] }, "HostnameOnlyIngress"],
    ["ipMode Proxy", { ingress: [{ ip: "192.0.2.10", ipMode: "Proxy" }] }, "ProxyIPMode"],
    ["no ingress yet", { ingress: [] }, "NoIngress"],
    [
      "IPv6 IP without an IPv6 cluster IP",
      { ingress: [{ ip: "2001:db8::1" }] },
      "NoClusterIPForFamily",
    ],
    ["opt-out annotation", { annotations: { [SKIP_ANNOTATION]: "true" } }, "OptedOut"],
    ["no ports", { ports: [] }, "NoPorts"],
  ])("%s", (_, options, reason) => {
    const input = { services: [lbService(options)], config: bothFamilies };
    expect(mappingsOf(input)).toEqual([]);
    expect(reasonsOf(input)).toContain(reason);
  });

  it("keeps ipMode VIP ingress", () => {
    expect(
      mappingsOf({ services: [lbService({ ingress: [{ ip: "192.0.2.10", ipMode: "VIP" }] })] }),
    ).toHaveLength(1);
  });

  it("skips a family that is not enabled (IPv4 only by default)", () => {
    const service = lbService({
      clusterIPs: ["10.96.0.10", "fd00::a"],
      ingress: [{ ip: "192.0.2.10" }, { ip: "2001:db8::1" }],
    });
    const result = computeRuleset({ services: [service] });
    expect(result.ruleset.families.map((f) => f.family)).toEqual(["ipv4"]);
    expect(result.skipped.map((s) => s.reason)).toEqual(["FamilyNotEnabled"]);
    expect(
      mappingsOf({ services: [service], config: { families: ["ipv6"] } }).map((m) => m.family),
    ).toEqual(["ipv6"]);
  });

  it("handles only Local Services when asked", () => {
    const cluster = lbService({ name: "cluster", externalTrafficPolicy: "Cluster" });
    const local = lbService({ name: "local", ingress: [{ ip: "192.0.2.20" }] });
    const input = { services: [cluster, local], config: { onlyLocalTrafficPolicy: true } };
    expect(mappingsOf(input).map((m) => m.service.name)).toEqual(["local"]);
    expect(reasonsOf(input)).toEqual(["NotLocalTrafficPolicy"]);
    expect(mappingsOf({ services: [cluster, local] })).toHaveLength(2);
  });

  it("does not report plain ClusterIP Services", () => {
    const plain = lbService({ type: "ClusterIP" });
    expect(computeRuleset({ services: [plain] }).skipped).toEqual([]);
  });
});

describe("conflicts", () => {
  const older = lbService({
    name: "older",
    clusterIP: "10.96.0.1",
    created: "2023-01-01T00:00:00Z",
  });
  const newer = lbService({
    name: "newer",
    clusterIP: "10.96.0.2",
    created: "2024-01-01T00:00:00Z",
  });

  it("gives the (IP, protocol, port) to the oldest Service and reports the loser", () => {
    for (const services of [
      [older, newer],
      [newer, older],
    ]) {
      const result = computeRuleset({ services });
      expect(result.ruleset.families[0]?.mappings.map((m) => m.service.name)).toEqual(["older"]);
      expect(result.conflicts).toEqual([
        {
          family: "ipv4",
          externalIP: "192.0.2.10",
          protocol: "tcp",
          port: 80,
          winner: "default/older",
          loser: "default/newer",
        },
      ]);
      expect(result.skipped.map((s) => [s.service, s.reason])).toEqual([
        ["default/newer", "Conflict"],
      ]);
    }
  });

  it("breaks a creation-time tie by namespace/name", () => {
    const a = lbService({ namespace: "a", clusterIP: "10.96.0.1" });
    const b = lbService({ namespace: "b", clusterIP: "10.96.0.2" });
    expect(mappingsOf({ services: [b, a] })[0]?.service.namespace).toBe("a");
  });

  it("lets two Services share an IP on different ports", () => {
    const http = lbService({ name: "http", clusterIP: "10.96.0.1", ports: [{ port: 80 }] });
    const dns = lbService({
      name: "dns",
      clusterIP: "10.96.0.2",
      ports: [{ port: 53, protocol: "UDP" }],
    });
    const result = computeRuleset({ services: [http, dns] });
    expect(result.conflicts).toEqual([]);
    expect(result.ruleset.families[0]?.mappings.map((m) => [m.service.name, m.clusterIP])).toEqual([
      ["http", "10.96.0.1"],
      ["dns", "10.96.0.2"],
    ]);
  });

  it("does not treat the same port on TCP and UDP as a conflict", () => {
    const tcp = lbService({ name: "tcp", ports: [{ port: 53, protocol: "TCP" }] });
    const udp = lbService({ name: "udp", ports: [{ port: 53, protocol: "UDP" }] });
    expect(computeRuleset({ services: [tcp, udp] }).conflicts).toEqual([]);
  });
});

describe("local traffic detection and the mark", () => {
  it("uses the Node's pod CIDRs by default, per family, canonical", () => {
    const { ruleset, warnings } = computeRuleset({
      services: [],
      node: { spec: { podCIDRs: ["10.244.1.0/24", "FD00:10:244:1::/64"] } },
      config: bothFamilies,
    });
    expect(ruleset.families.map((f) => f.localPods)).toEqual([
      { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] },
      { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64"] },
    ]);
    expect(warnings).toEqual([]);
  });

  it("warns and matches no pod traffic when the Node has no pod CIDR (host traffic still covered)", () => {
    const { ruleset, warnings } = computeRuleset({ services: [] });
    expect(ruleset.families[0]?.localPods).toEqual({ kind: "sourceCIDRs", cidrs: [] });
    expect(warnings[0]).toMatch(/no ipv4 pod CIDR/);
  });

  it("ignores a malformed node pod CIDR with a warning", () => {
    const { ruleset, warnings } = computeRuleset({
      services: [],
      node: { spec: { podCIDRs: ["10.244.1.0/24", "nope"] } },
    });
    expect(ruleset.families[0]?.localPods).toEqual({
      kind: "sourceCIDRs",
      cidrs: ["10.244.1.0/24"],
    });
    expect(warnings[0]).toMatch(/"nope"/);
  });

  it.each([
    [
      { mode: "ClusterCIDR", cidrs: ["10.244.0.0/16"] },
      { kind: "sourceCIDRs", cidrs: ["10.244.0.0/16"] },
    ],
    [
      { mode: "BridgeInterface", interfaceName: "cni0" },
      { kind: "inputInterface", name: "cni0" },
    ],
    [
      { mode: "InterfaceNamePrefix", interfacePrefix: "cali" },
      { kind: "inputInterfacePrefix", prefix: "cali" },
    ],
  ] as const)("models %o", (localDetection, expected) => {
    const { ruleset } = computeRuleset({
      services: [],
      node: { spec: { podCIDRs: ["10.9.9.0/24"] } },
      config: { localDetection },
    });
    expect(ruleset.families[0]?.localPods).toEqual(expected);
  });

  it.each([
    [14, 0x4000],
    [0, 1],
    [31, 0x80000000],
  ])("turns masquerade bit %i into mark %i", (masqueradeBit, mark) => {
    expect(computeRuleset({ services: [], config: { masqueradeBit } }).ruleset.masqueradeMark).toBe(
      mark,
    );
  });
});

describe("a cap on the mappings of one Service", () => {
  it("skips a Service asking for more, before building any of them", () => {
    const ports = Array.from({ length: 1_000 }, (_, p) => ({ port: p + 1, protocol: "TCP" }));
    const externalIPs = Array.from({ length: 100 }, (_, i) => `198.51.100.${i + 1}`);
    const result = computeRuleset({
      services: [lbService({ name: "huge", ports, externalIPs }), lbService({ name: "web" })],
    });
    expect(result.skipped).toEqual([
      {
        service: "default/huge",
        reason: "TooManyMappings",
        detail:
          "101 external addresses × 1000 ports ask for 101000 mappings, more than the 65536 allowed per Service",
      },
    ]);
    expect(mappingsOf({ services: [lbService({ name: "web" })] })).toHaveLength(1);
    expect(result.ruleset.families[0]?.mappings.map((m) => m.service.name)).toEqual(["web"]);
  });

  it("takes the limit from the configuration, and refuses a bad one", () => {
    const service = lbService({ ports: [{ port: 80 }, { port: 81 }] });
    expect(reasonsOf({ services: [service], config: { maxMappingsPerService: 1 } })).toEqual([
      "TooManyMappings",
    ]);
    expect(mappingsOf({ services: [service], config: { maxMappingsPerService: 2 } })).toHaveLength(
      2,
    );
    expect(() => computeRuleset({ services: [], config: { maxMappingsPerService: 0 } })).toThrow(
      ConfigError,
    );
  });
});

describe("bad configuration throws a ConfigError naming the value", () => {
  it.each([
    [{ masqueradeBit: 32 }, /masquerade bit: 32/],
    [{ masqueradeBit: 1.5 }, /masquerade bit/],
    [{ families: [] }, /at least one IP family/],
    [{ families: ["ipv5"] }, /"ipv5"/],
    [{ localDetection: { mode: "ClusterCIDR", cidrs: ["10.0.0.0/33"] } }, /"10.0.0.0\/33"/],
    [{ localDetection: { mode: "ClusterCIDR", cidrs: [] } }, /at least one CIDR/],
    [
      { localDetection: { mode: "BridgeInterface", interfaceName: 'cni0"; drop' } },
      /not a valid interface name/,
    ],
    [
      { localDetection: { mode: "InterfaceNamePrefix", interfacePrefix: "a-very-long-interface" } },
      /not a valid interface prefix/,
    ],
    [
      { localDetection: { mode: "InterfaceNamePrefix", interfacePrefix: "fifteen-chars-x" } },
      /not a valid interface prefix \(1–14/,
    ],
    [{ localDetection: { mode: "Magic" } }, /"Magic"/],
  ])("%o", (config, message) => {
    expect(() => computeRuleset({ services: [], config: config as never })).toThrow(ConfigError);
    expect(() => computeRuleset({ services: [], config: config as never })).toThrow(message);
  });
});
