import type { V1Node, V1Service } from "@kubernetes/client-node";
import fc from "fast-check";
import { describe, expect, expectTypeOf, it } from "vitest";
import {
  computeRuleset,
  type NodeInput,
  podCIDRsOf,
  RulesetEngine,
  type ServiceInput,
  sameNodeInput,
  trimNode,
  trimService,
} from "../src/index.js";
import { servicesArbitrary } from "./arbitraries.js";

const raw = (overrides: Record<string, unknown> = {}) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: {
    namespace: "shop",
    name: "web",
    resourceVersion: "41",
    creationTimestamp: "2024-01-01T00:00:00Z",
    labels: { app: "web" },
    annotations: {
      "ipvs-node-controller.io/skip": "false",
      "kubectl.kubernetes.io/last-applied-configuration": "{...}",
    },
    managedFields: [{ manager: "kubectl" }],
  },
  spec: {
    type: "LoadBalancer",
    clusterIP: "10.96.0.10",
    clusterIPs: ["10.96.0.10"],
    selector: { app: "web" },
    ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080, nodePort: 30080 }],
    externalTrafficPolicy: "Local",
  },
  status: { loadBalancer: { ingress: [{ ip: "192.0.2.10", ports: [{ port: 80 }] }] } },
  ...overrides,
});

describe("trimService", () => {
  it("keeps what the core reads, nothing else, and no empty slots", () => {
    expect(trimService(raw())).toStrictEqual({
      metadata: {
        namespace: "shop",
        name: "web",
        creationTimestamp: "2024-01-01T00:00:00Z",
        annotations: { "ipvs-node-controller.io/skip": "false" },
      },
      spec: {
        type: "LoadBalancer",
        clusterIP: "10.96.0.10",
        clusterIPs: ["10.96.0.10"],
        externalTrafficPolicy: "Local",
        ports: [{ port: 80, protocol: "TCP" }],
      },
      status: { loadBalancer: { ingress: [{ ip: "192.0.2.10" }] } },
    });
  });

  it("keeps malformed values as they are, so they are reported the same way", () => {
    expect(
      trimService({
        metadata: "x",
        spec: { ports: "80", externalIPs: 7 },
        status: { loadBalancer: null },
      }),
    ).toStrictEqual({
      metadata: "x",
      spec: { ports: "80", externalIPs: 7 },
      status: { loadBalancer: null },
    });
  });

  it("returns undefined only for what is not an object", () => {
    expect(trimService({ spec: {} })).toStrictEqual({ spec: {} });
    expect(trimService(null)).toBeUndefined();
    expect(trimService("service")).toBeUndefined();
  });

  it("never changes what computeRuleset makes of a Service", () => {
    fc.assert(
      fc.property(servicesArbitrary, fc.boolean(), fc.boolean(), (services, local, external) => {
        const config = {
          families: ["ipv4", "ipv6"] as const,
          onlyLocalTrafficPolicy: local,
          externalIPs: external,
        };
        const whole = computeRuleset({ services, config });
        const trimmed = computeRuleset({
          services: services.map((service) => trimService(service) as ServiceInput),
          config,
        });
        expect(trimmed).toEqual(whole);
      }),
    );
  });

  it("accepts the API's objects as they are", () => {
    expectTypeOf<V1Service>().toExtend<ServiceInput>();
    expectTypeOf<V1Node>().toExtend<NodeInput>();
  });
});

describe("an update the core does not read changes nothing", () => {
  const engineWithStored = () => {
    const engine = new RulesetEngine();
    engine.setService("shop/web", trimService(raw()));
    return engine;
  };

  it("ignores resourceVersion, labels, managedFields and other annotations", () => {
    const update = raw({
      metadata: {
        ...raw().metadata,
        resourceVersion: "42",
        labels: { app: "web", team: "x" },
        managedFields: [],
      },
    });
    expect(engineWithStored().setService("shop/web", trimService(update))).toBe(false);
  });

  it("sees a listed Date and a watched timestamp text as the same instant", () => {
    const stored = trimService(raw()) as NonNullable<ReturnType<typeof trimService>>;
    const listed = {
      ...stored,
      metadata: { ...stored.metadata, creationTimestamp: new Date("2024-01-01T00:00:00Z") },
    };
    expect(engineWithStored().setService("shop/web", listed)).toBe(false);
  });

  it.each([
    ["a port", { spec: { ...raw().spec, ports: [{ port: 81, protocol: "TCP" }] } }],
    ["an ingress IP", { status: { loadBalancer: { ingress: [{ ip: "192.0.2.11" }] } } }],
    [
      "the opt-out annotation",
      { metadata: { ...raw().metadata, annotations: { "ipvs-node-controller.io/skip": "true" } } },
    ],
    ["the source ranges", { spec: { ...raw().spec, loadBalancerSourceRanges: ["10.0.0.0/8"] } }],
  ])("notices a change of %s", (_, overrides) => {
    expect(engineWithStored().setService("shop/web", trimService(raw(overrides)))).toBe(true);
  });
});

describe("nodes", () => {
  it("keeps the pod CIDRs and the InternalIP and ExternalIP addresses, and compares only them", () => {
    const node = trimNode({
      metadata: { name: "n1", labels: { a: "b" } },
      spec: { podCIDRs: ["10.244.1.0/24"], providerID: "x" },
      status: {
        addresses: [
          { type: "Hostname", address: "n1" },
          { type: "InternalIP", address: "172.18.0.2" },
        ],
        conditions: [{ type: "Ready" }],
      },
    }) as NodeInput;
    expect(node).toStrictEqual({
      spec: { podCIDRs: ["10.244.1.0/24"] },
      status: { addresses: [{ type: "InternalIP", address: "172.18.0.2" }] },
    });
    expect(sameNodeInput(node, { spec: { podCIDRs: ["10.244.1.0/24"] } })).toBe(false);
    expect(sameNodeInput(node, { ...node })).toBe(true);
    const withoutAddresses = trimNode({ spec: { podCIDRs: ["10.244.1.0/24"] } }) as NodeInput;
    expect(sameNodeInput(withoutAddresses, { spec: { podCIDRs: ["10.244.1.0/24"] } })).toBe(true);
    expect(sameNodeInput(withoutAddresses, { spec: { podCIDRs: ["10.244.2.0/24"] } })).toBe(false);
  });

  it.each([
    [
      { spec: { podCIDRs: ["10.244.1.0/24", "fd00::/64"], podCIDR: "10.244.1.0/24" } },
      ["10.244.1.0/24", "fd00::/64"],
    ],
    [{ spec: { podCIDR: "10.244.1.0/24" } }, ["10.244.1.0/24"]],
    [{ spec: { podCIDRs: [], podCIDR: "10.244.1.0/24" } }, ["10.244.1.0/24"]],
    [{ spec: { podCIDRs: [7, "", "10.1.0.0/16"] } }, ["10.1.0.0/16"]],
    [{}, []],
    [undefined, []],
  ])("podCIDRsOf(%o) is %o", (node, expected) => {
    expect(podCIDRsOf(node as NodeInput)).toEqual(expected);
  });
});
