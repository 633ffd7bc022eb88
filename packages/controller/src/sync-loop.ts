/**
 * The level-triggered sync loop: events only mark the state dirty; a sync always computes the whole
 * desired ruleset and lets the backend apply the difference.
 */
import type { Backend, RulesetResult } from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import { type Backoff, backoffDelay } from "./backoff.js";
import type { ControllerMetrics } from "./metrics.js";

/** Options of {@link SyncLoop}. */
export interface SyncLoopOptions {
  readonly backend: Backend;
  /** The desired state, or undefined while the caches have not synced for the first time. */
  readonly desired: () => RulesetResult | undefined;
  /** Bursts of changes closer together than this are coalesced into one sync. */
  readonly minSyncPeriodMs: number;
  /** Every period the live state is verified and repaired with a full sync if it drifted. */
  readonly syncPeriodMs: number;
  /** Delays between retries of a failed apply: doubled from `initialMs` up to `maxMs`. */
  readonly retry?: Backoff;
  readonly metrics: ControllerMetrics;
  readonly log: Logger;
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
}

/** Drives the backend; see the module comment. */
export class SyncLoop {
  private dirty = true;
  /** When the oldest change not yet in the kernel was observed. */
  private pendingSince: number | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private succeededOnce = false;
  private lastFailure: string | undefined;
  private reportedSkips = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly options: SyncLoopOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Notes that the inputs changed; the next sync picks it up. */
  markDirty(): void {
    this.dirty = true;
    this.pendingSince ??= this.now();
    this.wake?.();
  }

  /** Starts the loop in the background. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Stops after the apply in progress, if any, has finished. Rules are left in place. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }

  /** Ready once a sync succeeded and as long as the last one did. */
  readiness(): { ready: true } | { ready: false; reason: string } {
    if (this.lastFailure !== undefined)
      return { ready: false, reason: `last sync failed: ${this.lastFailure}` };
    if (!this.succeededOnce) return { ready: false, reason: "waiting for the first sync" };
    return { ready: true };
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    const { minSyncPeriodMs, syncPeriodMs } = this.options;
    const retry = this.options.retry ?? { initialMs: 1000, maxMs: Math.min(syncPeriodMs, 60_000) };
    let nextVerifyAt = this.now() + syncPeriodMs;
    let lastSyncAt = Number.NEGATIVE_INFINITY;
    let retryAt: number | undefined;
    let failures = 0;
    let full = true;

    while (!this.stopped) {
      const now = this.now();
      const verifyDue = now >= nextVerifyAt;
      const retryDue = retryAt !== undefined && now >= retryAt;
      const changed = this.dirty && retryAt === undefined;
      if (!verifyDue && !retryDue && !changed) {
        await this.sleep(Math.min(retryAt ?? nextVerifyAt, nextVerifyAt) - now);
        continue;
      }
      if (now < lastSyncAt + minSyncPeriodMs) {
        await this.sleep(lastSyncAt + minSyncPeriodMs - now);
        continue;
      }
      const desired = this.options.desired();
      if (desired === undefined) {
        // Never apply before the caches have synced: an empty ruleset would cut traffic.
        this.dirty = false;
        await this.sleep(syncPeriodMs);
        continue;
      }

      lastSyncAt = now;
      this.dirty = false;
      const observedAt = this.pendingSince;
      this.pendingSince = undefined;
      try {
        await this.sync(desired, { full, verify: verifyDue && !full });
        full = false;
        failures = 0;
        retryAt = undefined;
        if (observedAt !== undefined) {
          this.options.metrics.programmingLatency.observe((this.now() - observedAt) / 1000);
        }
      } catch (error) {
        failures += 1;
        full = true;
        this.pendingSince = observedAt ?? this.now();
        this.dirty = true;
        const delay = backoffDelay(retry, failures);
        retryAt = this.now() + delay;
        this.lastFailure = (error as Error).message.split("\n")[0];
        this.options.metrics.syncFailures.inc();
        this.options.log.error(
          { err: error, failures, retryInMs: delay },
          "sync failed; the previous rules stay in place",
        );
      }
      if (verifyDue) nextVerifyAt = this.now() + syncPeriodMs;
    }
  }

  private async sync(
    desired: RulesetResult,
    how: { full: boolean; verify: boolean },
  ): Promise<void> {
    const { backend, metrics, log } = this.options;
    const started = performance.now();
    let full = how.full;
    if (how.verify && !(await backend.verify(desired.ruleset))) {
      log.warn("the kernel rules drifted from the desired state; repairing with a full sync");
      full = true;
    }
    const applied = await backend.apply(desired.ruleset, { full });
    const seconds = (performance.now() - started) / 1000;
    metrics.syncDuration.observe({ mode: applied.mode }, seconds);
    metrics.syncs.inc({ mode: applied.mode });
    metrics.lastSuccessfulSync.set(Date.now() / 1000);
    metrics.observeRuleset(desired);
    this.succeededOnce = true;
    this.lastFailure = undefined;
    this.reportSkips(desired);
    if (applied.mode !== "none") {
      log.info(
        {
          mode: applied.mode,
          changedMappings: applied.changedMappings,
          durationMs: Math.round(seconds * 1000),
        },
        "rules applied",
      );
    }
  }

  /** Logs each skipped Service once, when it first appears, rather than on every sync. */
  private reportSkips(result: RulesetResult): void {
    const current = new Set<string>();
    for (const entry of result.skipped) {
      const key = `${entry.service} ${entry.reason} ${entry.detail}`;
      current.add(key);
      if (!this.reportedSkips.has(key)) {
        this.options.log.warn(
          { service: entry.service, reason: entry.reason, detail: entry.detail },
          "service skipped",
        );
      }
    }
    this.reportedSkips = current;
  }
}
