/**
 * One sync, as the sync loop asks for it: what changed in the desired state (or all of it) goes
 * to the backend, a verify of the whole state starts in the background when due, and the sync is
 * reported in metrics and logs. When to sync, and what a failure means, is the loop's business.
 *
 * After an apply, the conntrack entries of UDP flows it made stale are deleted (when a
 * {@link ConntrackCleaner} is given): those of the mappings that changed since the last
 * successful apply, and after a full sync those of every UDP mapping, because a full sync follows
 * a start, a failure or drift, after which the kernel may have held anything.
 */
import type { ApplyResult, Backend } from "@ipvs-node-controller/backend";
import {
  destinationKey,
  isEmptyChanges,
  type RulesetChanges,
  type RulesetResult,
  type RulesetStats,
  staleUdpDestinations,
  type UdpDestination,
  udpDestinations,
  udpDestinationsOf,
} from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { ConntrackCleaner } from "../conntrack.js";
import type { ControllerMetrics } from "../metrics.js";
import { logSkipChanges } from "../skip-report.js";

/** The desired state, as the rule engine keeps it; the core's `RulesetEngine` is one. */
export interface DesiredState {
  /** What changed since the previous call. */
  takeChanges(): RulesetChanges;
  /** The whole desired state. */
  result(): RulesetResult;
  /** Counters for metrics. */
  stats(): RulesetStats;
}

/** What one sync is asked to do. */
export interface SyncRequest {
  /** Replace everything of ours in the kernel instead of sending only what changed. */
  readonly full: boolean;
  /** Compare the kernel with the whole desired state, in the background. */
  readonly verify: boolean;
  /** When the loop started this sync, on its clock: the sync's duration is measured from here. */
  readonly startedAt: number;
}

/** What one sync did. */
export interface SyncOutcome {
  /** Whether anything was sent to the kernel. */
  readonly sent: boolean;
  /** After a full sync: the desired state now in the kernel. */
  readonly full?: RulesetResult;
}

/** Options of {@link Syncer}. */
export interface SyncerOptions {
  readonly backend: Backend;
  /** Where the desired state comes from: the rule engine, fed by the caches. */
  readonly state: DesiredState;
  readonly metrics: ControllerMetrics;
  readonly log: Logger;
  readonly clock: Clock;
  /**
   * Called with the whole desired state once it is known to be in the kernel: after every full
   * sync and every verify that found nothing to repair, e.g. to inspect the node. Its failures are
   * logged, never fatal.
   */
  readonly inspect?: (result: RulesetResult) => Promise<void>;
  /** Deletes conntrack entries of UDP flows that an apply made stale. Default: none. */
  readonly conntrack?: ConntrackCleaner;
  /** Told when a verify found the kernel elsewhere, or could not read it: it needs a full sync. */
  readonly onDrift: () => void;
}

/** See the module comment. */
export class Syncer {
  /** UDP destinations changed since the last successful apply, whose flows may be stale. */
  private readonly staleFlows = new Map<string, UdpDestination>();
  /** The verify in progress: it reads the whole kernel state, and syncs go on meanwhile. */
  private verification: Promise<void> | undefined;

  constructor(private readonly options: SyncerOptions) {}

  /** True while a verify reads the kernel. */
  get verifying(): boolean {
    return this.verification !== undefined;
  }

  /** Resolves once the verify in progress, if any, has ended. */
  async settled(): Promise<void> {
    await this.verification;
  }

  /**
   * One sync: the changes (all of them when `full`), then, when asked, a verify of the whole state
   * started in the background. Throws when the backend failed; what it carried is then lost to
   * it, and only a full sync brings the kernel back to the desired state.
   */
  async sync(request: SyncRequest): Promise<SyncOutcome> {
    const { backend, state, metrics, log, clock } = this.options;
    const changes = state.takeChanges();
    logSkipChanges(log, changes);
    // Flows to a key the desired state dropped are stale whatever the sync does: a full sync
    // below only notes the keys it keeps.
    this.noteStaleFlows(udpDestinationsOf(changes.removed));
    // Taken together with the changes, before anything is awaited: events that arrive while they
    // are applied belong to the next sync, and a verify against a state that already holds them
    // would take them for drift.
    let result = request.full || request.verify ? state.result() : undefined;
    let applied: ApplyResult | undefined;
    if (request.full && result !== undefined) {
      applied = await backend.apply(result.ruleset);
    } else if (!isEmptyChanges(changes)) {
      applied = await backend.applyChanges(changes);
    }
    // What changed in the kernel, as the backend measured it against what the kernel held.
    if (applied?.changes !== undefined) this.noteStaleFlows(staleUdpDestinations(applied.changes));
    if (request.verify && !request.full && result !== undefined) this.startVerify(result);
    if (applied !== undefined) {
      // A full sync may follow anything, also a backend's own fallback from an incremental one.
      if (applied.mode === "full") {
        result ??= state.result();
        this.noteStaleFlows(udpDestinations(result.ruleset));
      }
      await this.flushStaleFlows();
    }
    const mode = applied?.mode ?? "none";
    const seconds = (clock.now() - request.startedAt) / 1000;
    metrics.syncDuration.observe({ mode }, seconds);
    metrics.syncs.inc({ mode });
    metrics.lastSuccessfulSync.set(clock.now() / 1000);
    metrics.observeStats(state.stats());
    const sent = mode !== "none";
    if (applied !== undefined && sent) {
      log.info(
        { mode, changedMappings: applied.changedMappings, durationMs: Math.round(seconds * 1000) },
        "rules applied",
      );
    }
    return request.full && result !== undefined ? { sent, full: result } : { sent };
  }

  /** Runs the `inspect` option with a desired state that is in the kernel. Never throws. */
  async inspect(result: RulesetResult): Promise<void> {
    try {
      await this.options.inspect?.(result);
    } catch (error) {
      this.options.log.warn({ err: error }, "could not inspect the node");
    }
  }

  /**
   * Compares the kernel with `result` in the background: reading 30,000 elements back takes half
   * a second, and a change that arrives meanwhile must not wait for it. Drift (or a verify that
   * fails) is reported, for the next sync to be a full one; a backend may answer true when a
   * change of ours landed while it read, leaving the question to the next verify.
   */
  private startVerify(result: RulesetResult): void {
    const { backend, log } = this.options;
    this.verification = (async () => {
      try {
        if (await backend.verify(result.ruleset)) {
          await this.inspect(result);
          return;
        }
        log.warn("the kernel rules drifted from the desired state; repairing with a full sync");
      } catch (error) {
        log.error(
          { err: error },
          "could not read the kernel rules back; repairing with a full sync",
        );
      }
      this.options.onDrift();
    })().finally(() => {
      this.verification = undefined;
    });
  }

  private noteStaleFlows(destinations: readonly UdpDestination[]): void {
    if (this.options.conntrack === undefined) return;
    for (const destination of destinations) {
      this.staleFlows.set(destinationKey(destination), destination);
    }
  }

  /** Deletes the entries of the stale flows noted so far; the cleaner never throws. */
  private async flushStaleFlows(): Promise<void> {
    if (this.options.conntrack === undefined || this.staleFlows.size === 0) return;
    const destinations = [...this.staleFlows.values()];
    this.staleFlows.clear();
    await this.options.conntrack.flush(destinations);
  }
}
