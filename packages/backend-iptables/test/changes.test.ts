/**
 * The documents of incremental changes, without the kernel (the kernel suite proves on both
 * variants that changes land where a full sync would put them).
 */
import { diffRulesets, MappingTable, sortMappings } from "@ipvs-node-controller/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AppliedState } from "../src/applied.js";
import { changeDocument, planChanges } from "../src/changes.js";
import { dnatRule, rulesetPlans } from "../src/render.js";
import { family, mapping, ruleset, rulesetArbitrary } from "./fixtures.js";

const POD_CIDRS = { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] } as const;

describe("change documents", () => {
  const web = mapping("192.0.2.10", 80, "10.96.0.10", { name: "web" });
  const api = mapping("192.0.2.10", 8080, "10.96.0.80", { name: "api" });
  const other = mapping("192.0.2.20", 80, "10.96.0.20", { name: "other" });
  const before = ruleset([family("ipv4", POD_CIDRS, [web, api, other])]);
  const stateOf = (r: typeof before) => AppliedState.of(r, rulesetPlans(r));
  const documentFor = (next: typeof before) => {
    const state = stateOf(before);
    return planChanges(state, diffRulesets(before, next)).map((change) =>
      changeDocument(change, state.order(change.family)),
    );
  };

  it("deletes a retargeted rule by its spec and inserts the new one at its place", () => {
    const moved = { ...api, clusterIP: "10.96.0.81" };
    expect(documentFor(ruleset([family("ipv4", POD_CIDRS, [web, moved, other])]))).toEqual([
      [
        "*nat",
        `-D IPVSNC-DNAT ${dnatRule(api)}`,
        `-I IPVSNC-DNAT 2 ${dnatRule(moved)}`,
        "COMMIT",
        "",
      ].join("\n"),
    ]);
  });

  it("appends past the last rule and inserts before the first", () => {
    const first = mapping("192.0.2.9", 443, "10.96.0.9", { name: "first" });
    const last = mapping("192.0.2.100", 443, "10.96.0.100", { name: "last" });
    expect(
      documentFor(ruleset([family("ipv4", POD_CIDRS, [first, web, api, other, last])])),
    ).toEqual([
      [
        "*nat",
        `-I IPVSNC-DNAT 1 ${dnatRule(first)}`,
        `-A IPVSNC-DNAT ${dnatRule(last)}`,
        "COMMIT",
        "",
      ].join("\n"),
    ]);
  });

  it("sends nothing for a change that the kernel already holds", () => {
    const state = stateOf(before);
    expect(
      planChanges(state, {
        added: [web],
        removed: [mapping("192.0.2.99", 80, "10.96.0.1")],
        changed: [],
      }),
    ).toEqual([]);
  });

  it("measures a change against what was applied, not against what the diff claims", () => {
    const state = stateOf(before);
    // The diff believes `api` points elsewhere; the rule to delete is the one the kernel holds.
    const claimed = { ...api, clusterIP: "10.96.0.99" };
    const [change] = planChanges(state, {
      added: [],
      removed: [claimed],
      changed: [],
    });
    expect(change?.deletes).toEqual([api]);
    expect(change?.inserts).toEqual([]);
  });

  it("keeps the applied state equal to a fresh one of the resulting ruleset", () => {
    fc.assert(
      fc.property(rulesetArbitrary, rulesetArbitrary, (a, b) => {
        const state = stateOf(a);
        for (const change of planChanges(state, diffRulesets(a, b))) state.commit(change);
        const fresh = stateOf(b);
        for (const f of ["ipv4", "ipv6"] as const) {
          expect(state.order(f).list()).toEqual(fresh.order(f).list());
        }
        expect(sortMappings([...state.table.values()])).toEqual(
          sortMappings([...MappingTable.of(b).values()]),
        );
      }),
      { numRuns: 300 },
    );
  });
});
