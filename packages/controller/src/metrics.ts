/**
 * Prometheus metrics of the controller (prom-client), in a registry of its own so that several
 * controllers in one process (tests) do not collide.
 */
import type { RulesetStats } from "@ipvs-node-controller/core";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** The prefix of every metric name of the controller. */
export const METRIC_PREFIX = "ipvs_node_controller_";

/** Every metric the controller exports. */
export class ControllerMetrics {
  readonly registry = new Registry();

  constructor(options: { processMetrics?: boolean } = {}) {
    // Process and Node.js runtime metrics (resident memory, heap, event-loop lag), as every
    // Prometheus client exports them; off in tests that create many controllers in one process.
    if (options.processMetrics ?? false) collectDefaultMetrics({ register: this.registry });
  }

  /** Time of one sync: computing the ruleset and applying it. */
  readonly syncDuration = new Histogram({
    name: `${METRIC_PREFIX}sync_duration_seconds`,
    help: "Duration of a sync (compute + apply, and verify when due), by the kind of apply",
    labelNames: ["mode"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly syncs = new Counter({
    name: `${METRIC_PREFIX}syncs_total`,
    help: "Syncs that succeeded, by the kind of apply (full, incremental, none)",
    labelNames: ["mode"] as const,
    registers: [this.registry],
  });

  readonly syncFailures = new Counter({
    name: `${METRIC_PREFIX}sync_failures_total`,
    help: "Syncs whose apply failed (the previous rules stayed in place)",
    registers: [this.registry],
  });

  readonly mappings = new Gauge({
    name: `${METRIC_PREFIX}mappings`,
    help: "DNAT mappings in the kernel, by IP family",
    labelNames: ["family"] as const,
    registers: [this.registry],
  });

  readonly skippedEntries = new Gauge({
    name: `${METRIC_PREFIX}skipped_entries`,
    help: "Services or parts of Services that produced no mapping, by reason",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  readonly conflicts = new Gauge({
    name: `${METRIC_PREFIX}conflicts`,
    help: "(IP, protocol, port) claimed by more than one Service",
    registers: [this.registry],
  });

  readonly lastSuccessfulSync = new Gauge({
    name: `${METRIC_PREFIX}last_successful_sync_timestamp_seconds`,
    help: "Unix time of the last successful sync",
    registers: [this.registry],
  });

  readonly programmingLatency = new Histogram({
    name: `${METRIC_PREFIX}network_programming_duration_seconds`,
    help: "Time from a Service or Node change being observed to its rules being in the kernel",
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [this.registry],
  });

  readonly watchRestarts = new Counter({
    name: `${METRIC_PREFIX}watch_restarts_total`,
    help: "Watches restarted after an error, by resource",
    labelNames: ["resource"] as const,
    registers: [this.registry],
  });

  readonly watchFailing = new Gauge({
    name: `${METRIC_PREFIX}watch_failing`,
    help: "1 while listing or watching a resource fails (the rules stay as they are, drift is still repaired from the cache), 0 once the API server answers again, by resource",
    labelNames: ["resource"] as const,
    registers: [this.registry],
  });

  readonly localExternalIPs = new Gauge({
    name: `${METRIC_PREFIX}local_external_ips`,
    help: "Translated external IPs that are local addresses of this node (0 where kube-proxy does not run in IPVS mode: the rules are inert there), by IP family",
    labelNames: ["family"] as const,
    registers: [this.registry],
  });

  readonly externalIPs = new Gauge({
    name: `${METRIC_PREFIX}external_ips`,
    help: "Distinct external IPs with a mapping, by IP family",
    labelNames: ["family"] as const,
    registers: [this.registry],
  });

  readonly kubeIpvsInterface = new Gauge({
    name: `${METRIC_PREFIX}kube_ipvs0_present`,
    help: "1 when this node has kube-proxy's IPVS dummy interface kube-ipvs0, else 0",
    registers: [this.registry],
  });

  /** Records the engine's counters after a sync. */
  observeStats(stats: RulesetStats): void {
    for (const family of ["ipv4", "ipv6"] as const) {
      this.mappings.set({ family }, stats.mappings[family]);
    }
    this.skippedEntries.reset();
    for (const [reason, count] of stats.skipped) this.skippedEntries.set({ reason }, count);
    this.conflicts.set(stats.conflicts);
  }
}
