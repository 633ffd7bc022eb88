import {
  computeRuleset,
  type FamilyRuleset,
  type IpFamily,
  type LocalPodMatch,
  type Mapping,
  type Ruleset,
  type ServiceInput,
  sortMappings,
} from "@ipvs-node-controller/core";
import type { ProbeProtocol, Topology } from "@ipvs-node-controller/test-support";

/** A Service as the API returns it: what the core reads, plus the object's kind. */
type Service = ServiceInput & { readonly apiVersion: string; readonly kind: string };

/** A mapping with defaults, for hand-made rulesets. */
export function mapping(
  fields: Partial<Mapping> & Pick<Mapping, "externalIP" | "clusterIP">,
): Mapping {
  return {
    family: fields.externalIP.includes(":") ? "ipv6" : "ipv4",
    protocol: "tcp",
    port: 80,
    service: { namespace: "default", name: "web" },
    ...fields,
  };
}

/** A hand-made ruleset: mappings sorted and split by family, one local-pod match for all families. */
export function ruleset(
  mappings: readonly Mapping[],
  options: {
    families?: readonly IpFamily[];
    localPods?: (family: IpFamily) => LocalPodMatch;
    mark?: number;
    markPodTraffic?: boolean;
  } = {},
): Ruleset {
  const families = options.families ?? ["ipv4", "ipv6"];
  const sorted = sortMappings(mappings);
  return {
    masqueradeMark: options.mark ?? 0x4000,
    markPodTraffic: options.markPodTraffic ?? false,
    families: families.map(
      (family): FamilyRuleset => ({
        family,
        localPods: options.localPods?.(family) ?? {
          kind: "sourceCIDRs",
          cidrs: [family === "ipv4" ? "10.244.1.0/24" : "fd00:10:244:1::/64"],
        },
        mappings: sorted.filter((m) => m.family === family),
      }),
    ),
  };
}

/**
 * The Services of the kernel tests, as the API server would return them. Every Service is dual-stack
 * and `externalTrafficPolicy: Local`.
 */
export interface TestService {
  readonly name: string;
  readonly cluster: Record<IpFamily, string>;
  readonly lb: Record<IpFamily, string>;
  readonly ports: readonly { readonly port: number; readonly protocol: ProbeProtocol }[];
  readonly ipMode?: "VIP" | "Proxy";
}

export function toV1Service(service: TestService): Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      namespace: "default",
      name: service.name,
      creationTimestamp: "2024-01-01T00:00:00Z" as unknown as Date,
    },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      clusterIP: service.cluster.ipv4,
      clusterIPs: [service.cluster.ipv4, service.cluster.ipv6],
      ports: service.ports.map(({ port, protocol }) => ({
        name: `${protocol}-${port}`,
        port,
        protocol: protocol.toUpperCase(),
      })),
    },
    status: {
      loadBalancer: {
        ingress: (["ipv4", "ipv6"] as const).map((family) => ({
          ip: service.lb[family],
          ...(service.ipMode ? { ipMode: service.ipMode } : {}),
        })),
      },
    },
  };
}

/** The reply of the listener standing in for `service` on its cluster IP of `family`. */
export function replyOf(service: { name: string }, family: IpFamily, port: number): string {
  return `${service.name}/${family}/${port}`;
}

/**
 * Binds the LB and cluster IPs of `services` on the node's lo and starts listeners on every
 * cluster IP:port (plus `extraPorts` that the Services do not expose, to catch over-translation).
 */
export async function deployServices(
  topology: Topology,
  services: readonly TestService[],
  extraPorts: readonly number[] = [],
): Promise<void> {
  const families = ["ipv4", "ipv6"] as const;
  await topology.addNodeAddresses(
    services.flatMap((service) => families.flatMap((f) => [service.lb[f], service.cluster[f]])),
  );
  await topology.listen(
    services.flatMap((service) =>
      families.flatMap((family) => [
        ...service.ports.map(({ port, protocol }) => ({
          ip: service.cluster[family],
          port,
          protocol,
          reply: replyOf(service, family, port),
        })),
        ...extraPorts.map((port) => ({
          ip: service.cluster[family],
          port,
          protocol: "tcp" as const,
          reply: `LEAK ${replyOf(service, family, port)}`,
        })),
      ]),
    ),
  );
}

/** computeRuleset for the test Services on a node whose pod CIDRs are the topology's. */
export function rulesetFor(
  services: readonly TestService[],
  families: readonly IpFamily[] = ["ipv4", "ipv6"],
): Ruleset {
  return computeRuleset({
    services: services.map(toV1Service),
    node: { spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] } },
    config: { families },
  }).ruleset;
}

/** Three mappings (TCP and UDP, IPv4 and IPv6) and their ruleset: what the read-back tests list and tamper with. */
export const READ_BACK_FIXTURE = (() => {
  const web = mapping({ externalIP: "192.0.2.10", clusterIP: "10.96.0.10" });
  const dns = mapping({
    externalIP: "192.0.2.53",
    clusterIP: "10.96.0.53",
    protocol: "udp",
    port: 53,
    service: { namespace: "kube-system", name: "dns" },
  });
  const web6 = mapping({ externalIP: "2001:db8::10", clusterIP: "fd00:96::10", port: 443 });
  return { web, dns, web6, desired: ruleset([web, dns, web6]) };
})();
