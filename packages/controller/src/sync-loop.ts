/**
 * The sync loop: it decides when to bring the kernel to the desired state and how much to send.
 *
 * - The first sync, and the first after a failure, replaces everything (a full sync).
 * - After that, each sync sends only what changed since the previous one (the engine's changes),
 *   so its cost follows the change, not the number of Services. Bursts closer together than
 *   `minSyncPeriodMs` are coalesced into one sync.
 * - Every `syncPeriodMs` the kernel is read back and compared with the whole desired state; drift
 *   (someone flushed our table) is repaired with a full sync. The verify runs in the background,
 *   so a change never waits for it, and one that finds nothing to repair does not count as a
 *   sync, so it never delays the next change either.
 * - A failed sync leaves the previous rules in place and is retried with exponential backoff.
 * - After an apply, the conntrack entries of UDP flows it made stale are deleted (when a
 *   {@link ConntrackCleaner} is given): those of the mappings that changed since the last
 *   successful apply, and after a full sync those of every UDP mapping, because a full sync
 *   follows a start, a failure or drift, after which the kernel may have held anything.
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
import { type Backoff, backoffDelay } from "./backoff.js";
import { type Clock, systemClock } from "./clock.js";
import type { ConntrackCleaner } from "./conntrack.js";
import { errorLine } from "./error-line.js";
import type { HealthState as Health } from "./health.js";
import type { ControllerMetrics } from "./metrics.js";
import { groupSkips } from "./skip-report.js";

/** Where the desired state comes from: the rule engine, fed by the caches. */
export interface DesiredState {
  /** False until every cache has synced: applying before that would cut traffic. */
  ready(): boolean;
  /** What changed since the previous call. */
  takeChanges(): RulesetChanges;
  /** The whole desired state. */
  result(): RulesetResult;
  /** Counters for metrics. */
  stats(): RulesetStats;
}

/** Options of {@link SyncLoop}. */
export interface SyncLoopOptions {
  readonly backend: Backend;
  readonly state: DesiredState;
  /** Bursts of changes closer together than this are coalesced into one sync. */
  readonly minSyncPeriodMs: number;
  /** Every period the kernel is verified against the whole desired state and repaired. */
  readonly syncPeriodMs: number;
  /**
   * Liveness fails when a change has waited this long without reaching the kernel, or one
   * operation has run this long. Default: twice `syncPeriodMs`, as kube-proxy does.
   */
  readonly healthTimeoutMs?: number;
  /** Delays between retries of a failed sync: doubled from `initialMs` up to `maxMs`. */
  readonly retry?: Backoff;
  readonly metrics: ControllerMetrics;
  readonly log: Logger;
  /** Default: the real clock. */
  readonly clock?: Clock;
  /**
   * Called with the whole desired state after every full sync and every verify (when it is at
   * hand anyway), e.g. to inspect the node. Its failures are logged, never fatal.
   */
  readonly inspect?: (result: RulesetResult) => Promise<void>;
  /** Deletes conntrack entries of UDP flows that an apply made stale. Default: none. */
  readonly conntrack?: ConntrackCleaner;
}

/** See the module comment. */
export class SyncLoop {
  private dirty = false;
  /** When the oldest change not yet in the kernel was observed. */
  private pendingSince: number | undefined;
  /**
   * When the oldest change carried by the sync in progress was observed: a change being retried
   * is still waiting, also while an attempt runs.
   */
  private carriedSince: number | undefined;
  /** When the operation in progress started. */
  private busySince: number | undefined;
  private stopped = false;
  private wake = new AbortController();
  private loop: Promise<void> | undefined;
  private succeededOnce = false;
  private lastFailure: string | undefined;
  private readonly clock: Clock;
  private readonly healthTimeoutMs: number;
  /** UDP destinations changed since the last successful apply, whose flows may be stale. */
  private readonly staleFlows = new Map<string, UdpDestination>();
  /** The periodic verify in progress: it reads the whole kernel state, and changes go on meanwhile. */
  private verification: Promise<void> | undefined;
  /** Set by a verify that found the kernel elsewhere: the next sync is a full one. */
  private driftFound = false;

  constructor(private readonly options: SyncLoopOptions) {
    this.clock = options.clock ?? systemClock;
    this.healthTimeoutMs = options.healthTimeoutMs ?? 2 * options.syncPeriodMs;
  }

