/** What the sync-loop tests share: a Service, the engine as the loop's state. */
import type { RulesetEngine, ServiceInput } from "@ipvs-node-controller/core";
import type { DesiredState } from "../../src/sync-loop.js";

/** A LoadBalancer Service with one port whose LB IP is `ip`. */
export function lbService(name: string, ip: string): ServiceInput {
  return {
    metadata: { namespace: "default", name },
    spec: { type: "LoadBalancer", clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
    status: { loadBalancer: { ingress: [{ ip }] } },
  };
}

/** The engine as the loop's desired state, as `run` wires it. */
export function engineState(
  engine: RulesetEngine,
  ready: () => boolean = () => true,
): DesiredState {
  return {
    ready,
    takeChanges: () => engine.takeChanges(),
    result: () => engine.result(),
    stats: () => engine.stats(),
  };
}
