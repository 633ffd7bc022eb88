/**
 * How long computeRuleset takes for many LoadBalancer Services (3 ports each).
 * Run with `pnpm bench` from the repository root.
 */
import type { V1Service } from "@kubernetes/client-node";
import { bench, describe } from "vitest";
import { computeRuleset, diffRulesets } from "../src/index.js";

/**
 * `count` LoadBalancer Services. With `fromApi`, each has a resourceVersion as objects from the
 * API server do, which lets computeRuleset reuse the contribution of unchanged Services.
 */
function manyServices(count: number, fromApi = false): V1Service[] {
  const services: V1Service[] = [];
  for (let i = 0; i < count; i++) {
    const a = (i >> 16) & 255;
    const b = (i >> 8) & 255;
    const c = i & 255;
    services.push({
      metadata: {
        namespace: `ns-${i % 100}`,
        name: `svc-${i}`,
        creationTimestamp: new Date(1_700_000_000_000 + i),
        resourceVersion: fromApi ? String(1000 + i) : undefined,
      },
      spec: {
        type: "LoadBalancer",
        clusterIP: `10.${96 + a}.${b}.${c}`,
        clusterIPs: [`10.${96 + a}.${b}.${c}`],
        externalTrafficPolicy: "Local",
        ports: [
          { port: 80, protocol: "TCP" },
          { port: 443, protocol: "TCP" },
          { port: 443, protocol: "UDP" },
        ],
      },
      status: { loadBalancer: { ingress: [{ ip: `172.${16 + a}.${b}.${c}` }] } },
    });
  }
  return services;
}

const node = { spec: { podCIDRs: ["10.244.1.0/24"] } };
for (const count of [1_000, 10_000, 50_000]) {
  const cold = manyServices(count);
  const fromApi = manyServices(count, true);
  describe(`${count} LoadBalancer Services, 3 ports each`, () => {
    bench("computeRuleset, every Service new (objects without resourceVersion)", () => {
      computeRuleset({ services: cold, node });
    });
    bench("computeRuleset, steady state (unchanged objects from the API)", () => {
      computeRuleset({ services: fromApi, node });
    });
  });
}

describe("10000 Services: diff after one Service changed", () => {
  const services = manyServices(10_000);
  const before = computeRuleset({ services, node }).ruleset;
  const changed = services.slice();
  changed[5000] = {
    ...manyServices(1)[0],
    metadata: { namespace: "x", name: "moved" },
  } as V1Service;
  const after = computeRuleset({ services: changed, node }).ruleset;
  bench("diffRulesets", () => {
    diffRulesets(before, after);
  });
});
