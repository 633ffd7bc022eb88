/** What the sync-loop tests share: a Service, a log that keeps its lines, the engine as the loop's state. */
import type { RulesetEngine, ServiceInput } from "@ipvs-node-controller/core";
import pino, { type Logger } from "pino";
import type { DesiredState } from "../../src/sync-loop.js";

/** A LoadBalancer Service with one port whose LB IP is `ip`. */
export function lbService(name: string, ip: string): ServiceInput {
  return {
    metadata: { namespace: "default", name },
    spec: { type: "LoadBalancer", clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
    status: { loadBalancer: { ingress: [{ ip }] } },
  };
}

/** A debug log that keeps every line, parsed. */
export function memoryLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: "debug" },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines };
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
