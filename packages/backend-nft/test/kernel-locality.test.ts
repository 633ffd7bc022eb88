/**
 * The locality guard on the real kernel: only external IPs that are addresses of this node are
 * translated. Under kube-proxy's IPVS mode every LB IP is bound on the node (the bug exists); under
 * its iptables or nftables mode LB IPs are virtual and served elsewhere, and a DNAT of ours would
 * hijack traffic that already works. Here the "virtual" Service's LB IP lives on the remote host,
 * which answers as the load balancer would.
 */
import type { IpFamily } from "@ipvs-node-controller/core";
import {
  createTopology,
  kernelTestsEnabled,
  type MarkCounter,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNftBackend } from "../src/index.js";
import { deployServices, replyOf, rulesetFor, type TestService } from "./helpers.js";

const kernel = await kernelTestsEnabled("nft backend locality tests");

const FAMILIES: IpFamily[] = ["ipv4", "ipv6"];
// Its LB IP is bound on the node, as kube-proxy's IPVS mode binds it on kube-ipvs0.
const ipvs: TestService = {
  name: "ipvs",
  cluster: { ipv4: "10.96.0.20", ipv6: "fd00:10:96::20" },
  lb: { ipv4: "203.0.113.20", ipv6: "2001:db8:ffff::20" },
  ports: [{ port: 80, protocol: "tcp" }],
};
// Its LB IP is not an address of the node: the load balancer (the remote host) serves it.
const virtual: TestService = {
  name: "virtual",
  cluster: { ipv4: "10.96.0.21", ipv6: "fd00:10:96::21" },
  lb: { ipv4: "203.0.113.21", ipv6: "2001:db8:ffff::21" },
  ports: [{ port: 80, protocol: "tcp" }],
};
const LOAD_BALANCER_REPLY = "load balancer";

describe.skipIf(!kernel)("nft backend translates only local destinations", () => {
  let topology: Topology;
  let marks: MarkCounter;

  beforeAll(async () => {
    topology = await createTopology({ prefix: "nft-local" });
    await deployServices(topology, [ipvs]);
    await topology.addNodeAddresses(FAMILIES.map((family) => virtual.cluster[family]));
    await topology.listen(
      FAMILIES.map((family) => ({
        ip: virtual.cluster[family],
        port: 80,
        protocol: "tcp" as const,
        reply: replyOf(virtual, family, 80),
      })),
    );
    await topology.addRemoteAddresses(FAMILIES.map((family) => virtual.lb[family]));
    await topology.listen(
      FAMILIES.map((family) => ({
        ip: virtual.lb[family],
        port: 80,
        protocol: "tcp" as const,
        reply: LOAD_BALANCER_REPLY,
      })),
      "remote",
    );
    marks = await topology.markCounter(0x4000);
    const desired = rulesetFor([ipvs, virtual]);
    expect(desired.families.map((family) => family.mappings.length)).toEqual([2, 2]);
    await createNftBackend({ runner: topology.runner("node") }).apply(desired);
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  describe.each(FAMILIES)("%s", (family) => {
    it.each(["pod", "node"] as const)(
      "%s -> a virtual LB IP still reaches the load balancer, untranslated and unmarked",
      async (from) => {
        const before = await marks.read();
        expect(await topology.connect(from, virtual.lb[family], 80, "tcp")).toEqual({
          ok: true,
          reply: LOAD_BALANCER_REPLY,
        });
        expect(await marks.read()).toBe(before);
      },
    );

    it.each(["pod", "node"] as const)(
      "%s -> an LB IP bound on the node is translated in the same ruleset",
      async (from) => {
        expect(await topology.connect(from, ipvs.lb[family], 80, "tcp")).toEqual({
          ok: true,
          reply: replyOf(ipvs, family, 80),
        });
      },
    );
  });
});
