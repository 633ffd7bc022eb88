/**
 * Each way of recognising local-pod traffic, and single-family rulesets, with real traffic:
 * the pod's packets arrive on `veth-pod` from 10.244.1.2 / fd00:10:244:1::2, the remote host's on
 * `eth-remote` from outside the pod CIDR. Host-network traffic is translated in every mode.
 */
import type { IpFamily, LocalPodMatch } from "@ipvs-node-controller/core";
import {
  ADDRESS_PLAN,
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNftBackend } from "../src/index.js";
import { deployServices, mapping, replyOf, ruleset, type TestService } from "./helpers.js";

const kernel = await kernelTestsEnabled("nft backend local-detection kernel tests");

const web: TestService = {
  name: "web",
  cluster: { ipv4: "10.96.0.10", ipv6: "fd00:10:96::10" },
  lb: { ipv4: "203.0.113.10", ipv6: "2001:db8:ffff::10" },
  ports: [{ port: 80, protocol: "tcp" }],
};

const modes: [string, IpFamily, LocalPodMatch, boolean][] = [
  ["IPv4 pod CIDR", "ipv4", { kind: "sourceCIDRs", cidrs: [ADDRESS_PLAN.podCIDR.ipv4] }, true],
  ["IPv6 pod CIDR", "ipv6", { kind: "sourceCIDRs", cidrs: [ADDRESS_PLAN.podCIDR.ipv6] }, true],
  ["IPv4 without any pod CIDR", "ipv4", { kind: "sourceCIDRs", cidrs: [] }, false],
  [
    "IPv6 pod CIDR of another node",
    "ipv6",
    { kind: "sourceCIDRs", cidrs: ["fd00:10:244:2::/64"] },
    false,
  ],
  [
    "IPv4 bridge interface",
    "ipv4",
    { kind: "inputInterface", name: ADDRESS_PLAN.podInterface },
    true,
  ],
  [
    "IPv6 bridge interface",
    "ipv6",
    { kind: "inputInterface", name: ADDRESS_PLAN.podInterface },
    true,
  ],
  ["IPv4 interface that is not the pod's", "ipv4", { kind: "inputInterface", name: "veth" }, false],
  ["IPv4 interface prefix", "ipv4", { kind: "inputInterfacePrefix", prefix: "veth" }, true],
  ["IPv6 interface prefix", "ipv6", { kind: "inputInterfacePrefix", prefix: "veth-p" }, true],
  [
    "IPv6 prefix of other interfaces",
    "ipv6",
    { kind: "inputInterfacePrefix", prefix: "cali" },
    false,
  ],
];

describe.skipIf(!kernel)("local-pod detection on the kernel", () => {
  let topology: Topology;

  beforeAll(async () => {
    topology = await createTopology({ prefix: "nft-detect" });
    await deployServices(topology, [web]);
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it.each(modes)("%s (single-family ruleset)", async (_name, family, localPods, podTranslated) => {
    const backend = createNftBackend({ runner: topology.runner("node") });
    const other: IpFamily = family === "ipv4" ? "ipv6" : "ipv4";
    const single = ruleset(
      [
        mapping({
          externalIP: web.lb[family],
          clusterIP: web.cluster[family],
          service: { namespace: "default", name: "web" },
        }),
      ],
      { families: [family], localPods: () => localPods },
    );
    try {
      expect(await backend.apply(single)).toMatchObject({ mode: "full", changedMappings: 1 });
      expect(await backend.verify(single)).toBe(true);
      const answer = { ok: true, reply: replyOf(web, family, 80) };
      const refused = { ok: false, error: "refused" };
      expect(await topology.connect("pod", web.lb[family], 80, "tcp")).toEqual(
        podTranslated ? answer : refused,
      );
      expect(await topology.connect("node", web.lb[family], 80, "tcp")).toEqual(answer);
      expect(await topology.connect("remote", web.lb[family], 80, "tcp")).toEqual(refused);
      // The family that is not in the ruleset stays untouched.
      expect(await topology.connect("pod", web.lb[other], 80, "tcp")).toEqual(refused);
      expect(await topology.connect("node", web.lb[other], 80, "tcp")).toEqual(refused);
    } finally {
      await backend.cleanup();
    }
  });
});
