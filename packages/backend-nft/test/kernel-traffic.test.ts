/**
 * The nft backend on the real kernel, proven with real traffic in network namespaces.
 * Tests in this file run in order and share one topology.
 */

import type { Backend } from "@ipvs-node-controller/backend";
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

const kernel = await kernelTestsEnabled("nft backend kernel tests");

const web: TestService = {
  name: "web",
  cluster: { ipv4: "10.96.0.10", ipv6: "fd00:10:96::10" },
  lb: { ipv4: "203.0.113.10", ipv6: "2001:db8:ffff::10" },
  ports: [
    { port: 80, protocol: "tcp" },
    { port: 53, protocol: "udp" },
  ],
};
// Two Services sharing one LB IP on different ports (MetalLB's allow-shared-ip).
const alpha: TestService = {
  name: "alpha",
  cluster: { ipv4: "10.96.0.11", ipv6: "fd00:10:96::11" },
  lb: { ipv4: "203.0.113.11", ipv6: "2001:db8:ffff::11" },
  ports: [{ port: 80, protocol: "tcp" }],
};
const beta: TestService = {
  name: "beta",
  cluster: { ipv4: "10.96.0.12", ipv6: "fd00:10:96::12" },
  lb: alpha.lb,
  ports: [{ port: 443, protocol: "tcp" }],
};
// ipMode Proxy: the core leaves it out, traffic must keep going to the load balancer.
const proxied: TestService = {
  name: "proxied",
  cluster: { ipv4: "10.96.0.13", ipv6: "fd00:10:96::13" },
  lb: { ipv4: "203.0.113.13", ipv6: "2001:db8:ffff::13" },
  ports: [{ port: 80, protocol: "tcp" }],
  ipMode: "Proxy",
};
// Answers on every cluster IP but is never exposed by a Service: a reply from it means over-translation.
const UNEXPOSED_PORT = 8080;
const FAMILIES: IpFamily[] = ["ipv4", "ipv6"];

