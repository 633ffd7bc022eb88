/**
 * A watch event that arrives while a sync is applying changes, in a sync that also verifies: the
 * verify must compare the kernel with what that sync applied, not with a desired state that
 * already holds the newer event. Otherwise every verify under churn "finds drift", logs it, and
 * replaces the whole ruleset for nothing.
 */

import { FakeBackend } from "@ipvs-node-controller/backend";
import { RulesetEngine, type RulesetUpdate } from "@ipvs-node-controller/core";
import { afterEach, describe, expect, it } from "vitest";
import { ControllerMetrics } from "../../src/metrics.js";
import { SyncLoop } from "../../src/sync/sync-loop.js";
import { ManualClock } from "../support/manual-clock.js";
import { memoryLog } from "../support/memory-log.js";
import { lbService as service } from "./sync-loop-fixtures.js";

const SYNC_PERIOD = 30_000;
const MIN_SYNC_PERIOD = 1_000;

/** Runs `during` while an incremental apply is in flight, once. */
class SlowBackend extends FakeBackend {
  during: (() => void) | undefined;
  override async applyChanges(changes: RulesetUpdate) {
    const applied = await super.applyChanges(changes);
    const during = this.during;
    this.during = undefined;
    during?.();
    return applied;
  }
}

describe("SyncLoop verify during churn", () => {
  let loop: SyncLoop | undefined;
  afterEach(async () => {
    await loop?.stop();
  });

  it("finds no drift when an event arrives during the apply of the same sync", async () => {
    const clock = new ManualClock();
    const backend = new SlowBackend();
    const engine = new RulesetEngine({ config: { extraPodCIDRs: ["10.244.1.0/24"] } });
    const { log, lines } = memoryLog();
    loop = new SyncLoop({
      backend,
      state: engine,
      minSyncPeriodMs: MIN_SYNC_PERIOD,
      syncPeriodMs: SYNC_PERIOD,
      metrics: new ControllerMetrics(),
      log,
      clock,
    });
    const running = loop;
    const change = (name: string, ip: string) => {
      engine.setService(`default/${name}`, service(name, ip));
      running.markDirty();
    };
    change("a", "192.0.2.1");
    running.start();
    await clock.idle();
    // An apply shortly before the verify is due, and a change that must wait for the minimum
    // sync period past that moment: the next sync both applies it and verifies.
    await clock.advance(SYNC_PERIOD - 500);
    change("b", "192.0.2.2");
    await clock.advance(400);
    change("c", "192.0.2.3");
    backend.during = () => change("d", "192.0.2.4");
    await clock.advance(MIN_SYNC_PERIOD);
    const calls = backend.calls.map((call) => call.method);
    expect(calls.slice(-2)).toEqual(["applyChanges", "verify"]);
    expect(lines.filter((line) => /drifted/.test(String(line.msg)))).toEqual([]);
    expect(calls.filter((method) => method === "apply")).toHaveLength(1);
    // The event that came during the apply goes out with the next sync, as a change.
    await clock.advance(MIN_SYNC_PERIOD);
    expect(backend.calls.at(-1)?.method).toBe("applyChanges");
    expect(backend.ruleset()?.families[0]?.mappings.map((m) => m.externalIP)).toEqual([
      "192.0.2.1",
      "192.0.2.2",
      "192.0.2.3",
      "192.0.2.4",
    ]);
  });
});
