/**
 * `ipvs-node-controller run`: the node agent. Wires watch → cache → core → backend → kernel.
 */
import type { Server } from "node:http";
import {
  type Backend,
  BackendError,
  type CoreConfig,
  computeRuleset,
  type RulesetResult,
  resolveConfig,
} from "@ipvs-node-controller/core";
import { CoreV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  closeServer,
  type HealthSource,
  healthRoutes,
  metricsRoutes,
  serve,
} from "./http-server.js";
import { Reflector, type ReflectorEvent } from "./kube/reflector.js";
import {
  equivalentNodes,
  equivalentServices,
  type NodeFacts,
  trimNode,
  trimService,
} from "./kube/trim.js";
import { ControllerMetrics } from "./metrics.js";
import { type BackendFlags, type BackendName, createBackend } from "./options.js";
import { SyncLoop } from "./sync-loop.js";

/** Everything `run` needs, already validated. */
export interface RunOptions {
  /** Path of a kubeconfig; default: in-cluster config, else `KUBECONFIG` / `~/.kube/config`. */
  readonly kubeconfig?: string;
  /** This node's name, whose pod CIDRs are used. */
  readonly nodeName: string;
  readonly backend: BackendName;
  readonly backendFlags: Omit<BackendFlags, "backend">;
  readonly config: Partial<CoreConfig>;
  /** Extra pod CIDRs (e.g. when the CNI leaves Node.spec.podCIDRs empty). */
  readonly extraPodCIDRs?: readonly string[];
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

function loadKubeConfig(path: string | undefined): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (path !== undefined) kubeConfig.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kubeConfig.loadFromCluster();
  else kubeConfig.loadFromDefault();
  return kubeConfig;
}

/** Removes whatever the other backend left behind, so switching `--backend` is safe. */
async function removeOtherBackend(options: RunOptions): Promise<void> {
  const other: BackendName = options.backend === "nft" ? "iptables" : "nft";
  try {
    const removed = await createBackend(other, options.backendFlags).cleanup();
    if (removed)
      options.log.info({ backend: other }, "removed the rules of the previously used backend");
  } catch (error) {
    if (error instanceof BackendError && error.notStarted) {
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
  return (event: ReflectorEvent) => {
    switch (event.type) {
      case "listed":
        log.info({ resource, objects: event.objects }, "listed");
        break;
      case "expired":
        log.info({ resource }, "resource version expired; listing again");
        break;
      case "retry":
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

/** Starts the controller; resolves once the servers listen and the watches started. */
export async function runController(options: RunOptions): Promise<RunningController> {
  const { log } = options;
  // Validate before touching anything: a bad flag must not leave half a controller behind.
  resolveConfig(options.config);
  const kubeConfig = loadKubeConfig(options.kubeconfig);
  const api = kubeConfig.makeApiClient(CoreV1Api);
  const watch = new Watch(kubeConfig);
  const metrics = new ControllerMetrics({ processMetrics: true });
  const backend: Backend = createBackend(options.backend, options.backendFlags, (message) =>
    log.info(message),
  );
  await removeOtherBackend(options);

  const pageSize = options.listPageSize ?? 500;
  let loop: SyncLoop | undefined;
  const onChange = () => loop?.markDirty();
  const services = new Reflector({
    name: "services",
    list: (token) => api.listServiceForAllNamespaces({ limit: pageSize, _continue: token }),
    watchPath: "/api/v1/services",
    watch,
    trim: trimService,
    equivalent: equivalentServices,
    onChange,
    onEvent: logReflectorEvent(log, metrics, "services"),
  });
  const fieldSelector = `metadata.name=${options.nodeName}`;
  const nodes = new Reflector<NodeFacts>({
    name: "node",
    list: (token) => api.listNode({ fieldSelector, _continue: token }),
    watchPath: "/api/v1/nodes",
    watchQuery: { fieldSelector },
    watch,
    trim: trimNode,
    equivalent: equivalentNodes,
    onChange,
    onEvent: logReflectorEvent(log, metrics, "node"),
  });

  let warnedMissingNode = false;
  const desired = (): RulesetResult | undefined => {
    if (!services.hasSynced || !nodes.hasSynced) return undefined;
    const node = nodes.store.values().next().value as NodeFacts | undefined;
    if (node === undefined && !warnedMissingNode) {
      warnedMissingNode = true;
      // The logger's base fields already name the node.
      log.warn("this node's Node object was not found; pod CIDRs unknown");
    }
    const podCIDRs = [...(node?.podCIDRs ?? []), ...(options.extraPodCIDRs ?? [])];
    return computeRuleset({
      services: [...services.store.values()],
      node: { podCIDRs },
      config: options.config,
    });
  };

  loop = new SyncLoop({
    backend,
    desired,
    minSyncPeriodMs: options.minSyncPeriodMs,
    syncPeriodMs: options.syncPeriodMs,
    metrics,
    log,
  });
  let stopping = false;
  const health: HealthSource = {
    alive: () => !stopping,
    ready: () => {
      if (!services.hasSynced || !nodes.hasSynced)
        return { ready: false, reason: "caches not synced" };
      return (loop as SyncLoop).readiness();
    },
  };

  const servers: Server[] = [];
  try {
    if (options.metricsAddress)
      servers.push(await serve(options.metricsAddress, metricsRoutes(metrics.registry)));
    if (options.healthAddress)
      servers.push(await serve(options.healthAddress, healthRoutes(health)));
  } catch (error) {
    await Promise.all(servers.map(closeServer));
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
      await Promise.all(servers.map(closeServer));
      log.info("controller stopped; rules left in place");
    },
  };
}
