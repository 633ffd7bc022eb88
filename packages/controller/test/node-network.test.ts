/**
 * What the controller reports about a node: which translated external IPs are local addresses
 * (an IPVS node binds them all; other kube-proxy modes none), and whether kube-ipvs0 exists.
 * The kernel part reads a real network namespace.
 */
import type { Ruleset } from "@ipvs-node-controller/core";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  describeLocality,
  inspectNodeNetwork,
  localityOf,
  type NodeNetwork,
} from "../src/node-network.js";

const kernel = await kernelTestsEnabled("node network inspection tests");

function rulesetWith(ips: string[]): Ruleset {
  const mapping = (externalIP: string, port: number) => ({
    family: externalIP.includes(":") ? ("ipv6" as const) : ("ipv4" as const),
    externalIP,
    protocol: "tcp" as const,
    port,
    clusterIP: externalIP.includes(":") ? "fd00::1" : "10.96.0.1",
    service: { namespace: "default", name: "web" },
  });
  const all = ips.flatMap((ip) => [mapping(ip, 80), mapping(ip, 443)]);
  return {
    masqueradeMark: 0x4000,
    markPodTraffic: false,
    families: (["ipv4", "ipv6"] as const).map((family) => ({
      family,
      localPods: { kind: "sourceCIDRs" as const, cidrs: [] },
      mappings: all.filter((m) => m.family === family),
    })),
  };
}

describe("localityOf and describeLocality", () => {
  const network: NodeNetwork = {
    localAddresses: new Set(["192.0.2.10", "2001:db8::10"]),
    kubeIpvsInterface: true,
  };

  it("counts distinct external IPs, and those that are local, per family", () => {
    const report = localityOf(rulesetWith(["192.0.2.10", "192.0.2.11", "2001:db8::10"]), network);
    expect(report).toEqual({
      externalIPs: { ipv4: 2, ipv6: 1 },
      local: { ipv4: 1, ipv6: 1 },
      kubeIpvsInterface: true,
    });
    expect(describeLocality(report)).toBe(
      "2 of the 3 translated external IPs are local addresses of this node (kube-ipvs0 present): the rules act on them",
    );
  });

  it("says the rules are inert where no external IP is local", () => {
    const report = localityOf(rulesetWith(["198.51.100.1"]), {
      localAddresses: new Set(),
      kubeIpvsInterface: false,
    });
    expect(describeLocality(report)).toMatch(
      /^none of the 1 translated external IPs is a local address of this node \(no kube-ipvs0\): the rules are inert here/,
    );
    expect(describeLocality(localityOf(rulesetWith([]), network))).toBe(
      "no external IP to translate (kube-ipvs0 present)",
    );
  });
});

describe.skipIf(!kernel)("inspectNodeNetwork on the kernel", () => {
  let topology: Topology;

  beforeAll(async () => {
    topology = await createTopology({ prefix: "nodenet" });
    await topology.addNodeAddresses(["192.0.2.10", "2001:db8::10"]);
    await topology.addRemoteAddresses(["192.0.2.20"]);
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it("reads addresses bound on the node as local, and routed ones as not", async () => {
    const network = await inspectNodeNetwork(topology.runner("node"));
    expect(network.localAddresses.has("192.0.2.10")).toBe(true);
    expect(network.localAddresses.has("2001:db8::10")).toBe(true);
    expect(network.localAddresses.has("192.0.2.20")).toBe(false);
    expect(network.kubeIpvsInterface).toBe(false);
  });

  it("notices an interface named kube-ipvs0", async () => {
    // No dummy driver is needed to test the name: a veth will do.
    const added = await topology.runner("node")("ip", [
      "link",
      "add",
      "kube-ipvs0",
      "type",
      "veth",
      "peer",
      "name",
      "kube-ipvs0-peer",
    ]);
    expect(added.exitCode).toBe(0);
    expect((await inspectNodeNetwork(topology.runner("node"))).kubeIpvsInterface).toBe(true);
  });
});
