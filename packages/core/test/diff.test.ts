import { describe, expect, it } from "vitest";
import { computeRuleset, diffRulesets, isEmptyDiff } from "../src/index.js";
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
