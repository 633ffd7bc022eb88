/**
 * The doctor's verdict without a kernel: facts in, findings out. Each rule of what counts as wrong
 * (and what is only a note, because the rules are inert for addresses that are not local) has a
 * case here.
 */
import {
  type CoreConfig,
  computeRuleset,
  type LiveMapping,
  type LiveRules,
  type NodeInput,
  resolveConfig,
  type ServiceInput,
} from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import { buildDoctorReport, type DoctorFacts, probeKey } from "../../src/doctor/evaluate.js";
import type { ProbeOutcome } from "../../src/doctor/schema.js";
import { formatDoctorReport } from "../../src/doctor/text.js";

const service = (
  name: string,
  lbIP: string,
  clusterIP: string,
  ports: { port: number; protocol?: string }[] = [{ port: 80 }],
): ServiceInput => ({
  metadata: { namespace: "default", name },
  spec: { type: "LoadBalancer", clusterIP, ports },
  status: { loadBalancer: { ingress: [{ ip: lbIP }] } },
});

const WEB = service("web", "192.0.2.10", "10.96.0.10");
const API = service("api", "192.0.2.11", "10.96.0.11", [
  { port: 443 },
  { port: 53, protocol: "UDP" },
]);

const live = (
  externalIP: string,
  port: number,
  clusterIP: string,
  owner = "default/web",
  protocol: LiveMapping["protocol"] = "tcp",
): LiveMapping => ({ family: "ipv4", externalIP, protocol, port, clusterIP, owner });

const WEB_RULE = live("192.0.2.10", 80, "10.96.0.10");
const API_RULES = [
  live("192.0.2.11", 53, "10.96.0.11", "default/api", "udp"),
  live("192.0.2.11", 443, "10.96.0.11", "default/api"),
];

const rules = (mappings: LiveMapping[], problems: string[] = []): DoctorFacts["live"] => ({
  ok: true,
  rules: {
    backend: "nft",
    tool: "nft",
    present: mappings.length > 0 || problems.length > 0,
    mappings,
    problems,
  } satisfies LiveRules,
});

const NOTHING: DoctorFacts["otherLive"] = {
  ok: true,
  rules: { backend: "iptables", tool: "iptables-save", present: false, mappings: [], problems: [] },
};

/** Facts of an IPVS node (both LB IPs local) where everything is in place, with overrides. */
function facts(
  overrides: Partial<DoctorFacts> & {
    services?: ServiceInput[];
    node?: NodeInput;
    configOverrides?: Partial<CoreConfig>;
  } = {},
): DoctorFacts {
  const { services = [WEB, API], configOverrides, ...rest } = overrides;
  const config = resolveConfig({ extraPodCIDRs: ["10.244.1.0/24"], ...configOverrides });
  return {
    source: { kind: "files", services: "services.yaml" },
    nodeName: "worker-1",
    kernel: "6.1.0",
    network: {
      ok: true,
      localAddresses: new Set(["192.0.2.10", "192.0.2.11", "10.96.0.10", "10.96.0.11"]),
      kubeIpvsInterface: true,
    },
    nftVersion: { ok: true, version: "nftables v1.0.6" },
    iptablesVariant: { ok: true, variant: "nft", reason: "iptables-nft sees more rules" },
    config,
    result: computeRuleset({ services, node: rest.node, config }),
    backend: "nft",
    live: rules([WEB_RULE, ...API_RULES]),
    otherLive: NOTHING,
    ...rest,
  };
}

const codes = (findings: readonly { code: string }[]) => findings.map((finding) => finding.code);

const probes = (entries: [string, number, ProbeOutcome["result"]][]) =>
  new Map(entries.map(([ip, port, result]) => [probeKey(ip, port), { result }]));

