import { describe, expect, it } from "vitest";
import {
  computeRuleset,
  diffRulesets,
  staleUdpDestinations,
  udpDestinations,
} from "../src/index.js";
import { lbService } from "./fixtures.js";

const dns = (options: { clusterIP?: string; lb?: string; name?: string; tcp?: boolean } = {}) =>
  lbService({
    name: options.name ?? "dns",
    clusterIP: options.clusterIP ?? "10.96.0.53",
    ingress: [{ ip: options.lb ?? "192.0.2.53" }],
    ports: [
      { port: 53, protocol: "UDP" },
      ...(options.tcp === false ? [] : [{ port: 53, protocol: "TCP" }]),
    ],
  });
const web = lbService({ name: "web", clusterIP: "10.96.0.10", ingress: [{ ip: "192.0.2.10" }] });
const ruleset = (...services: ReturnType<typeof lbService>[]) =>
  computeRuleset({ services }).ruleset;
const stale = (before: ReturnType<typeof ruleset>, after: ReturnType<typeof ruleset>) =>
  staleUdpDestinations(diffRulesets(before, after));
const DNS = { family: "ipv4", ip: "192.0.2.53", port: 53 } as const;

describe("staleUdpDestinations", () => {
  it("names UDP mappings that were added, removed or re-pointed", () => {
    expect(stale(ruleset(web), ruleset(web, dns()))).toEqual([DNS]);
    expect(stale(ruleset(web, dns()), ruleset(web))).toEqual([DNS]);
    expect(stale(ruleset(dns()), ruleset(dns({ clusterIP: "10.96.0.54" })))).toEqual([DNS]);
  });

  it("names the old and the new external IP of a UDP Service that moved", () => {
    expect(stale(ruleset(dns()), ruleset(dns({ lb: "192.0.2.54" })))).toEqual([
      { family: "ipv4", ip: "192.0.2.54", port: 53 },
      DNS,
    ]);
  });

  it("leaves TCP, unchanged mappings and a change of owner alone", () => {
    expect(stale(ruleset(dns()), ruleset(dns(), web))).toEqual([]);
    expect(stale(ruleset(dns()), ruleset(dns()))).toEqual([]);
    expect(stale(ruleset(dns()), ruleset(dns({ name: "resolver" })))).toEqual([]);
  });
});

describe("udpDestinations", () => {
  it("lists every UDP destination of a ruleset once", () => {
    expect(
      udpDestinations(ruleset(web, dns(), dns({ name: "b", lb: "192.0.2.54", tcp: false }))),
    ).toEqual([DNS, { family: "ipv4", ip: "192.0.2.54", port: 53 }]);
  });
});
