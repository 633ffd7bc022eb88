/**
 * `ipvs-node-controller run`: the node agent. Wires watch → cache → core → backend → kernel.
 */
import type { Server } from "node:http";
import type { Backend } from "@ipvs-node-controller/backend";
import { type CoreConfig, RulesetEngine } from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import { type Clock, systemClock } from "./clock.js";
import { createConntrackCleaner } from "./conntrack.js";
import { controllerHealth, type HealthSource } from "./health.js";
import { closeServer, serveEndpoints } from "./http-server.js";
import { clusterFromKubeconfig } from "./kube/cluster.js";
import { ClusterWatch } from "./kube/cluster-watch.js";
import { ControllerMetrics } from "./metrics.js";
import { localityReporter } from "./node-network.js";
import {
  type BackendFlags,
  type BackendName,
  createBackend,
  createRunner,
  otherBackendOf,
} from "./options.js";
import { OtherBackendJanitor, removeRulesOf } from "./other-backend.js";
import { SyncLoop } from "./sync/sync-loop.js";

/** Everything `run` needs, already validated. */
export interface RunOptions {
  /** Path of a kubeconfig; default: in-cluster config, else `KUBECONFIG` / `~/.kube/config`. */
  readonly kubeconfig?: string;
  /** This node's name, whose pod CIDRs are used. */
  readonly nodeName: string;
  readonly backend: BackendName;
  readonly backendFlags: Omit<BackendFlags, "backend">;
  /** Resolved core configuration (`coreConfigFromFlags`). */
  readonly config: CoreConfig;
  readonly syncPeriodMs: number;
  readonly minSyncPeriodMs: number;
  readonly metricsAddress?: { host: string; port: number };
  readonly healthAddress?: { host: string; port: number };
  readonly log: Logger;
  /** Page size of the initial list calls. */
  readonly listPageSize?: number;
  /** Default: the real clock. */
  readonly clock?: Clock;
}

/** A running controller. */
export interface RunningController {
  readonly metrics: ControllerMetrics;
  readonly health: HealthSource;
  /** Stops watching, lets an apply in progress finish, closes the servers. Leaves the rules in place. */
  stop(): Promise<void>;
}

/** Starts the controller; resolves once the servers listen and the watches started. */
export async function runController(options: RunOptions): Promise<RunningController> {
  const { log } = options;
  const clock = options.clock ?? systemClock;
  // Validate before touching anything: a bad flag must not leave half a controller behind.
  const engine = new RulesetEngine({ config: options.config });
  const cluster = clusterFromKubeconfig({
    kubeconfig: options.kubeconfig,
    nodeName: options.nodeName,
    pageSize: options.listPageSize,
  });
  const metrics = new ControllerMetrics({ processMetrics: true });
  const runner = createRunner(options.backendFlags);
  const backend: Backend = createBackend(options.backend, options.backendFlags, runner, (message) =>
    log.info(message),
  );
  // One instance of the other backend per process: its variant detection runs once.
  const otherBackend = createBackend(otherBackendOf(options.backend), options.backendFlags, runner);
  const janitor = new OtherBackendJanitor({
    backend: options.backend,
    other: otherBackend.name,
    removeOther: () => removeRulesOf(otherBackend, log),
    log,
  });
  const reportLocality = localityReporter(runner, metrics, log);

  const clusterWatch = new ClusterWatch({ cluster, sink: engine, log, metrics, clock });
  const loop = new SyncLoop({
    backend,
    state: engine,
    ready: clusterWatch.synced,
    minSyncPeriodMs: options.minSyncPeriodMs,
    syncPeriodMs: options.syncPeriodMs,
    metrics,
    log,
    clock,
    // Called when our rules are in place: after a full sync and after each verify.
    inspect: async (result) => {
      await janitor.afterSync();
      await reportLocality(result);
    },
    conntrack: createConntrackCleaner({ runner, log, registry: metrics.registry }),
  });
  let stopping = false;
  const health = controllerHealth({
    stopping: () => stopping,
    synced: clusterWatch.synced,
    sync: loop,
  });

  let servers: Server[];
  try {
    servers = await serveEndpoints({
      metrics: options.metricsAddress,
      health: options.healthAddress,
      registry: metrics.registry,
      healthSource: health,
    });
  } catch (error) {
    await janitor.stop();
    throw error;
  }
  clusterWatch.start(loop);
  loop.start();
  log.info({ backend: options.backend, syncPeriodMs: options.syncPeriodMs }, "controller started");

  return {
    metrics,
    health,
    async stop() {
      if (stopping) return;
      stopping = true;
      await clusterWatch.stop();
      await loop.stop();
      await janitor.stop();
      await Promise.all(servers.map(closeServer));
      log.info("controller stopped; rules left in place");
    },
  };
}