describe("buildDoctorReport", () => {
  it("calls an IPVS node with every translation in place working, Service by Service", () => {
    const report = buildDoctorReport(facts());
    expect(report).toMatchObject({ version: 1, ok: true, verdict: "working", problems: [] });
    expect(report.summary).toMatch(/^affected, and the fix works: 2 of 2 external IPs are local/);
    expect(report.summary).toMatch(/--probe/);
    expect(report.node).toEqual({
      name: "worker-1",
      kernel: "6.1.0",
      kubeIpvsInterface: true,
      externalIPs: [{ family: "ipv4", total: 2, local: 2 }],
      ips: [{ family: "ipv4", address: "127.0.0.1", source: "none known: loopback" }],
    });
    expect(report.restrictions).toEqual([]);
    expect(report.services.map((status) => status.service)).toEqual(["default/api", "default/web"]);
    expect(report.services[1]?.mappings).toEqual([
      {
        family: "ipv4",
        externalIP: "192.0.2.10",
        protocol: "tcp",
        port: 80,
        clusterIP: "10.96.0.10",
        local: true,
        rule: "present",
      },
    ]);
    expect(report.rules).toEqual({
      backend: "nft",
      tool: "nft",
      present: true,
      mappings: 3,
      problems: [],
    });
  });

  it("finds a missing rule for a local address wrong, and names it", () => {
    const report = buildDoctorReport(facts({ live: rules(API_RULES) }));
    expect(report.ok).toBe(false);
    expect(report.verdict).toBe("broken");
    expect(report.problems).toEqual([
      {
        code: "RuleMissing",
        message:
          "default/web: no rule translates 192.0.2.10 tcp/80 to 10.96.0.10, a local address of this node",
      },
    ]);
    expect(report.services[1]?.mappings[0]?.rule).toBe("missing");
  });

  it("finds a rule to another cluster IP wrong", () => {
    const report = buildDoctorReport(
      facts({ live: rules([live("192.0.2.10", 80, "10.96.0.99"), ...API_RULES]) }),
    );
    expect(codes(report.problems)).toEqual(["RuleWrongTarget"]);
    expect(report.problems[0]?.message).toMatch(
      /sends traffic to 10\.96\.0\.99, not to its cluster IP 10\.96\.0\.10/,
    );
    expect(report.services[1]?.mappings[0]).toMatchObject({
      rule: "wrong-target",
      liveClusterIP: "10.96.0.99",
    });
  });

  it("counts a rule that names another owner but translates as wanted as in place", () => {
    const report = buildDoctorReport(
      facts({ live: rules([{ ...WEB_RULE, owner: "default/previous" }, ...API_RULES]) }),
    );
    expect(report).toMatchObject({ ok: true, verdict: "working", problems: [], staleRules: [] });
    expect(report.services[1]?.mappings[0]).toMatchObject({ rule: "present" });
  });

  it("finds a rule no Service wants wrong, and a second rule for one key too", () => {
    const old = live("192.0.2.10", 8080, "10.96.0.77", "default/old");
    const report = buildDoctorReport(
      facts({
        live: rules([WEB_RULE, { ...WEB_RULE, clusterIP: "10.96.0.1" }, old, ...API_RULES]),
      }),
    );
    expect(codes(report.problems)).toEqual(["StaleRule", "StaleRule"]);
    expect(report.staleRules).toEqual([
      { ...WEB_RULE, clusterIP: "10.96.0.1", local: true },
      { ...old, local: true },
    ]);
    expect(report.problems[1]?.message).toBe(
      "a rule (named default/old) translates 192.0.2.10 tcp/8080 to 10.96.0.77, which no Service wants",
    );
  });

  it("calls a node without local external IPs inert, and its missing or stale rules notes", () => {
    const network: DoctorFacts["network"] = {
      ok: true,
      localAddresses: new Set(["10.0.0.5"]),
      kubeIpvsInterface: false,
    };
    const inert = buildDoctorReport(facts({ network }));
    expect(inert).toMatchObject({ ok: true, verdict: "inert", problems: [], notes: [] });
    expect(inert.summary).toBe(
      "not affected: 0 of 2 external IPs are local addresses of this node (no kube-ipvs0), so the rules are inert here, by design (kube-proxy binds external IPs to the node only in IPVS mode)",
    );
    const drifted = buildDoctorReport(
      facts({
        network,
        live: rules(
          [live("192.0.2.10", 80, "10.96.0.99"), live("192.0.2.99", 80, "10.96.0.9")],
          ["chain output is missing"],
        ),
      }),
    );
    expect(drifted).toMatchObject({ ok: true, verdict: "inert", problems: [] });
    expect(codes(drifted.notes)).toEqual([
      "InertRuleWrongTarget",
      "InertRuleMissing",
      "InertRuleMissing",
      "InertStaleRule",
      "InertRulesDamaged",
    ]);
  });

  it("finds damage around the translations wrong where an address is local", () => {
    const report = buildDoctorReport(
      facts({ live: rules([WEB_RULE, ...API_RULES], ["chain output is missing"]) }),
    );
    expect(report.problems).toEqual([
      {
        code: "RulesDamaged",
        message: "the nft rules differ from what a sync writes: chain output is missing",
      },
    ]);
  });

  it("finds rules it cannot read wrong, and leaves every rule unknown", () => {
    const report = buildDoctorReport(
      facts({
        live: { ok: false, error: "/opt/nft could not be started: ENOENT", notStarted: true },
      }),
    );
    expect(report.problems).toEqual([
      {
        code: "RulesUnreadable",
        message: "cannot read the nft rules: /opt/nft could not be started: ENOENT",
      },
    ]);
    expect(report.services.flatMap((status) => status.mappings.map((m) => m.rule))).toEqual([
      "unknown",
      "unknown",
      "unknown",
    ]);
    expect(report.rules).toMatchObject({
      present: null,
      error: "/opt/nft could not be started: ENOENT",
    });
  });

  it("finds the other backend's rules wrong, but not its missing program", () => {
    const leftover = buildDoctorReport(
      facts({
        otherLive: {
          ok: true,
          rules: { ...NOTHING.rules, present: true, mappings: [WEB_RULE] },
        } as DoctorFacts["otherLive"],
      }),
    );
    expect(leftover.problems).toEqual([
      {
        code: "OtherBackendRules",
        message:
          "the iptables backend's rules are in the kernel too (1 translation): `ipvs-node-controller cleanup --backend iptables` removes them, as `run` does when it starts",
      },
    ]);
    const missing = buildDoctorReport(
      facts({ otherLive: { ok: false, error: "iptables-nft-save: ENOENT", notStarted: true } }),
    );
    expect(missing).toMatchObject({ ok: true, notes: [] });
    const refused = buildDoctorReport(
      facts({ otherLive: { ok: false, error: "Permission denied", notStarted: false } }),
    );
    expect(refused.ok).toBe(true);
    expect(codes(refused.notes)).toEqual(["OtherBackendUnreadable"]);
  });

  describe("with probes", () => {
    it("reports ok probes, and a working verdict that says they answer", () => {
      const report = buildDoctorReport(
        facts({
          probes: probes([
            ["192.0.2.10", 80, "ok"],
            ["192.0.2.11", 443, "ok"],
          ]),
        }),
      );
      expect(report.ok).toBe(true);
      expect(report.summary).toMatch(/and answers$/);
      expect(report.services[1]?.mappings[0]?.probe).toEqual({ result: "ok" });
      // UDP is never probed.
      expect(report.services[0]?.mappings.find((m) => m.protocol === "udp")?.probe).toBeUndefined();
    });

    it("finds a failed probe wrong when the cluster IP answers and the rule is there", () => {
      const report = buildDoctorReport(
        facts({
          probes: probes([
            ["192.0.2.10", 80, "timeout"],
            ["10.96.0.10", 80, "ok"],
            ["192.0.2.11", 443, "ok"],
          ]),
        }),
      );
      expect(report.problems).toEqual([
        {
          code: "ProbeFailed",
          message:
            "default/web: 192.0.2.10 tcp/80 did not answer the host (timeout) while its cluster IP 10.96.0.10 answers: the translation does not happen",
        },
      ]);
      expect(report.services[1]?.mappings[0]?.probe).toEqual({
        result: "timeout",
        clusterIP: { result: "ok" },
      });
    });

    it("names the probe's symptom in the missing rule's problem, once", () => {
      const report = buildDoctorReport(
        facts({
          live: rules(API_RULES),
          probes: probes([
            ["192.0.2.10", 80, "refused"],
            ["10.96.0.10", 80, "ok"],
            ["192.0.2.11", 443, "ok"],
          ]),
        }),
      );
      expect(report.problems).toEqual([
        {
          code: "RuleMissing",
          message:
            "default/web: no rule translates 192.0.2.10 tcp/80 to 10.96.0.10, a local address of this node; the host's connection: refused",
        },
      ]);
    });

    it("excuses a Service whose cluster IP does not answer either, and a remote load balancer", () => {
      const report = buildDoctorReport(
        facts({
          network: {
            ok: true,
            localAddresses: new Set(["192.0.2.10"]),
            kubeIpvsInterface: true,
          },
          probes: new Map([
            [probeKey("192.0.2.10", 80), { result: "refused" }],
            [probeKey("10.96.0.10", 80), { result: "error", detail: "EHOSTUNREACH" }],
            [probeKey("192.0.2.11", 443), { result: "timeout" }],
          ]),
        }),
      );
      expect(report).toMatchObject({ ok: true, verdict: "working", problems: [] });
      expect(report.summary).toMatch(/\(some Services answer nowhere, see the notes\)$/);
      expect(report.notes.map((note) => note.message)).toEqual([
        "default/web: 192.0.2.10 tcp/80 did not answer the host (refused), nor did its cluster IP 10.96.0.10 (error EHOSTUNREACH): the Service has no endpoint that answers, which no rule can change",
        "default/api: 192.0.2.11 tcp/443 did not answer the host (timeout); it is not a local address of this node, so the load balancer serves it, not our rules",
      ]);
    });
  });

  it("takes every address to be local when the local addresses cannot be read", () => {
    const report = buildDoctorReport(
      facts({ network: { ok: false, error: "ip could not be started: ENOENT" }, live: rules([]) }),
    );
    expect(report.node).toMatchObject({
      kubeIpvsInterface: null,
      externalIPs: [{ family: "ipv4", total: 2, local: null }],
    });
    expect(codes(report.notes)).toEqual(["NetworkUnreadable"]);
    expect(codes(report.problems)).toEqual(["RuleMissing", "RuleMissing", "RuleMissing"]);
    expect(report.services[1]?.mappings[0]?.local).toBeNull();
  });

  it("has nothing to translate without Services, and lists what it skipped", () => {
    const broken = service("broken", "192.0.2.300", "10.96.0.30");
    const report = buildDoctorReport(facts({ services: [broken], live: rules([]) }));
    expect(report).toMatchObject({ ok: true, verdict: "nothing-to-translate", services: [] });
    expect(report.skipped).toEqual([
      expect.objectContaining({ service: "default/broken", reason: "InvalidIP" }),
    ]);
  });

  it("says where each pod CIDR came from", () => {
    const node: NodeInput = { spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] } };
    const dual = buildDoctorReport(
      facts({
        node,
        configOverrides: {
          families: ["ipv4", "ipv6"],
          extraPodCIDRs: ["10.244.1.0/24", "10.250.0.0/16"],
        },
      }),
    );
    expect(dual.podTraffic).toEqual({
      detectLocalMode: "NodeCIDR",
      families: [
        {
          family: "ipv4",
          match: "sourceCIDRs",
          cidrs: [
            { cidr: "10.244.1.0/24", sources: ["Node spec.podCIDRs", "--pod-cidr"] },
            { cidr: "10.250.0.0/16", sources: ["--pod-cidr"] },
          ],
        },
        {
          family: "ipv6",
          match: "sourceCIDRs",
          cidrs: [{ cidr: "fd00:10:244:1::/64", sources: ["Node spec.podCIDRs"] }],
        },
      ],
    });
    const cluster = buildDoctorReport(
      facts({
        node,
        configOverrides: { localDetection: { mode: "ClusterCIDR", cidrs: ["10.244.0.0/16"] } },
      }),
    );
    expect(cluster.podTraffic.families).toEqual([
      {
        family: "ipv4",
        match: "sourceCIDRs",
        cidrs: [{ cidr: "10.244.0.0/16", sources: ["--cluster-cidr"] }],
      },
    ]);
    const bridge = buildDoctorReport(
      facts({
        configOverrides: { localDetection: { mode: "BridgeInterface", interfaceName: "cni0" } },
      }),
    );
    expect(bridge.podTraffic.families).toEqual([
      { family: "ipv4", match: "inputInterface", interface: "cni0" },
    ]);
  });

  it("notes a Node that the API does not know", () => {
    const report = buildDoctorReport(
      facts({ source: { kind: "api", server: "https://127.0.0.1:6443", nodeFound: false } }),
    );
    expect(report.notes).toEqual([
      {
        code: "NodeNotFound",
        message: "the Node worker-1 does not exist: its pod CIDRs are unknown",
      },
    ]);
  });

  describe("loadBalancerSourceRanges", () => {
    const restricted = (ranges: string[]): ServiceInput => ({
      ...WEB,
      spec: { ...WEB.spec, loadBalancerSourceRanges: ranges },
    });
    const node: NodeInput = {
      spec: { podCIDRs: ["10.244.1.0/24"] },
      status: { addresses: [{ type: "InternalIP", address: "172.18.0.2" }] },
    };
    const restrictedRule = (allowedSources: string[]) => ({ ...WEB_RULE, allowedSources });

    it("lists who reaches a restricted LB IP from this node: pods, the node", () => {
      const report = buildDoctorReport(
        facts({
          services: [restricted(["10.244.0.0/16", "172.18.0.0/16"]), API],
          node,
          live: rules([
            restrictedRule(["10.244.0.0/16", "172.18.0.0/16", "192.0.2.10/32"]),
            ...API_RULES,
          ]),
        }),
      );
      expect(report).toMatchObject({ ok: true, verdict: "working" });
      expect(report.node.ips).toEqual([
        { family: "ipv4", address: "172.18.0.2", source: "Node status" },
      ]);
      expect(report.restrictions).toEqual([
        {
          service: "default/web",
          addresses: [
            {
              family: "ipv4",
              externalIP: "192.0.2.10",
              ports: ["tcp/80"],
              allowedSources: ["10.244.0.0/16", "172.18.0.0/16", "192.0.2.10/32"],
              admitsNode: true,
              admitsPods: "all",
            },
          ],
        },
      ]);
      const text = formatDoctorReport(report);
      expect(text).toContain("restricted by loadBalancerSourceRanges (1)");
      expect(text).toMatch(
        /192\.0\.2\.10 tcp\/80 +from 10\.244\.0\.0\/16, 172\.18\.0\.0\/16, 192\.0\.2\.10\/32 +all pods, the node/,
      );
    });

    it("names a Service whose ranges exclude every pod CIDR of the node, as a note", () => {
      const report = buildDoctorReport(
        facts({
          services: [restricted(["198.51.100.0/24"]), API],
          node,
          live: rules([restrictedRule(["198.51.100.0/24"]), ...API_RULES]),
        }),
      );
      expect(report.ok).toBe(true);
      expect(report.restrictions[0]?.addresses[0]).toMatchObject({
        admitsNode: false,
        admitsPods: "none",
      });
      expect(report.notes).toEqual([
        {
          code: "SourceRangesExcludePods",
          message:
            "default/web: its loadBalancerSourceRanges admit none of this node's ipv4 pod CIDRs, so pods here do not reach 192.0.2.10 (tcp/80), as kube-proxy has it; its cluster IP stays reachable",
        },
      ]);
    });

    it("finds a rule that admits other sources than the ranges wrong", () => {
      const report = buildDoctorReport(
        facts({
          services: [restricted(["10.244.1.0/24"]), API],
          node,
          live: rules([WEB_RULE, ...API_RULES]),
        }),
      );
      expect(codes(report.problems)).toEqual(["RuleWrongSources"]);
      expect(report.problems[0]?.message).toBe(
        "default/web: the rule for 192.0.2.10 tcp/80 translates every source, where its loadBalancerSourceRanges admit only 10.244.1.0/24",
      );
      expect(report.services[1]?.mappings[0]).toMatchObject({
        rule: "wrong-sources",
        allowedSources: ["10.244.1.0/24"],
      });
    });
  });

  it("is plain JSON", () => {
    const report = buildDoctorReport(facts({ probes: probes([["192.0.2.10", 80, "ok"]]) }));
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });
});

