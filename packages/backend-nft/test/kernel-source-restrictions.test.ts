/**
 * Source restrictions (`loadBalancerSourceRanges`) and the masquerade mark on the real kernel:
 * a restricted mapping translates exactly the sources it admits, with real traffic from a pod,
 * the node itself and a host outside the node, and a change of the admitted sources is an
 * incremental change of elements.
 */
import type { Backend } from "@ipvs-node-controller/backend";
import { updateBetween } from "@ipvs-node-controller/core";
import {
  createTopology,
  deployRestrictionCases,
  kernelTestsEnabled,
  RESTRICTION_CASES,
  reachedHosts,
  restrictionMapping,
  type Topology,
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

  it("narrows and widens a restriction element by element, with traffic following", async () => {
    const pods = RESTRICTION_CASES.find((c) => c.name === "pods" && c.family === "ipv4");
    if (pods === undefined) throw new Error("no pods case");
    // The pod is 10.244.1.2: the upper half of its CIDR no longer admits it.
    const narrowed = all.map((m) =>
      m.externalIP === pods.lb
        ? restrictionMapping(pods, { allowedSources: ["10.244.1.128/25"] })
        : m,
    );
    expect(
      await backend.applyChanges(updateBetween(ruleset(all), ruleset(narrowed))),
    ).toMatchObject({
      mode: "incremental",
      changedMappings: 1,
    });
    expect(await backend.verify(ruleset(narrowed))).toBe(true);
    expect(await reachedHosts(topology, pods)).toEqual({ pod: false, node: false, remote: false });
    // Unrestricted, then restricted again.
    const opened = all.map((m) => (m.externalIP === pods.lb ? restrictionMapping(pods, {}) : m));
    expect(
      await backend.applyChanges(updateBetween(ruleset(narrowed), ruleset(opened))),
    ).toMatchObject({ mode: "incremental" });
    expect(await reachedHosts(topology, pods)).toEqual({ pod: true, node: true, remote: false });
    expect(await backend.applyChanges(updateBetween(ruleset(opened), ruleset(all)))).toMatchObject({
      mode: "incremental",
    });
    expect(await backend.verify(ruleset(all))).toBe(true);
    expect(await reachedHosts(topology, pods)).toEqual(pods.answered);
  });
});
