/**
 * Liveness while a kernel tool hangs at every attempt: each attempt is killed after its time limit
 * and retried with backoff, and the change it carries keeps waiting. Liveness must fail once that
 * change has waited past the bound, and keep failing through the attempts that follow, not only in
 * the pauses between them: a kubelet restarts only after several failed probes in a row.
 */

import { type ApplyResult, FakeBackend, ToolTimedOutError } from "@ipvs-node-controller/backend";
import { type Ruleset, RulesetEngine, type RulesetUpdate } from "@ipvs-node-controller/core";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ControllerMetrics } from "../../src/metrics.js";
import { SyncLoop } from "../../src/sync/sync-loop.js";
import { ManualClock } from "../support/manual-clock.js";
import { lbService as service } from "./sync-loop-fixtures.js";

const SYNC_PERIOD = 3_000;
const BOUND = 2 * SYNC_PERIOD;
const TOOL_TIMEOUT = 2_500;

/** A backend whose tool, while `hung`, runs until its time limit and is killed. */
class HangingBackend extends FakeBackend {
  hung = false;
  killed = 0;
  constructor(private readonly clock: ManualClock) {
    super();
  }
  private async attempt(): Promise<void> {
    if (!this.hung) return;
    await this.clock.sleep(TOOL_TIMEOUT, new AbortController().signal);
    this.killed += 1;
    throw new ToolTimedOutError("nft", TOOL_TIMEOUT);
  }
  override async apply(ruleset: Ruleset): Promise<ApplyResult> {
    await this.attempt();
    return super.apply(ruleset);
  }
  override async applyChanges(changes: RulesetUpdate): Promise<ApplyResult> {
    await this.attempt();
    return super.applyChanges(changes);
  }
}

describe("SyncLoop liveness through retries", () => {
  let loop: SyncLoop | undefined;
  afterEach(async () => {
    await loop?.stop();
  });

  it("stays unhealthy while the waiting change is being retried, and recovers", async () => {
    const clock = new ManualClock();
    const backend = new HangingBackend(clock);
    const engine = new RulesetEngine({});
    loop = new SyncLoop({
      backend,
      state: engine,
      minSyncPeriodMs: 0,
      syncPeriodMs: SYNC_PERIOD,
      retry: { initialMs: 1_000, maxMs: SYNC_PERIOD },
      metrics: new ControllerMetrics(),
      log: pino({ level: "silent" }),
      clock,
    });
    const running = loop;
    engine.setService("default/a", service("a", "192.0.2.1"));
    running.start();
    await clock.idle();
    expect(backend.ruleset()?.families[0]?.mappings).toHaveLength(1);

    backend.hung = true;
    const changedAt = clock.now();
    engine.setService("default/b", service("b", "192.0.2.2"));
    running.markDirty();
    const healthyPastBound: number[] = [];
    const unhealthyBeforeBound: number[] = [];
    while (clock.now() - changedAt < 30_000) {
      await clock.advance(100);
      const waited = clock.now() - changedAt;
      const alive = running.liveness().ok;
      if (alive && waited > BOUND) healthyPastBound.push(waited);
      if (!alive && waited <= BOUND) unhealthyBeforeBound.push(waited);
    }
    expect(unhealthyBeforeBound).toEqual([]);
    expect(healthyPastBound).toEqual([]);
    expect(running.liveness()).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^a change has waited \d+ ms \(limit 6000 ms\)$/),
    });
    expect(backend.killed).toBeGreaterThanOrEqual(5);

    backend.hung = false;
    await clock.advance(2 * SYNC_PERIOD);
    expect(running.liveness()).toEqual({ ok: true });
    expect(backend.ruleset()?.families[0]?.mappings).toHaveLength(2);
  });
});