  /** Notes that the inputs changed; the next sync picks it up. */
  markDirty(): void {
    this.dirty = true;
    this.pendingSince ??= this.clock.now();
    this.wake.abort();
  }

  /**
   * Wakes the loop to ask `state.ready()` again, e.g. after a cache's initial list, which may
   * change nothing and yet be what the first sync waits for. Marks nothing as changed.
   */
  recheckReadiness(): void {
    this.wake.abort();
  }

  /** Starts the loop in the background. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Stops after the operation in progress, if any, has finished. Rules are left in place. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake.abort();
    await this.loop;
    await this.verification;
  }

  /** Readiness: once a sync succeeded and as long as the last one did. */
  readiness(): Health {
    if (this.lastFailure !== undefined) {
      return { ok: false, reason: `last sync failed: ${this.lastFailure}` };
    }
    if (!this.succeededOnce) return { ok: false, reason: "waiting for the first sync" };
    return { ok: true };
  }

  /**
   * Liveness: healthy while starting; unhealthy when one operation (e.g. a kernel tool that hangs)
   * has run longer than the health timeout, or a change has waited that long to reach the kernel,
   * counting the attempts to apply it: a change whose every attempt is killed and retried keeps
   * liveness failing, between attempts and during them.
   */
  liveness(): Health {
    if (!this.options.state.ready()) return { ok: true };
    const now = this.clock.now();
    const limit = this.healthTimeoutMs;
    // Whole milliseconds in the reasons: the clock may be fractional, and people read them.
    if (this.busySince !== undefined && now - this.busySince > limit) {
      return {
        ok: false,
        reason: `a sync has run for ${Math.round(now - this.busySince)} ms (limit ${limit} ms)`,
      };
    }
    const waitingSince = Math.min(
      this.pendingSince ?? Number.POSITIVE_INFINITY,
      this.carriedSince ?? Number.POSITIVE_INFINITY,
    );
    if (now - waitingSince > limit) {
      return {
        ok: false,
        reason: `a change has waited ${Math.round(now - waitingSince)} ms (limit ${limit} ms)`,
      };
    }
    return { ok: true };
  }

  private async sleep(ms: number): Promise<void> {
    if (this.wake.signal.aborted) this.wake = new AbortController();
    await this.clock.sleep(ms, this.wake.signal);
  }

  private async run(): Promise<void> {
    const { minSyncPeriodMs, syncPeriodMs, state } = this.options;
    const retry = this.options.retry ?? { initialMs: 1000, maxMs: Math.min(syncPeriodMs, 60_000) };
    let nextVerifyAt = this.clock.now() + syncPeriodMs;
    let lastApplyAt = Number.NEGATIVE_INFINITY;
    let retryAt: number | undefined;
    let failures = 0;
    let full = true;

    while (!this.stopped) {
      if (!state.ready()) {
        // Never apply before the caches have synced: an empty ruleset would cut traffic.
        await this.sleep(syncPeriodMs);
        continue;
      }
      // The first sync, and a retry, are changes waiting for the kernel too.
      if (full) this.pendingSince ??= this.clock.now();
      const now = this.clock.now();
      const waitingForRetry = retryAt !== undefined && now < retryAt;
      const wantsApply = (full || this.driftFound || this.dirty) && !waitingForRetry;
      const verifyDue = now >= nextVerifyAt && !waitingForRetry && this.verification === undefined;
      if (!wantsApply && !verifyDue) {
        await this.sleep((waitingForRetry ? (retryAt as number) : nextVerifyAt) - now);
        continue;
      }
      if (wantsApply && now < lastApplyAt + minSyncPeriodMs) {
        await this.sleep(lastApplyAt + minSyncPeriodMs - now);
        continue;
      }

      this.dirty = false;
      const repair = this.driftFound;
      this.driftFound = false;
      const observedAt = this.pendingSince;
      this.pendingSince = undefined;
      this.carriedSince = observedAt;
      this.busySince = now;
      try {
        const applied = await this.sync({ full: full || repair, verify: verifyDue });
        if (applied) lastApplyAt = this.clock.now();
        full = false;
        failures = 0;
        retryAt = undefined;
        if (observedAt !== undefined) {
          this.options.metrics.programmingLatency.observe((this.clock.now() - observedAt) / 1000);
        }
      } catch (error) {
        failures += 1;
        full = true;
        this.pendingSince = observedAt ?? this.clock.now();
        const delay = backoffDelay(retry, failures);
        retryAt = this.clock.now() + delay;
        this.lastFailure = errorLine(error);
        this.options.metrics.syncFailures.inc();
        this.options.log.error(
          { err: error, failures, retryInMs: delay },
          "sync failed; the previous rules stay in place",
        );
      } finally {
        this.busySince = undefined;
        this.carriedSince = undefined;
      }
      if (verifyDue) nextVerifyAt = this.clock.now() + syncPeriodMs;
    }
  }

