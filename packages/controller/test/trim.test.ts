import { describe, expect, it } from "vitest";
import { equivalentNodes, equivalentServices, trimNode, trimService } from "../src/kube/trim.js";

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
  it("keeps what the core reads and the resourceVersion, nothing else", () => {
    expect(trimService(raw())).toEqual({
      metadata: {
        namespace: "shop",
        name: "web",
        resourceVersion: "41",
        creationTimestamp: "2024-01-01T00:00:00Z",
        annotations: { "ipvs-node-controller.io/skip": "false" },
      },
      spec: {
        type: "LoadBalancer",
        clusterIP: "10.96.0.10",
        clusterIPs: ["10.96.0.10"],
        externalIPs: undefined,
        externalTrafficPolicy: "Local",
        ports: [{ port: 80, protocol: "TCP" }],
      },
      status: {
        loadBalancer: { ingress: [{ ip: "192.0.2.10", hostname: undefined, ipMode: undefined }] },
      },
    });
  });

  it("drops objects without metadata", () => {
    expect(trimService({ spec: {} })).toBeUndefined();
    expect(trimService(null)).toBeUndefined();
  });
});

describe("equivalentServices", () => {
  const stored = trimService(raw()) as NonNullable<ReturnType<typeof trimService>>;

  it("ignores resourceVersion, labels, managedFields and other annotations", () => {
    const update = raw({
      metadata: {
        ...raw().metadata,
        resourceVersion: "42",
        labels: { app: "web", team: "x" },
        managedFields: [],
      },
    });
    expect(equivalentServices(stored, trimService(update) as never)).toBe(true);
  });

  it("sees a listed Date and a watched timestamp text as the same instant", () => {
    const listed = {
      ...stored,
      metadata: { ...stored.metadata, creationTimestamp: new Date("2024-01-01T00:00:00Z") },
    };
    expect(equivalentServices(listed, stored)).toBe(true);
  });

  it.each([
    ["a port", { spec: { ...raw().spec, ports: [{ port: 81, protocol: "TCP" }] } }],
    ["an ingress IP", { status: { loadBalancer: { ingress: [{ ip: "192.0.2.11" }] } } }],
    [
      "the opt-out annotation",
      { metadata: { ...raw().metadata, annotations: { "ipvs-node-controller.io/skip": "true" } } },
    ],
  ])("notices a change of %s", (_, overrides) => {
    expect(equivalentServices(stored, trimService(raw(overrides)) as never)).toBe(false);
  });
});

describe("nodes", () => {
  it("keeps the name and pod CIDRs, and compares only the CIDRs", () => {
    const node = trimNode({
      metadata: { name: "n1", labels: { a: "b" } },
      spec: { podCIDRs: ["10.244.1.0/24"] },
    });
    expect(node).toEqual({ name: "n1", podCIDRs: ["10.244.1.0/24"] });
    expect(equivalentNodes(node as never, { name: "n1", podCIDRs: ["10.244.1.0/24"] })).toBe(true);
    expect(equivalentNodes(node as never, { name: "n1", podCIDRs: ["10.244.2.0/24"] })).toBe(false);
  });
});
