/**
 * Source restrictions (`loadBalancerSourceRanges`) on the real kernel, through both iptables
 * variants: a restricted mapping translates exactly the sources it admits, with real traffic from
 * a pod, the node itself and a host outside the node, and a change of the admitted sources is an
 * incremental change of its source chain.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Mapping, updateBetween } from "@ipvs-node-controller/core";
import {
  ADDRESS_PLAN,
  createTopology,
  deployRestrictionCases,
  kernelTestsEnabled,
  RESTRICTION_CASES,
  reachedHosts,
  restrictionMapping,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIptablesBackend, type IptablesBackend } from "../src/index.js";
import { family, ruleset } from "./fixtures.js";

const kernel = await kernelTestsEnabled("iptables source-restriction kernel tests");

function rulesetOf(mappings: readonly Mapping[]) {
  const of = (f: "ipv4" | "ipv6") => mappings.filter((m) => m.family === f);
  return ruleset([
    family("ipv4", { kind: "sourceCIDRs", cidrs: [ADDRESS_PLAN.podCIDR.ipv4] }, of("ipv4")),
    family("ipv6", { kind: "sourceCIDRs", cidrs: [ADDRESS_PLAN.podCIDR.ipv6] }, of("ipv6")),
  ]);
}

describe.skipIf(!kernel).each(["nft", "legacy"] as const)(
  "iptables-%s backend: source restrictions with real traffic",
  (variant) => {
    let topology: Topology;
    let backend: IptablesBackend;
    let lockDir: string;
    const all = RESTRICTION_CASES.map((c) => restrictionMapping(c));

    beforeAll(async () => {
      // iptables-legacy serialises on a lock file; give the tests their own.
      lockDir = mkdtempSync(join(tmpdir(), "ipvsnc-xtables-"));
      process.env.XTABLES_LOCKFILE = join(lockDir, "xtables.lock");
      topology = await createTopology({ prefix: `ipt-sources-${variant}` });
      await deployRestrictionCases(topology);
      backend = createIptablesBackend({ mode: variant, runner: topology.runner("node") });
      expect(await backend.apply(rulesetOf(all))).toMatchObject({ mode: "full" });
      expect(await backend.verify(rulesetOf(all))).toBe(true);
    }, 30_000);
    afterAll(async () => {
      await topology?.destroy();
      rmSync(lockDir, { recursive: true, force: true });
    });

    it.each(RESTRICTION_CASES.map((c) => [`${c.family} ${c.name}`, c] as const))(
      "%s: answers exactly the admitted hosts",
      async (_name, restriction) => {
        expect(await reachedHosts(topology, restriction)).toEqual(restriction.answered);
      },
    );

    it("narrows, opens and restricts again incrementally, with traffic following", async () => {
      const pods = RESTRICTION_CASES.find((c) => c.name === "pods" && c.family === "ipv4");
      if (pods === undefined) throw new Error("no pods case");
      const replace = (mapping: Mapping) =>
        all.map((m) => (m.externalIP === pods.lb ? mapping : m));
      // The pod is 10.244.1.2: the upper half of its CIDR no longer admits it.
      const narrowed = replace(restrictionMapping(pods, { allowedSources: ["10.244.1.128/25"] }));
      expect(
        await backend.applyChanges(updateBetween(rulesetOf(all), rulesetOf(narrowed))),
      ).toMatchObject({ mode: "incremental", changedMappings: 1 });
      expect(await backend.verify(rulesetOf(narrowed))).toBe(true);
      expect(await reachedHosts(topology, pods)).toEqual({
        pod: false,
        node: false,
        remote: false,
      });
      const opened = replace(restrictionMapping(pods, {}));
      expect(
        await backend.applyChanges(updateBetween(rulesetOf(narrowed), rulesetOf(opened))),
      ).toMatchObject({ mode: "incremental" });
      expect(await backend.verify(rulesetOf(opened))).toBe(true);
      expect(await reachedHosts(topology, pods)).toEqual({ pod: true, node: true, remote: false });
      expect(
        await backend.applyChanges(updateBetween(rulesetOf(opened), rulesetOf(all))),
      ).toMatchObject({ mode: "incremental" });
      expect(await backend.verify(rulesetOf(all))).toBe(true);
      expect(await reachedHosts(topology, pods)).toEqual(pods.answered);
    });

    it("removes every source chain with its mapping, and cleanup leaves nothing", async () => {
      const open = all.filter((m) => m.allowedSources === undefined);
      expect(
        await backend.applyChanges(updateBetween(rulesetOf(all), rulesetOf(open))),
      ).toMatchObject({ mode: "incremental" });
      expect(await backend.verify(rulesetOf(open))).toBe(true);
      const save = await topology.runner("node")(`iptables-${variant}-save`, ["-t", "nat"]);
      expect(save.stdout).not.toContain("IPVSNC-SRC-");
      expect(await backend.cleanup()).toBe(true);
    });
  },
);
