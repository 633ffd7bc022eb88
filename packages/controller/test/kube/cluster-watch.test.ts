/**
 * What `run` follows of the cluster, against an in-memory list and watch on a manual clock: every
 * object goes to the sink (the core's engine), the listener hears of what changed and of every
 * completed list, and a failing watch shows in the log and the metrics, with how long it failed
 * measured on the clock. The real API server is exercised in reflector.test.ts and run/.
 */
import { RulesetEngine, trimNode, trimService } from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import type { Cluster } from "../../src/kube/cluster.js";
import { ClusterWatch } from "../../src/kube/cluster-watch.js";
import type { ListPage } from "../../src/kube/list.js";
import { ControllerMetrics } from "../../src/metrics.js";
import { ManualClock } from "../support/manual-clock.js";
import { memoryLog } from "../support/memory-log.js";

type WatchEvent = (phase: string, object: unknown) => void;
type WatchDone = (error: unknown) => void;

/** A LoadBalancer Service as the API returns it, with a label the core does not read. */
const service = (name: string, ip: string, label = "a") => ({
  metadata: { namespace: "default", name, resourceVersion: "2", labels: { label } },
  spec: { type: "LoadBalancer", clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
  status: { loadBalancer: { ingress: [{ ip }] } },
});

const node = { metadata: { name: "worker-1" }, spec: { podCIDRs: ["10.244.1.0/24"] } };

/**
 * A cluster that lists `services` and `nodes` on one page each; each watch call is answered by
 * `answerWatch` (default: a watch that stays open), whose callbacks the test keeps.
 */
function inMemoryCluster(
  services: readonly unknown[],
  nodes: readonly unknown[],
  answerWatch: (path: string, onEvent: WatchEvent, onDone: WatchDone) => void = () => {},
) {
  const watches = new Map<string, { onEvent: WatchEvent; onDone: WatchDone }>();
  const page = (items: readonly unknown[]) => async (): Promise<ListPage> => ({
    items,
    metadata: { resourceVersion: "1" },
  });
  const cluster: Cluster = {
    server: "https://127.0.0.1:6443",
    watch: {
      watch: async (path, _query, onEvent, onDone) => {
        watches.set(path, { onEvent, onDone });
        answerWatch(path, onEvent, onDone);
        return new AbortController();
      },
    },
    services: { name: "services", list: page(services), watchPath: "/services", trim: trimService },
    node: { name: "node", list: page(nodes), watchPath: "/nodes", trim: trimNode },
  };
  return { cluster, watches };
}

function setUp(cluster: Cluster) {
  const clock = new ManualClock();
  const engine = new RulesetEngine({});
  const metrics = new ControllerMetrics();
  const { log, lines } = memoryLog();
  const heard: string[] = [];
  const watch = new ClusterWatch({ cluster, sink: engine, log, metrics, clock });
  const listener = {
    markDirty: () => heard.push("markDirty"),
    recheckReadiness: () => heard.push("recheckReadiness"),
  };
  return { clock, engine, metrics, lines, heard, watch, listener };
}

describe("ClusterWatch", () => {
  it("hands every object to the sink and tells the listener what changed and what was listed", async () => {
    const { cluster, watches } = inMemoryCluster([service("web", "192.0.2.1")], [node]);
    const { clock, engine, heard, watch, listener } = setUp(cluster);
    expect(watch.synced()).toBe(false);
    watch.start(listener);
    try {
      await clock.idle();
      expect(watch.synced()).toBe(true);
      // The Service and the Node each change the engine; each list ends with a wake.
      expect([...heard].sort()).toEqual([
        "markDirty",
        "markDirty",
        "recheckReadiness",
        "recheckReadiness",
      ]);
      expect(engine.result().ruleset.families[0]?.mappings.map((m) => m.externalIP)).toEqual([
        "192.0.2.1",
      ]);
      heard.length = 0;
      const services = watches.get("/services");
      // A label the core does not read changes nothing, and wakes nothing.
      services?.onEvent("MODIFIED", service("web", "192.0.2.1", "b"));
      expect(heard).toEqual([]);
      services?.onEvent("MODIFIED", service("web", "192.0.2.2"));
      services?.onEvent("DELETED", service("web", "192.0.2.2"));
      expect(heard).toEqual(["markDirty", "markDirty"]);
      expect(engine.result().ruleset.families[0]?.mappings).toEqual([]);
    } finally {
      await watch.stop();
    }
  });

  it("reports a failing watch, and how long it failed on the clock once it answers again", async () => {
    let serviceWatches = 0;
    const { cluster } = inMemoryCluster([], [], (path, _onEvent, onDone) => {
      // The first watch of Services fails at once, as a refused connection does.
      if (path === "/services" && ++serviceWatches === 1) onDone(new Error("connection reset"));
    });
    const { clock, metrics, lines, heard, watch, listener } = setUp(cluster);
    watch.start(listener);
    try {
      await clock.idle();
      expect(heard).toEqual(["recheckReadiness", "recheckReadiness"]);
      expect(lines).toContainEqual(
        expect.objectContaining({
          msg: "this node's Node object was not found; pod CIDRs unknown",
        }),
      );
      const failed = lines.find((line) => line.msg === "watch failed; retrying");
      expect(failed).toMatchObject({ resource: "services", err: { message: "connection reset" } });
      const retryInMs = failed?.retryInMs as number;
      expect(await metrics.registry.metrics()).toMatch(
        /ipvs_node_controller_watch_failing\{resource="services"\} 1/,
      );
      await clock.advance(retryInMs);
      expect(serviceWatches).toBe(2);
      expect(lines.filter((line) => line.msg === "watch recovered")).toEqual([
        expect.objectContaining({ resource: "services", failedForMs: retryInMs }),
      ]);
      const text = await metrics.registry.metrics();
      expect(text).toMatch(/ipvs_node_controller_watch_failing\{resource="services"\} 0/);
      expect(text).toMatch(/ipvs_node_controller_watch_restarts_total\{resource="services"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_watch_failing\{resource="node"\} 0/);
    } finally {
      await watch.stop();
    }
  });
});
