/**
 * The rule engine's costs for many LoadBalancer Services (3 ports each): everything at once
 * (`computeRuleset`, start-up), one changed Service (`setService` + `takeChanges`, a watch event),
 * and the whole state (`result`, a full sync or a verify). Run with `pnpm bench`.
 */
import { bench, describe } from "vitest";
import { computeRuleset, RulesetEngine, type ServiceInput } from "../src/index.js";

/** The i-th Service, with its LB IP moved by `generation` (a status update). */
function service(i: number, generation = 0): ServiceInput {
  const a = (i >> 16) & 255;
  const b = (i >> 8) & 255;
  const c = i & 255;
  return {
    metadata: {
      namespace: `ns-${i % 100}`,
      name: `svc-${i}`,
      creationTimestamp: new Date(1_700_000_000_000 + i),
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
    status: { loadBalancer: { ingress: [{ ip: `172.${16 + a + generation}.${b}.${c}` }] } },
  };
}

const node = { spec: { podCIDRs: ["10.244.1.0/24"] } };

for (const count of [1_000, 10_000, 50_000]) {
  const services = Array.from({ length: count }, (_, i) => service(i));
  describe(`${count} Services: everything at once`, () => {
    bench("computeRuleset", () => {
      computeRuleset({ services, node });
    });
  });
}

for (const count of [100, 10_000]) {
  describe(`${count} Services: one changed Service`, () => {
    const engine = new RulesetEngine({ node });
    for (let i = 0; i < count; i++) engine.setService(`ns/svc-${i}`, service(i));
    engine.takeChanges();
    let generation = 0;
    bench("setService + takeChanges", () => {
      generation = (generation + 1) % 50;
      const i = generation % count;
      engine.setService(`ns/svc-${i}`, service(i, generation));
      engine.takeChanges();
    });
    bench("result (a full sync or a verify)", () => {
      engine.result();
    });
  });
}
