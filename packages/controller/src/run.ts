/**
 * `ipvs-node-controller run`: the node agent. Wires watch → cache → core → backend → kernel.
 */
import type { Server } from "node:http";
import {
  type Backend,
  type CommandRunner,
  ToolNotStartedError,
} from "@ipvs-node-controller/backend";
import {
  type CoreConfig,
  type NodeInput,
  RulesetEngine,
  type RulesetResult,
  type ServiceInput,
} from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import { createConntrackCleaner } from "./conntrack.js";
import {
  closeServer,
  type HealthSource,
  healthRoutes,
  metricsRoutes,
  serve,
} from "./http-server.js";
import { clusterFromKubeconfig } from "./kube/cluster.js";
import { Reflector, type ReflectorEvent } from "./kube/reflector.js";
import { ControllerMetrics } from "./metrics.js";
import { describeLocality, inspectNodeNetwork, localityOf } from "./node-network.js";
import { type BackendFlags, type BackendName, createBackend, createRunner } from "./options.js";
import { OtherBackendJanitor } from "./other-backend.js";
import { SyncLoop } from "./sync-loop.js";

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
}

/** A running controller. */
export interface RunningController {
  readonly metrics: ControllerMetrics;
  readonly health: HealthSource;
  /** Stops watching, lets an apply in progress finish, closes the servers. Leaves the rules in place. */
  stop(): Promise<void>;
}

/** The backend that `--backend` did not choose. */
function otherBackendName(options: RunOptions): BackendName {
  return options.backend === "nft" ? "iptables" : "nft";
}

/**
 * Removes whatever the other backend left behind, so switching `--backend` is safe. Called by
 * the {@link OtherBackendJanitor} once our rules are in place and no instance of the other
 * backend runs.
 */
async function removeOtherBackend(options: RunOptions, otherBackend: Backend): Promise<void> {
  const other = otherBackendName(options);
  try {
    const removed = await otherBackend.cleanup();
    if (removed) {
      options.log.info({ backend: other }, "removed the rules of the previously used backend");
    }
  } catch (error) {
    if (error instanceof ToolNotStartedError) {
      // The other tool is not installed, so it cannot have left anything behind.
      options.log.debug(
        { backend: other, err: error },
        "the other backend's tool is not available",
      );
    } else {
      options.log.warn(
        { backend: other, err: error },
        "could not remove the other backend's rules",
      );
    }
  }
}

function logReflectorEvent(log: Logger, metrics: ControllerMetrics, resource: string) {
  // When listing or watching started to fail; undefined while the API server answers.
  let failingSince: number | undefined;
  metrics.watchFailing.set({ resource }, 0);
  const answered = () => {
    if (failingSince === undefined) return;
    log.info({ resource, failedForMs: Date.now() - failingSince }, "watch recovered");
    failingSince = undefined;
    metrics.watchFailing.set({ resource }, 0);
  };
  return (event: ReflectorEvent) => {
    switch (event.type) {
      case "listed":
        answered();
        log.info({ resource, objects: event.objects }, "listed");
        if (resource === "node" && event.objects === 0) {
          // The logger's base fields already name the node.
          log.warn("this node's Node object was not found; pod CIDRs unknown");
        }
        break;
      case "expired":
        log.info({ resource }, "resource version expired; listing again");
        break;
      case "watching":
        answered();
        break;
      case "retry":
        failingSince ??= Date.now();
        metrics.watchFailing.set({ resource }, 1);
        metrics.watchRestarts.inc({ resource });
        log.warn(
          { resource, err: event.error, retryInMs: event.delayMs },
          "watch failed; retrying",
        );
        break;
      case "watch-ended":
        if (event.error) log.debug({ resource, err: event.error }, "watch ended");
        break;
    }
  };
}

/**
 * Reports how many translated external IPs are local addresses of the node, and whether
 * kube-ipvs0 exists: as metrics always, in the log when the answer changes.
 */
function nodeInspector(runner: CommandRunner, metrics: ControllerMetrics, log: Logger) {
  let lastReport = "";
  return async (result: RulesetResult) => {
    const report = localityOf(result.ruleset, await inspectNodeNetwork(runner));
    for (const family of ["ipv4", "ipv6"] as const) {
      metrics.externalIPs.set({ family }, report.externalIPs[family]);
      metrics.localExternalIPs.set({ family }, report.local[family]);
    }
    metrics.kubeIpvsInterface.set(report.kubeIpvsInterface ? 1 : 0);
    const sentence = describeLocality(report);
    if (sentence !== lastReport) {
      lastReport = sentence;
      log.info({ ...report }, sentence);
    }
  };
}

