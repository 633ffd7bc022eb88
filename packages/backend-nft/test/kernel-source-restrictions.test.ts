/**
 * Source restrictions (`loadBalancerSourceRanges`) and the masquerade mark on the real kernel:
 * a restricted mapping translates exactly the sources it admits, with real traffic from a pod,
 * the node itself and a host outside the node, and a change of the admitted sources is an
 * incremental change of elements.
 */
import type { Backend } from "@ipvs-node-controller/backend";
import {
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
import { createNftBackend } from "../src/index.js";
import { ruleset } from "./helpers.js";

const kernel = await kernelTestsEnabled("nft source-restriction kernel tests");

describe.skipIf(!kernel)("nft backend: source restrictions with real traffic", () => {
  let topology: Topology;
  let backend: Backend;
  const all = RESTRICTION_CASES.map((c) => restrictionMapping(c));

  beforeAll(async () => {
    topology = await createTopology({ prefix: "nft-sources" });
    await deployRestrictionCases(topology);
    backend = createNftBackend({ runner: topology.runner("node") });
    expect(await backend.apply(ruleset(all))).toMatchObject({ mode: "full" });
    expect(await backend.verify(ruleset(all))).toBe(true);
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it.each(RESTRICTION_CASES.map((c) => [`${c.family} ${c.name}`, c] as const))(
    "%s: answers exactly the admitted hosts",
    async (_name, restriction) => {
      expect(await reachedHosts(topology, restriction)).toEqual(restriction.answered);
    },
  );

  it("narrows, opens and restricts again element by element, with traffic following", async () => {
    const walked = await walkRestrictionSteps(topology, backend, ruleset);
    expect(walked).toEqual(
      restrictionSteps().map(({ name, answered }) => ({
        name,
        mode: "incremental",
        verified: true,
        reached: answered,
      })),
    );
  });
});
