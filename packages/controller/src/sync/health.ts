/**
 * The sync loop's liveness and readiness, decided from what the loop records as it goes: when
 * the oldest change still waiting for the kernel was observed, when the operation in progress
 * started, and how the last sync ended.
 */
import type { HealthState } from "../health.js";

/** See the module comment. Times are the loop's clock's milliseconds. */
export class SyncHealth {
  /** When the oldest change not yet in the kernel, and not carried by an attempt, was observed. */
  private pendingSince: number | undefined;
  /**
   * When the oldest change carried by the attempt in progress was observed: a change being
   * retried is still waiting, also while an attempt runs.
   */
  private carriedSince: number | undefined;
  /** When the attempt in progress started. */
  private busySince: number | undefined;
  private succeededOnce = false;
  private lastFailure: string | undefined;

  /**
   * @param timeoutMs - Liveness fails when a change has waited this long without reaching the
   *   kernel, or one attempt has run this long.
   */
  constructor(private readonly timeoutMs: number) {}

  /** A change was observed at `now`; the oldest waiting one counts. */
  changeObserved(now: number): void {
    this.pendingSince ??= now;
  }

  /**
   * An attempt starts at `now` and carries every change waiting so far. Returns when the oldest
   * of them was observed, if any.
   */
  attemptStarted(now: number): number | undefined {
    const observedAt = this.pendingSince;
    this.pendingSince = undefined;
    this.carriedSince = observedAt;
    this.busySince = now;
    return observedAt;
  }

  /** The attempt put what it carried in the kernel. */
  synced(): void {
    this.succeededOnce = true;
    this.lastFailure = undefined;
  }

  /**
   * The attempt failed for `reason`: what it carried waits again, since `observedAt` (when the
   * attempt started carrying it) or from `now`.
   */
  failed(reason: string, observedAt: number | undefined, now: number): void {
    this.pendingSince = observedAt ?? now;
    this.lastFailure = reason;
  }

  /** The attempt is over, whichever way it ended. */
  attemptEnded(): void {
    this.busySince = undefined;
    this.carriedSince = undefined;
  }

  /** Ready once a sync succeeded, and as long as the last one did. */
  readiness(): HealthState {
    if (this.lastFailure !== undefined) {
      return { ok: false, reason: `last sync failed: ${this.lastFailure}` };
    }
    if (!this.succeededOnce) return { ok: false, reason: "waiting for the first sync" };
    return { ok: true };
  }

  /**
   * Not alive when one attempt (e.g. a kernel tool that hangs) has run longer than the timeout,
   * or a change has waited that long to reach the kernel, counting the attempts to apply it: a
   * change whose every attempt is killed and retried keeps liveness failing, between attempts
   * and during them.
   */
  liveness(now: number): HealthState {
    const limit = this.timeoutMs;
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
}