describe.skipIf(!kernel)("nft backend with real traffic (dual-stack)", () => {
  let topology: Topology;
  let backend: Backend;
  let marks: MarkCounter;
  const nft = (...args: string[]) => topology.runner("node")("nft", args);

  beforeAll(async () => {
    topology = await createTopology({ prefix: "nft-traffic" });
    await deployServices(topology, [web, alpha, beta, proxied], [UNEXPOSED_PORT]);
    marks = await topology.markCounter(0x4000);
    backend = createNftBackend({ runner: topology.runner("node") });
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it.each(FAMILIES)("%s: before any rule, pod -> LB IP is refused (the bug)", async (family) => {
    expect(await topology.connect("pod", web.lb[family], 80, "tcp")).toEqual({
      ok: false,
      error: "refused",
    });
    expect(await topology.connect("node", web.lb[family], 80, "tcp")).toEqual({
      ok: false,
      error: "refused",
    });
  });

  it("the first apply is a full sync of every mapping", async () => {
    const desired = rulesetFor([web, alpha, beta, proxied]);
    // web: tcp/80 + udp/53, alpha, beta: 4 mappings per family; proxied is left out by the core.
    expect(desired.families.map((f) => f.mappings.length)).toEqual([4, 4]);
    expect(await backend.apply(desired)).toEqual({ mode: "full", changedMappings: 8 });
    expect(await backend.verify(desired)).toBe(true);
  });

  describe.each(FAMILIES)("%s", (family) => {
    it("pod -> LB:port reaches the Service's cluster IP of the same family (tcp and udp)", async () => {
      expect(await topology.connect("pod", web.lb[family], 80, "tcp")).toEqual({
        ok: true,
        reply: replyOf(web, family, 80),
      });
      expect(await topology.connect("pod", web.lb[family], 53, "udp")).toEqual({
        ok: true,
        reply: replyOf(web, family, 53),
      });
    });

    it("host network -> LB:port reaches the Service", async () => {
      expect(await topology.connect("node", web.lb[family], 80, "tcp")).toEqual({
        ok: true,
        reply: replyOf(web, family, 80),
      });
      expect(await topology.connect("node", web.lb[family], 53, "udp")).toEqual({
        ok: true,
        reply: replyOf(web, family, 53),
      });
    });

    it("traffic from outside the node is untouched", async () => {
      expect(await topology.connect("remote", web.lb[family], 80, "tcp")).toEqual({
        ok: false,
        error: "refused",
      });
      expect(await topology.connect("remote", web.lb[family], 53, "udp")).toEqual({
        ok: false,
        error: "refused",
      });
    });

    it("a port the Service does not expose is not translated", async () => {
      for (const from of ["pod", "node"] as const) {
        expect(await topology.connect(from, web.lb[family], UNEXPOSED_PORT, "tcp")).toEqual({
          ok: false,
          error: "refused",
        });
      }
    });

    it("two Services sharing an IP each get their own port's traffic", async () => {
      expect(await topology.connect("pod", alpha.lb[family], 80, "tcp")).toEqual({
        ok: true,
        reply: replyOf(alpha, family, 80),
      });
      expect(await topology.connect("pod", beta.lb[family], 443, "tcp")).toEqual({
        ok: true,
        reply: replyOf(beta, family, 443),
      });
    });

    it("an ipMode Proxy Service (no mapping) is not translated", async () => {
      expect(await topology.connect("pod", proxied.lb[family], 80, "tcp")).toEqual({
        ok: false,
        error: "refused",
      });
    });

    it("the host's translated packets carry the masquerade mark; pods' and untranslated ones do not", async () => {
      const before = await marks.read();
      await topology.connect("remote", web.lb[family], 80, "tcp");
      await topology.connect("pod", web.cluster[family], 80, "tcp");
      expect(await topology.connect("pod", web.lb[family], 80, "tcp")).toMatchObject({ ok: true });
      expect(await marks.read()).toBe(before);
      await topology.connect("node", web.lb[family], 80, "tcp");
      expect(await marks.read()).toBeGreaterThan(before);
    });
  });

  it("marking pod traffic too is a settings change: full sync, then pods' packets are marked", async () => {
    const original = rulesetFor([web, alpha, beta, proxied]);
    const podsMarked = { ...original, markPodTraffic: true };
    expect(await backend.apply(podsMarked)).toEqual({ mode: "full", changedMappings: 8 });
    expect(await backend.verify(podsMarked)).toBe(true);
    expect(await backend.verify(original)).toBe(false);
    const before = await marks.read();
    expect(await topology.connect("pod", web.lb.ipv4, 80, "tcp")).toMatchObject({ ok: true });
    expect(await marks.read()).toBeGreaterThan(before);
    expect(await backend.apply(original)).toMatchObject({ mode: "full" });
  });

  it("a different masquerade mark is a settings change: full sync, new mark on packets", async () => {
    const original = rulesetFor([web, alpha, beta, proxied]);
    const otherMark = { ...original, masqueradeMark: 0x8000 };
    const otherMarks = await topology.markCounter(0x8000);
    expect(await backend.apply(otherMark)).toEqual({ mode: "full", changedMappings: 8 });
    expect(await backend.verify(otherMark)).toBe(true);
    expect(await backend.verify(original)).toBe(false);
    const before = { kubeProxy: await marks.read(), other: await otherMarks.read() };
    expect(await topology.connect("node", web.lb.ipv4, 80, "tcp")).toMatchObject({ ok: true });
    expect(await otherMarks.read()).toBeGreaterThan(before.other);
    expect(await marks.read()).toBe(before.kubeProxy);
    expect(await backend.apply(original)).toMatchObject({ mode: "full" });
  });

  it("cleanup removes the table, after which the bug is back", async () => {
    expect(await backend.cleanup()).toBe(true);
    expect(await backend.cleanup()).toBe(false);
    const tables = await nft("list", "tables");
    expect(tables.stdout).not.toContain("ipvs-node-controller");
    expect(await topology.connect("pod", web.lb.ipv6, 80, "tcp")).toEqual({
      ok: false,
      error: "refused",
    });
  });
});
