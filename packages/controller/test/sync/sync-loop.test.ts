/**
 * The sync loop on an injected clock, against core's FakeBackend: when it syncs, what it sends,
 * how it retries, what it reports. No real time passes and nothing sleeps.
 */

import { FakeBackend, ToolRefusedError } from "@ipvs-node-controller/backend";
import { RulesetEngine, type ServiceInput } from "@ipvs-node-controller/core";
import { afterEach, describe, expect, it } from "vitest";
import { ControllerMetrics } from "../../src/metrics.js";
import { SyncLoop, type SyncLoopOptions } from "../../src/sync/sync-loop.js";
import { ManualClock } from "../support/manual-clock.js";
import { memoryLog } from "../support/memory-log.js";
import { lbService as service } from "./sync-loop-fixtures.js";

const SYNC_PERIOD = 30_000;
const MIN_SYNC_PERIOD = 1_000;

describe("SyncLoop", () => {
  const loops: SyncLoop[] = [];
  afterEach(async () => {
    await Promise.all(loops.splice(0).map((loop) => loop.stop()));
  });

  function setUp(overrides: Partial<SyncLoopOptions> = {}) {
    const clock = new ManualClock();
    const backend = new FakeBackend();
    const engine = new RulesetEngine({ config: { extraPodCIDRs: ["10.244.1.0/24"] } });
    const metrics = new ControllerMetrics();
    const { log, lines } = memoryLog();
    const loop = new SyncLoop({
      backend,
      state: engine,
      minSyncPeriodMs: MIN_SYNC_PERIOD,
      syncPeriodMs: SYNC_PERIOD,
      retry: { initialMs: 1_000, maxMs: 4_000 },
      metrics,
      log,
      clock,
      ...overrides,
    });
    loops.push(loop);
    const change = (key: string, value: ServiceInput | undefined) => {
      engine.setService(key, value);
      loop.markDirty();
    };
    return { clock, backend, engine, metrics, lines, loop, change };
  }

  /** The calls that reached the backend, as `method` or `method:mode`. */
  const callsOf = (backend: FakeBackend) =>
    backend.calls.map((call) =>
      "error" in call
        ? `${call.method}!`
        : `${call.method}:${typeof call.result === "boolean" ? call.result : "mode" in call.result ? call.result.mode : "read"}`,
    );

  it("does not apply before the caches have synced, then syncs everything in full", async () => {
    let synced = false;
    const { clock, backend, loop, change } = setUp({ ready: () => synced });
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.advance(SYNC_PERIOD * 3);
    expect(backend.calls).toEqual([]);
    expect(loop.readiness()).toMatchObject({ ok: false });
    synced = true;
    loop.markDirty();
    await clock.idle();
    expect(callsOf(backend)).toEqual(["apply:full"]);
    expect(backend.ruleset()?.families[0]?.mappings.map((m) => m.externalIP)).toEqual([
      "192.0.2.1",
    ]);
    expect(loop.readiness()).toEqual({ ok: true });
  });

  it("starts the first sync once told to look at readiness again, and records no change for it", async () => {
    let synced = false;
    const { clock, backend, loop, metrics } = setUp({ ready: () => synced });
    loop.start();
    await clock.advance(1_000);
    synced = true;
    loop.recheckReadiness();
    await clock.idle();
    expect(callsOf(backend)).toEqual(["apply:full"]);
    expect(loop.readiness()).toEqual({ ok: true });
    // Once ready, a wake with nothing changed sends nothing and counts no change: the first sync
    // is the only one whose programming latency is recorded.
    loop.recheckReadiness();
    await clock.advance(MIN_SYNC_PERIOD);
    expect(callsOf(backend)).toEqual(["apply:full"]);
    expect(await metrics.registry.metrics()).toMatch(
      /network_programming_duration_seconds_count 1$/m,
    );
  });

  it("then sends only what changed, and coalesces a burst within the minimum sync period", async () => {
    const { clock, backend, loop, change } = setUp();
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.idle();
    for (let i = 2; i < 12; i++) change(`default/s${i}`, service(`s${i}`, `192.0.2.${i}`));
    await clock.advance(MIN_SYNC_PERIOD - 1);
    expect(callsOf(backend)).toEqual(["apply:full"]);
    await clock.advance(1);
    expect(callsOf(backend)).toEqual(["apply:full", "applyChanges:incremental"]);
    expect(backend.calls[1]).toMatchObject({ result: { changedMappings: 10 } });
    expect(backend.ruleset()?.families[0]?.mappings).toHaveLength(11);
  });

  it("applies a change right away after a verify that found nothing to repair", async () => {
    const { clock, backend, loop, change } = setUp();
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.advance(SYNC_PERIOD);
    expect(callsOf(backend)).toEqual(["apply:full", "verify:true"]);
    const changedAt = clock.now();
    change("default/b", service("b", "192.0.2.2"));
    await clock.idle();
    expect(callsOf(backend)).toEqual(["apply:full", "verify:true", "applyChanges:incremental"]);
    expect(clock.now()).toBe(changedAt);
    // A second change right after that one still waits for the minimum sync period.
    change("default/c", service("c", "192.0.2.3"));
    await clock.advance(MIN_SYNC_PERIOD - 1);
    expect(backend.calls).toHaveLength(3);
    await clock.advance(1);
    expect(backend.calls).toHaveLength(4);
  });

  it("applies a change while a verify is still reading the kernel", async () => {
    const { clock, backend, loop, change } = setUp({ minSyncPeriodMs: 0 });
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.idle();
    let release = () => {};
    backend.blockUntil(
      new Promise((resolve) => {
        release = () => resolve();
      }),
      "verify",
    );
    await clock.advance(SYNC_PERIOD);
    change("default/b", service("b", "192.0.2.2"));
    await clock.idle();
    // The verify has not answered yet, and the change is in the kernel already.
    expect(callsOf(backend)).toEqual(["apply:full", "applyChanges:incremental"]);
    release();
    await clock.idle();
    // It compared the kernel with the state before the change: a backend whose verify overlaps a
    // change answers true (nft does); the fake does not, so a repair follows.
    expect(callsOf(backend)).toEqual([
      "apply:full",
      "applyChanges:incremental",
      "verify:false",
      "apply:full",
    ]);
  });

  it("repairs drift found by the periodic verify with a full sync", async () => {
    const { clock, backend, loop, change } = setUp();
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.idle();
    backend.drift(); // someone flushed our rules
    await clock.advance(SYNC_PERIOD);
    expect(callsOf(backend)).toEqual(["apply:full", "verify:false", "apply:full"]);
    expect(backend.ruleset()?.families[0]?.mappings).toHaveLength(1);
  });

  it("retries a failed sync with backoff, unready meanwhile, and then syncs in full", async () => {
    const { clock, backend, loop, change, metrics } = setUp();
    change("default/a", service("a", "192.0.2.1"));
    backend.failNext(new ToolRefusedError("nft said no", "nft", 1, "said no"), 2);
    loop.start();
    await clock.idle();
    expect(loop.readiness()).toEqual({ ok: false, reason: "last sync failed: nft said no" });
    await clock.advance(999);
    expect(callsOf(backend)).toEqual(["apply!"]);
    await clock.advance(1);
    expect(callsOf(backend)).toEqual(["apply!", "apply!"]);
    await clock.advance(1_999); // the second delay is doubled
    expect(backend.calls).toHaveLength(2);
    await clock.advance(1);
    expect(callsOf(backend)).toEqual(["apply!", "apply!", "apply:full"]);
    expect(loop.readiness()).toEqual({ ok: true });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/ipvs_node_controller_sync_failures_total 2/);
    expect(text).toMatch(/ipvs_node_controller_syncs_total\{mode="full"\} 1/);
  });

  it("a failed change is followed by a full sync, so nothing of it is lost", async () => {
    const { clock, backend, loop, change } = setUp();
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.idle();
    backend.failNext(new ToolRefusedError("nft said no", "nft", 1, "said no"));
    change("default/b", service("b", "192.0.2.2"));
    await clock.advance(MIN_SYNC_PERIOD);
    await clock.advance(1_000);
    expect(callsOf(backend)).toEqual(["apply:full", "applyChanges!", "apply:full"]);
    expect(backend.ruleset()?.families[0]?.mappings).toHaveLength(2);
  });

  it("measures a sync from its start, computing included", async () => {
    const { clock, loop, engine, metrics } = setUp();
    const takeChanges = engine.takeChanges.bind(engine);
    engine.takeChanges = () => {
      clock.pass(40); // computing the changes takes 40 ms
      return takeChanges();
    };
    engine.setService("default/a", service("a", "192.0.2.1"));
    loop.start();
    await clock.idle();
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/sync_duration_seconds_bucket\{le="0.025",mode="full"\} 0/);
    expect(text).toMatch(/sync_duration_seconds_bucket\{le="0.05",mode="full"\} 1/);
  });

  it("records the time from a change to its rules being in the kernel", async () => {
    const { clock, loop, change, metrics } = setUp();
    loop.start();
    await clock.idle();
    change("default/a", service("a", "192.0.2.1"));
    await clock.advance(MIN_SYNC_PERIOD);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/network_programming_duration_seconds_bucket\{le="1"\} 2/);
    expect(text).toMatch(/network_programming_duration_seconds_count 2/);
  });

  it("logs each skip and each node warning once", async () => {
    const { clock, loop, change, lines, engine } = setUp({});
    engine.setNode({ spec: { podCIDRs: ["10.244.1.0/33"] } });
    change("default/bad", service("bad", "192.0.2.300"));
    loop.start();
    await clock.idle();
    change("default/a", service("a", "192.0.2.1"));
    await clock.advance(SYNC_PERIOD * 2);
    const skipped = lines.filter((line) => line.msg === "service skipped");
    expect(skipped).toHaveLength(1);
    expect(skipped[0]).toMatchObject({ service: "default/bad", reason: "InvalidIP" });
    const warnings = lines.filter((line) => line.msg === "node configuration");
    expect(warnings).toEqual([
      expect.objectContaining({
        warning: expect.stringMatching(/pod CIDR ignored.*10.244.1.0\/33/),
      }),
    ]);
    change("default/bad", undefined);
    await clock.advance(MIN_SYNC_PERIOD);
    expect(lines.filter((line) => line.msg === "service no longer skipped")).toHaveLength(1);
  });

  it("is alive while starting, and not when a change waits longer than twice the sync period", async () => {
    let synced = false;
    let release = () => {};
    const { clock, backend, loop, change } = setUp({ ready: () => synced, minSyncPeriodMs: 0 });
    loop.start();
    await clock.advance(SYNC_PERIOD * 10);
    expect(loop.liveness()).toEqual({ ok: true });
    synced = true;
    loop.markDirty();
    await clock.idle();
    expect(loop.liveness()).toEqual({ ok: true });
    // The kernel tool hangs: the change waits, and so does the loop.
    backend.blockUntil(
      new Promise((resolve) => {
        release = () => resolve();
      }),
    );
    change("default/a", service("a", "192.0.2.1"));
    await new Promise((resolve) => setImmediate(resolve));
    clock.pass(2 * SYNC_PERIOD);
    expect(loop.liveness()).toEqual({ ok: true });
    clock.pass(1);
    expect(loop.liveness()).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/has run for 60001 ms/),
    });
    release();
    await clock.idle();
    expect(loop.liveness()).toEqual({ ok: true });
    // The time passed made the periodic verify due as well.
    expect(callsOf(backend)).toEqual(["apply:full", "applyChanges:incremental", "verify:true"]);
  });

  it("is not alive when failing syncs keep a change waiting, and alive again once it lands", async () => {
    const { clock, backend, loop, change } = setUp();
    loop.start();
    await clock.idle();
    backend.failNext(new ToolRefusedError("nft said no", "nft", 1, "said no"), 1000);
    change("default/a", service("a", "192.0.2.1"));
    await clock.advance(2 * SYNC_PERIOD + 1);
    expect(loop.liveness()).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/a change has waited/),
    });
    backend.stopFailing();
    await clock.advance(4_000);
    expect(loop.liveness()).toEqual({ ok: true });
    expect(backend.ruleset()?.families[0]?.mappings).toHaveLength(1);
  });

  it("lets an operation in progress finish on stop", async () => {
    const { backend, loop, change } = setUp();
    let release = () => {};
    backend.blockUntil(
      new Promise((resolve) => {
        release = () => resolve();
      }),
    );
    change("default/a", service("a", "192.0.2.1"));
    loop.start();
    const stopped = loop.stop();
    await new Promise((resolve) => setImmediate(resolve));
    release();
    await stopped;
    expect(callsOf(backend)).toEqual(["apply:full"]);
  });
});