describe("formatDoctorReport", () => {
  it("leads with the verdict, shows each translation on one line and ends with the problems", () => {
    const report = buildDoctorReport(
      facts({
        live: rules(API_RULES),
        probes: probes([
          ["192.0.2.10", 80, "refused"],
          ["10.96.0.10", 80, "ok"],
          ["192.0.2.11", 443, "ok"],
        ]),
      }),
    );
    const lines = formatDoctorReport(report).split("\n");
    expect(lines.slice(0, 2)).toEqual([
      "ipvs-node-controller doctor: node worker-1",
      `verdict: ${report.summary}`,
    ]);
    expect(lines).toContain(
      "    192.0.2.10 tcp/80  ->  10.96.0.10  local  rule missing  probe refused (cluster IP: ok)",
    );
    expect(lines).toContain("  kube-ipvs0     present");
    expect(lines).toContain("  pod traffic    NodeCIDR; ipv4: from 10.244.1.0/24 (--pod-cidr)");
    expect(lines.slice(-2)).toEqual([
      "problems (1)",
      `  - RuleMissing: ${report.problems[0]?.message}`,
    ]);
  });

  it("says none where there is nothing to list", () => {
    const text = formatDoctorReport(buildDoctorReport(facts()));
    expect(text).toMatch(/rules of ours that no Service wants \(0\)\n {2}none/);
    expect(text).toMatch(/problems \(0\)\n {2}none$/);
    expect(text).not.toMatch(/^skipped/m);
  });
});
