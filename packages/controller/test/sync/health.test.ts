/**
 * The sync loop's liveness and readiness, from what the loop records: the rules alone, without a
 * loop. sync-loop.test.ts and sync-loop-liveness.test.ts show them through the loop.
 */
import { describe, expect, it } from "vitest";
import { SyncHealth } from "../../src/sync/health.js";

const LIMIT = 60_000;

describe("SyncHealth", () => {
  it("is ready once an attempt succeeded, not after a failed one, and again after a success", () => {
    const health = new SyncHealth(LIMIT);
    expect(health.readiness()).toEqual({ ok: false, reason: "waiting for the first sync" });
    health.attemptStarted(0);
    health.synced();
    health.attemptEnded();
    expect(health.readiness()).toEqual({ ok: true });
    health.attemptStarted(1);
    health.failed("nft said no", undefined, 1);
    health.attemptEnded();
    expect(health.readiness()).toEqual({ ok: false, reason: "last sync failed: nft said no" });
    health.attemptStarted(2);
    health.synced();
    health.attemptEnded();
    expect(health.readiness()).toEqual({ ok: true });
  });

  it("is not alive once one attempt has run longer than the limit", () => {
    const health = new SyncHealth(LIMIT);
    health.attemptStarted(1_000);
    expect(health.liveness(1_000 + LIMIT)).toEqual({ ok: true });
    expect(health.liveness(1_000 + LIMIT + 0.4)).toEqual({
      ok: false,
      reason: `a sync has run for ${LIMIT} ms (limit ${LIMIT} ms)`,
    });
    health.attemptEnded();
    expect(health.liveness(1_000 + LIMIT + 1)).toEqual({ ok: true });
  });

  it("counts a change's wait from its first observation, through failed attempts and during them", () => {
    const health = new SyncHealth(LIMIT);
    health.changeObserved(0);
    health.changeObserved(500); // a later change does not reset the wait
    const observedAt = health.attemptStarted(1_000);
    expect(observedAt).toBe(0);
    health.failed("timed out", observedAt, 2_000);
    health.attemptEnded();
    // The next attempt carries the change: it still waits, also while the attempt runs.
    expect(health.attemptStarted(30_000)).toBe(0);
    expect(health.liveness(LIMIT + 1)).toEqual({
      ok: false,
      reason: `a change has waited ${LIMIT + 1} ms (limit ${LIMIT} ms)`,
    });
    health.synced();
    health.attemptEnded();
    expect(health.liveness(LIMIT + 2)).toEqual({ ok: true });
  });

  it("counts an attempt that failed carrying no change as waiting from its failure", () => {
    const health = new SyncHealth(LIMIT);
    health.failed("refused", health.attemptStarted(5_000), 7_000);
    health.attemptEnded();
    expect(health.liveness(7_000 + LIMIT)).toEqual({ ok: true });
    expect(health.liveness(7_000 + LIMIT + 1)).toMatchObject({ ok: false });
  });
});
