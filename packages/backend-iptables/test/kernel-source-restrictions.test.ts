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
  restrictionSteps,
  type Topology,
  walkRestrictionSteps,
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

    it("narrows, opens and restricts again element by element, with traffic following", async () => {
      const walked = await walkRestrictionSteps(topology, backend, rulesetOf);
      expect(walked).toEqual(
        restrictionSteps().map(({ name, answered }) => ({
          name,
          mode: "incremental",
          verified: true,
          reached: answered,
        })),
      );
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
