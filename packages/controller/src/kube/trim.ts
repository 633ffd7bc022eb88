/**
 * Trimming objects to the fields the core reads, so the cache of 10,000 Services stays small:
 * no managedFields, no labels, no selectors, no unrelated annotations.
 */

import { SKIP_ANNOTATION } from "@ipvs-node-controller/core";
import type { V1Node, V1Service } from "@kubernetes/client-node";
import equal from "fast-deep-equal";
import { podCIDRsOf } from "../input-files.js";

/** The part of a Node the controller needs. */
export interface NodeFacts {
  readonly name: string;
  readonly podCIDRs: readonly string[];
}

/** Keeps the fields of a Service that decide its mappings. Shape-preserving, so core reads it as a V1Service. */
export function trimService(object: unknown): V1Service | undefined {
  const service = object as V1Service | null;
  if (service === null || typeof service !== "object" || service.metadata === undefined)
    return undefined;
  const { metadata, spec, status } = service;
  const optOut = metadata.annotations?.[SKIP_ANNOTATION];
  return {
    metadata: {
      namespace: metadata.namespace,
      name: metadata.name,
      // Lets the core reuse what an unchanged object contributed on the previous sync.
      resourceVersion: metadata.resourceVersion,
      creationTimestamp: metadata.creationTimestamp,
      ...(optOut === undefined ? {} : { annotations: { [SKIP_ANNOTATION]: optOut } }),
    },
    spec: spec && {
      type: spec.type,
      clusterIP: spec.clusterIP,
      clusterIPs: spec.clusterIPs,
      externalIPs: spec.externalIPs,
      externalTrafficPolicy: spec.externalTrafficPolicy,
      ports: Array.isArray(spec.ports)
        ? spec.ports.map((port) => ({ port: port?.port, protocol: port?.protocol }) as never)
        : spec.ports,
    },
    status: status?.loadBalancer && {
      loadBalancer: {
        ingress: Array.isArray(status.loadBalancer.ingress)
          ? status.loadBalancer.ingress.map((entry) => ({
              ip: entry?.ip,
              hostname: entry?.hostname,
              ipMode: entry?.ipMode,
            }))
          : status.loadBalancer.ingress,
      },
    },
  };
}

/** Keeps a Node's name and pod CIDRs. */
export function trimNode(object: unknown): NodeFacts | undefined {
  const node = object as V1Node | null;
  const name = node?.metadata?.name;
  if (typeof name !== "string") return undefined;
  return { name, podCIDRs: podCIDRsOf(node ?? undefined) };
}

/** Two trimmed Services that differ at most in resourceVersion: nothing the core reads changed. */
export function equivalentServices(stored: V1Service, update: V1Service): boolean {
  // A listed object carries a Date, a watched one the RFC 3339 text.
  const timestamp = (service: V1Service) => {
    const stamp: unknown = service.metadata?.creationTimestamp;
    return stamp instanceof Date || typeof stamp === "string" ? new Date(stamp).getTime() : stamp;
  };
  return (
    equal(stored.spec, update.spec) &&
    equal(stored.status, update.status) &&
    equal(stored.metadata?.annotations, update.metadata?.annotations) &&
    timestamp(stored) === timestamp(update)
  );
}

/** Two trimmed Nodes with the same pod CIDRs. */
export function equivalentNodes(stored: NodeFacts, update: NodeFacts): boolean {
  return equal(stored.podCIDRs, update.podCIDRs);
}