  /**
   * One sync: the changes (all of them when `full`), then, when due, a verify of the whole state
   * started in the background. Returns whether anything was sent to the kernel.
   */
  private async sync(how: { full: boolean; verify: boolean }): Promise<boolean> {
    const { backend, state, metrics, log } = this.options;
    const started = this.clock.now();
    const changes = state.takeChanges();
    this.report(changes);
    // Flows to a key the desired state dropped are stale whatever the sync does: a full sync
    // below only notes the keys it keeps.
    this.noteStaleFlows(udpDestinationsOf(changes.removed));
    // Taken together with the changes, before anything is awaited: events that arrive while they
    // are applied belong to the next sync, and a verify against a state that already holds them
    // would take them for drift.
    let result: RulesetResult | undefined = how.full || how.verify ? state.result() : undefined;
    let applied: ApplyResult | undefined;
    if (how.full && result !== undefined) {
      applied = await backend.apply(result.ruleset);
    } else if (!isEmptyChanges(changes)) {
      applied = await backend.applyChanges(changes);
    }
    // What changed in the kernel, as the backend measured it against what the kernel held.
    if (applied?.changes !== undefined) this.noteStaleFlows(staleUdpDestinations(applied.changes));
    if (how.verify && !how.full && result !== undefined) this.startVerify(result);
    if (applied !== undefined) {
      // A full sync may follow anything, also a backend's own fallback from an incremental one.
      if (applied.mode === "full") {
        result ??= state.result();
        this.noteStaleFlows(udpDestinations(result.ruleset));
      }
      await this.flushStaleFlows();
    }
    const mode = applied?.mode ?? "none";
    const seconds = (this.clock.now() - started) / 1000;
    metrics.syncDuration.observe({ mode }, seconds);
    metrics.syncs.inc({ mode });
    metrics.lastSuccessfulSync.set(this.clock.now() / 1000);
    metrics.observeStats(state.stats());
    this.succeededOnce = true;
    this.lastFailure = undefined;
    if (applied !== undefined && applied.mode !== "none") {
      log.info(
        { mode, changedMappings: applied.changedMappings, durationMs: Math.round(seconds * 1000) },
        "rules applied",
      );
    }
    if (how.full && result !== undefined) await this.inspect(result);
    return applied !== undefined && applied.mode !== "none";
  }

  /**
   * Compares the kernel with `result` in the background: reading 30,000 elements back takes half
   * a second, and a change that arrives meanwhile must not wait for it. Drift (or a verify that
   * fails) makes the next sync a full one; a backend may answer true when a change of ours
   * landed while it read, leaving the question to the next verify.
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
      this.driftFound = true;
      this.wake.abort();
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

  /**
   * Logs each skip and warning once, when it appears, and when a skip goes away: one line per
   * Service, however many of its addresses and ports are bad (see `groupSkips`).
   */
  private report(changes: RulesetChanges): void {
    const { log } = this.options;
    for (const group of groupSkips(changes.skipsAppeared)) {
      const many =
        group.count > 1
          ? { reasons: group.reasons, details: group.details, entries: group.count }
          : {};
      log.warn(
        { service: group.service, reason: group.reasons[0], detail: group.details[0], ...many },
        "service skipped",
      );
    }
    for (const group of groupSkips(changes.skipsDisappeared)) {
      const many = group.count > 1 ? { reasons: group.reasons, entries: group.count } : {};
      log.info(
        { service: group.service, reason: group.reasons[0], ...many },
        "service no longer skipped",
      );
    }
    for (const warning of changes.warningsAppeared) log.warn({ warning }, "node configuration");
  }

  private async inspect(result: RulesetResult): Promise<void> {
    try {
      await this.options.inspect?.(result);
    } catch (error) {
      this.options.log.warn({ err: error }, "could not inspect the node");
    }
  }
}
