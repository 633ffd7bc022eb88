import { describe, expect, it } from "vitest";
import {
  computeRuleset,
  diffRulesets,
  isEmptyDiff,
  type Mapping,
  MappingTable,
  settingsOf,
  updateBetween,
} from "../src/index.js";
import { lbService } from "./fixtures.js";

const web = lbService({ name: "web", ingress: [{ ip: "192.0.2.1" }], clusterIP: "10.96.0.1" });
const dns = lbService({
  name: "dns",
  ingress: [{ ip: "192.0.2.2" }],
  clusterIP: "10.96.0.2",
  ports: [{ port: 53, protocol: "UDP" }],
});
const rulesetOf = (...services: ReturnType<typeof lbService>[]) =>
  computeRuleset({ services }).ruleset;

describe("diffRulesets", () => {
  it("reports added, removed and changed mappings by key", () => {
    const movedWeb = lbService({
      name: "web",
      ingress: [{ ip: "192.0.2.1" }],
      clusterIP: "10.96.0.9",
    });
    const api = lbService({ name: "api", ingress: [{ ip: "192.0.2.3" }], clusterIP: "10.96.0.3" });
    const diff = diffRulesets(rulesetOf(web, dns), rulesetOf(movedWeb, api));
    expect(diff.added.map((m) => m.service.name)).toEqual(["api"]);
    expect(diff.removed.map((m) => m.service.name)).toEqual(["dns"]);
    expect(diff.changed.map((c) => [c.before.clusterIP, c.after.clusterIP])).toEqual([
      ["10.96.0.1", "10.96.0.9"],
    ]);
    expect(diff.settingsChanged).toBe(false);
  });

  it("sees a change of owner with the same addresses as a change", () => {
    const renamed = lbService({
      name: "www",
      ingress: [{ ip: "192.0.2.1" }],
      clusterIP: "10.96.0.1",
    });
    expect(diffRulesets(rulesetOf(web), rulesetOf(renamed)).changed).toHaveLength(1);
  });

  it.each([
    ["the mark", { masqueradeBit: 15 }, undefined],
    ["the families", { families: ["ipv4", "ipv6"] as const }, undefined],
    ["the pod CIDRs", {}, { spec: { podCIDRs: ["10.244.2.0/24"] } }],
  ])("flags a change of %s as a settings change", (_, config, node) => {
    const before = computeRuleset({
      services: [web],
      node: { spec: { podCIDRs: ["10.244.1.0/24"] } },
    }).ruleset;
    const after = computeRuleset({
      services: [web],
      config,
      node: node ?? { spec: { podCIDRs: ["10.244.1.0/24"] } },
    }).ruleset;
    const diff = diffRulesets(before, after);
    expect(diff.settingsChanged).toBe(true);
    expect(isEmptyDiff(diff)).toBe(false);
  });

  it("is empty for equal rulesets", () => {
    expect(isEmptyDiff(diffRulesets(rulesetOf(web, dns), rulesetOf(dns, web)))).toBe(true);
  });
});

describe("MappingTable.changesFrom: an update measured against what a backend applied", () => {
  const applied = MappingTable.of(rulesetOf(web, dns));
  const [webMapping, dnsMapping] = [...applied.values()] as [Mapping, Mapping];
  const settings = settingsOf(rulesetOf(web));

  it("changes nothing for keys that already hold what the update says, or are not there to remove", () => {
    expect(
      applied.changesFrom({
        settings,
        mappings: [webMapping],
        removed: [{ family: "ipv4", externalIP: "192.0.2.99", protocol: "tcp", port: 80 }],
      }),
    ).toEqual({ added: [], removed: [], changed: [] });
  });

  it("removes what the table holds, whatever the update's idea of it", () => {
    const { removed } = applied.changesFrom({ settings, mappings: [], removed: [dnsMapping] });
    expect(removed).toEqual([dnsMapping]);
  });

  it("changes a key whose sources differ, and adds a new one", () => {
    const restricted = { ...webMapping, allowedSources: ["10.0.0.0/8"] };
    const added = { ...webMapping, port: 8080 };
    expect(applied.changesFrom({ settings, mappings: [restricted, added], removed: [] })).toEqual({
      added: [added],
      removed: [],
      changed: [{ before: webMapping, after: restricted }],
    });
  });

  it("gives back, applied, the ruleset an update between two rulesets leads to", () => {
    const before = rulesetOf(web, dns);
    const after = rulesetOf(dns);
    expect(MappingTable.of(before).rulesetAfter(updateBetween(before, after))).toEqual(after);
  });
});