/** Starts the controller; resolves once the servers listen and the watches started. */
export async function runController(options: RunOptions): Promise<RunningController> {
  const { log } = options;
  // Validate before touching anything: a bad flag must not leave half a controller behind.
  const engine = new RulesetEngine({ config: options.config });
  const cluster = clusterFromKubeconfig({
    kubeconfig: options.kubeconfig,
    nodeName: options.nodeName,
    ...(options.listPageSize === undefined ? {} : { pageSize: options.listPageSize }),
  });
  const metrics = new ControllerMetrics({ processMetrics: true });
  const runner = createRunner(options.backendFlags);
  const backend: Backend = createBackend(options.backend, options.backendFlags, runner, (message) =>
    log.info(message),
  );
  // One instance of the other backend per process: its variant detection runs once.
  const otherBackend = createBackend(otherBackendName(options), options.backendFlags, runner);
  const janitor = new OtherBackendJanitor({
    backend: options.backend,
    other: otherBackendName(options),
    removeOther: () => removeOtherBackend(options, otherBackend),
    log,
  });
  const inspectNode = nodeInspector(runner, metrics, log);

  let loop: SyncLoop | undefined;
  // A list that finds nothing (no Node object, no Service) changes nothing in the engine, yet it
  // may be the one the first sync was waiting for: without this, that sync would wait for the
  // next periodic one.
  const wakeWhenListed =
    (next: (event: ReflectorEvent) => void) =>
    (event: ReflectorEvent): void => {
      next(event);
      if (event.type === "listed") loop?.recheckReadiness();
    };
  const services = new Reflector<ServiceInput>({
    ...cluster.services,
    watch: cluster.watch,
    onChange: (key, service) => {
      // An update that changes nothing the core reads (a label, a condition) wakes nothing.
      if (engine.setService(key, service)) loop?.markDirty();
    },
    onEvent: wakeWhenListed(logReflectorEvent(log, metrics, "services")),
  });
  const nodes = new Reflector<NodeInput>({
    ...cluster.node,
    watch: cluster.watch,
    onChange: (_key, node) => {
      if (engine.setNode(node)) loop?.markDirty();
    },
    onEvent: wakeWhenListed(logReflectorEvent(log, metrics, "node")),
  });

  loop = new SyncLoop({
    backend,
    state: {
      ready: () => services.hasSynced && nodes.hasSynced,
      takeChanges: () => engine.takeChanges(),
      result: () => engine.result(),
      stats: () => engine.stats(),
    },
    minSyncPeriodMs: options.minSyncPeriodMs,
    syncPeriodMs: options.syncPeriodMs,
    metrics,
    log,
    // Called when our rules are in place: after a full sync and after each verify.
    inspect: async (result) => {
      await janitor.afterSync();
      await inspectNode(result);
    },
    conntrack: createConntrackCleaner({ runner, log, registry: metrics.registry }),
  });
  let stopping = false;
  const health: HealthSource = {
    alive: () => (stopping ? { ok: false, reason: "stopping" } : (loop as SyncLoop).liveness()),
    ready: () => {
      if (!services.hasSynced || !nodes.hasSynced)
        return { ok: false, reason: "caches not synced" };
      return (loop as SyncLoop).readiness();
    },
  };

  const servers: Server[] = [];
  try {
    if (options.metricsAddress) {
      servers.push(await serve(options.metricsAddress, metricsRoutes(metrics.registry)));
    }
    if (options.healthAddress) {
      servers.push(await serve(options.healthAddress, healthRoutes(health)));
    }
  } catch (error) {
    await Promise.all(servers.map(closeServer));
    await janitor.stop();
    throw error;
  }
  services.start();
  nodes.start();
  loop.start();
  log.info({ backend: options.backend, syncPeriodMs: options.syncPeriodMs }, "controller started");

  return {
    metrics,
    health,
    async stop() {
      if (stopping) return;
      stopping = true;
      await Promise.all([services.stop(), nodes.stop()]);
      await (loop as SyncLoop).stop();
      await janitor.stop();
      await Promise.all(servers.map(closeServer));
      log.info("controller stopped; rules left in place");
    },
  };
}
