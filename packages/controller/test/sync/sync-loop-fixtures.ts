/** What the sync-loop tests share: a Service. */
import type { ServiceInput } from "@ipvs-node-controller/core";

/** A LoadBalancer Service with one port whose LB IP is `ip`. */
export function lbService(name: string, ip: string): ServiceInput {
  return {
    metadata: { namespace: "default", name },
    spec: { type: "LoadBalancer", clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
    status: { loadBalancer: { ingress: [{ ip }] } },
  };
}
