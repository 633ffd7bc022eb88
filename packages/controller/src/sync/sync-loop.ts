import { type Backoff, backoffDelay } from "../backoff.js";
import { type Clock, systemClock } from "../clock.js";
import { errorLine } from "../error-line.js";
import type { HealthState } from "../health.js";
import { SyncHealth } from "./health.js";
import { Syncer, type SyncerOptions } from "./syncer.js";

/** Options of {@link SyncLoop}; the backend, the desired state and the rest go to its syncs. */
export interface SyncLoopOptions extends Omit<SyncerOptions, "clock" | "onDrift"> {
  /** False until every cache has synced: applying before that would cut traffic. Default: ready. */
  readonly ready?: () => boolean;
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
  /** Default: the real clock. */
  readonly clock?: Clock;
}

/** See the module comment. */
export class SyncLoop {
  private readonly clock: Clock;
  private readonly ready: () => boolean;
  private readonly health: SyncHealth;
  private readonly syncer: Syncer;
  /** Changes arrived that no sync has taken yet. */
  private dirty = false;
  /** A verify found the kernel elsewhere: the next sync is a full one. */
  private repairDue = false;
  private stopped = false;
  private wake = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(private readonly options: SyncLoopOptions) {
    this.clock = options.clock ?? systemClock;
    this.ready = options.ready ?? (() => true);
    this.health = new SyncHealth(options.healthTimeoutMs ?? 2 * options.syncPeriodMs);
    this.syncer = new Syncer({
      ...options,
      clock: this.clock,
      onDrift: () => {
        this.repairDue = true;
        this.wake.abort();
      },
    });
  }

  /** Notes that the inputs changed; the next sync picks it up. */
  markDirty(): void {
    this.dirty = true;
    this.health.changeObserved(this.clock.now());
    this.wake.abort();
  }

  /**
   * Wakes the loop to ask `ready()` again, e.g. after a cache's initial list, which may change
   * nothing and yet be what the first sync waits for. Marks nothing as changed.
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
    await this.syncer.settled();
  }

  /** Readiness: once a sync succeeded and as long as the last one did. */
  readiness(): HealthState {
    return this.health.readiness();
  }

  /**
   * Liveness: healthy while the inputs are not ready (a controller that cannot reach the API
   * server is not helped by a restart); after that see {@link SyncHealth.liveness}.
   */
  liveness(): HealthState {
    return this.ready() ? this.health.liveness(this.clock.now()) : { ok: true };
  }

  private async sleep(ms: number): Promise<void> {
    if (this.wake.signal.aborted) this.wake = new AbortController();
    await this.clock.sleep(ms, this.wake.signal);
  }

  private async run(): Promise<void> {
    const { minSyncPeriodMs, syncPeriodMs, metrics, log } = this.options;
    const retry = this.options.retry ?? { initialMs: 1000, maxMs: Math.min(syncPeriodMs, 60_000) };
    let nextVerifyAt = this.clock.now() + syncPeriodMs;
    let lastApplyAt = Number.NEGATIVE_INFINITY;
    let retryAt: number | undefined;
    let failures = 0;
    let full = true;

    while (!this.stopped) {
      if (!this.ready()) {
        await this.sleep(syncPeriodMs);
        continue;
      }
      // The first sync, and a retry, are changes waiting for the kernel too.
      if (full) this.health.changeObserved(this.clock.now());
      const now = this.clock.now();
      const waitingForRetry = retryAt !== undefined && now < retryAt;
      const wantsApply = (full || this.repairDue || this.dirty) && !waitingForRetry;
      const verifyDue = now >= nextVerifyAt && !waitingForRetry && !this.syncer.verifying;
      if (!wantsApply && !verifyDue) {
        await this.sleep((waitingForRetry ? (retryAt as number) : nextVerifyAt) - now);
        continue;
      }
      if (wantsApply && now < lastApplyAt + minSyncPeriodMs) {
        await this.sleep(lastApplyAt + minSyncPeriodMs - now);
        continue;
      }

      this.dirty = false;
      const repair = this.repairDue;
      this.repairDue = false;
      const observedAt = this.health.attemptStarted(now);
      try {
        const outcome = await this.syncer.sync({
          full: full || repair,
          verify: verifyDue,
          startedAt: now,
        });
        this.health.synced();
        // Our rules are in place after a full sync: the node can be inspected against them.
        if (outcome.full !== undefined) await this.syncer.inspect(outcome.full);
        if (outcome.sent) lastApplyAt = this.clock.now();
        full = false;
        failures = 0;
        retryAt = undefined;
        if (observedAt !== undefined) {
          metrics.programmingLatency.observe((this.clock.now() - observedAt) / 1000);
        }
      } catch (error) {
        failures += 1;
        full = true;
        const delay = backoffDelay(retry, failures);
        retryAt = this.clock.now() + delay;
        this.health.failed(errorLine(error), observedAt, this.clock.now());
        metrics.syncFailures.inc();
        log.error(
          { err: error, failures, retryInMs: delay },
          "sync failed; the previous rules stay in place",
        );
      } finally {
        this.health.attemptEnded();
      }
      if (verifyDue) nextVerifyAt = this.clock.now() + syncPeriodMs;
    }
  }
}
