import type { V1Service } from "@kubernetes/client-node";

/** Options for {@link lbService}; everything has a sensible default. */
export interface ServiceOptions {
  namespace?: string;
  name?: string;
  type?: string;
  clusterIP?: string;
  clusterIPs?: string[];
  ingress?: { ip?: string; hostname?: string; ipMode?: string }[];
  externalIPs?: string[];
  ports?: { port?: unknown; protocol?: unknown; targetPort?: number; nodePort?: number }[];
  externalTrafficPolicy?: string;
  annotations?: Record<string, string>;
  created?: string;
  /** `spec.loadBalancerSourceRanges`. */
  sourceRanges?: string[];
}

/** A LoadBalancer Service shaped as the API returns it. */
export function lbService(options: ServiceOptions = {}): V1Service {
  const clusterIP = options.clusterIP ?? "10.96.0.10";
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      namespace: options.namespace ?? "default",
      name: options.name ?? "web",
      annotations: options.annotations,
      creationTimestamp: (options.created ?? "2024-01-01T00:00:00Z") as unknown as Date,
    },
    spec: {
      type: options.type ?? "LoadBalancer",
      clusterIP,
      clusterIPs: options.clusterIPs ?? [clusterIP],
      externalIPs: options.externalIPs,
      externalTrafficPolicy: options.externalTrafficPolicy ?? "Local",
      loadBalancerSourceRanges: options.sourceRanges,
      ports: (options.ports ?? [
        { port: 80, protocol: "TCP", targetPort: 8080, nodePort: 30080 },
      ]) as never,
    },
    status: { loadBalancer: { ingress: options.ingress ?? [{ ip: "192.0.2.10" }] } },
  };
}

/** A Node with pod CIDRs and InternalIP addresses, shaped as the API returns it. */
export function nodeWith(options: { podCIDRs?: string[]; internalIPs?: string[] } = {}) {
  return {
    spec: { podCIDRs: options.podCIDRs ?? ["10.244.1.0/24"] },
    status: {
      addresses: [
        { type: "Hostname", address: "worker-1" },
        ...(options.internalIPs ?? ["172.18.0.2"]).map((address) => ({
          type: "InternalIP",
          address,
        })),
      ],
    },
  };
}
