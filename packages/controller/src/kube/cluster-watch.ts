/**
 * What `run` follows of the cluster: every Service and this node's Node object, each listed and
 * watched by a {@link Reflector}, handed to a sink (the core's `RulesetEngine`) as they arrive.
 * The state of the watches goes to the log and to metrics: `watch_failing` while the API server
 * does not answer, and how long it failed once it answers again.
 */
import type { NodeInput, ServiceInput } from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../clock.js";
import type { ControllerMetrics } from "../metrics.js";
import type { Cluster } from "./cluster.js";
import { Reflector, type ReflectorEvent } from "./reflector.js";

/** Where the objects go; the core's `RulesetEngine` is one. */
export interface ClusterSink {
  /** Takes a Service (undefined: deleted); true when that changes what the sink derives. */
  setService(key: string, service: ServiceInput | undefined): boolean;
  /** Takes this node's Node object (undefined: deleted); true when that changes anything. */
  setNode(node: NodeInput | undefined): boolean;
}

/** Who is told what arrived; the sync loop is one. */
export interface ClusterListener {
  /** The sink took a change that matters. */
  markDirty(): void;
  /** A list completed: it may have changed nothing and yet be what the first sync waits for. */
  recheckReadiness(): void;
}

/** Options of {@link ClusterWatch}. */
export interface ClusterWatchOptions {
  readonly cluster: Cluster;
  readonly sink: ClusterSink;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
  /** Default: the real clock. */
  readonly clock?: Clock;
}

/** See the module comment. */
export class ClusterWatch {
  private readonly services: Reflector<ServiceInput>;
  private readonly node: Reflector<NodeInput>;
  private listener: ClusterListener | undefined;

  constructor(options: ClusterWatchOptions) {
    const { cluster, sink } = options;
    const clock = options.clock ?? systemClock;
    this.services = new Reflector<ServiceInput>({
      ...cluster.services,
      watch: cluster.watch,
      clock,
      // An update that changes nothing the core reads (a label, a condition) wakes nothing.
      onChange: (key, service) => {
        if (sink.setService(key, service)) this.listener?.markDirty();
      },
      onEvent: this.reporter(cluster.services.name, options, clock),
    });
    this.node = new Reflector<NodeInput>({
      ...cluster.node,
      watch: cluster.watch,
      clock,
      onChange: (_key, node) => {
        if (sink.setNode(node)) this.listener?.markDirty();
      },
      onEvent: this.reporter(cluster.node.name, options, clock, { isNode: true }),
    });
  }

  /**
   * True once both the Services and the Node have been listed in full: before that the sink holds
   * part of the cluster, and applying it would cut traffic. A function, to be handed over as is.
   */
  readonly synced = (): boolean => this.services.hasSynced && this.node.hasSynced;

  /** Starts listing and watching in the background, telling `listener` what arrives. */
  start(listener: ClusterListener): void {
    this.listener = listener;
    this.services.start();
    this.node.start();
  }

  /** Stops both watches; resolves once they have ended. */
  async stop(): Promise<void> {
    await Promise.all([this.services.stop(), this.node.stop()]);
  }

  /** Logs and counts one reflector's events, and wakes the listener after each list. */
  private reporter(
    resource: string,
    { log, metrics }: ClusterWatchOptions,
    clock: Clock,
    { isNode } = { isNode: false },
  ): (event: ReflectorEvent) => void {
    // When listing or watching started to fail; undefined while the API server answers.
    let failingSince: number | undefined;
    metrics.watchFailing.set({ resource }, 0);
    const answered = () => {
      if (failingSince === undefined) return;
      log.info({ resource, failedForMs: clock.now() - failingSince }, "watch recovered");
      failingSince = undefined;
      metrics.watchFailing.set({ resource }, 0);
    };
    return (event) => {
      switch (event.type) {
        case "listed":
          answered();
          log.info({ resource, objects: event.objects }, "listed");
          if (isNode && event.objects === 0) {
            // The logger's base fields already name the node.
            log.warn("this node's Node object was not found; pod CIDRs unknown");
          }
          // A list that finds nothing (no Node object, no Service) changes nothing in the sink,
          // yet it may be the one the first sync waits for.
          this.listener?.recheckReadiness();
          break;
        case "expired":
          log.info({ resource }, "resource version expired; listing again");
          break;
        case "watching":
          answered();
          break;
        case "retry":
          failingSince ??= clock.now();
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
}
