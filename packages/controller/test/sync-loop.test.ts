import {
  type ApplyResult,
  type Backend,
  BackendError,
  computeRuleset,
  type Ruleset,
  type RulesetResult,
} from "@ipvs-node-controller/core";
import { eventually } from "@ipvs-node-controller/test-support";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ControllerMetrics } from "../src/metrics.js";
import { SyncLoop } from "../src/sync-loop.js";

/** An in-memory kernel: records applies, can be told to fail or to drift. */
class RecordingBackend implements Backend {
  readonly name = "recording";
  readonly applies: { ruleset: Ruleset; full: boolean }[] = [];
  live: Ruleset | undefined;
  failNext = 0;
  applyDelayMs = 0;
  render(ruleset: Ruleset): string {
    return JSON.stringify(ruleset);
  }
  async apply(ruleset: Ruleset, options?: { full?: boolean }): Promise<ApplyResult> {
    await new Promise((resolve) => setTimeout(resolve, this.applyDelayMs));
    if (this.failNext > 0) {
      this.failNext -= 1;
      throw new BackendError("kernel said no", "fake");
    }
    this.applies.push({ ruleset, full: options?.full === true });
    const same = JSON.stringify(this.live) === JSON.stringify(ruleset);
    this.live = ruleset;
    return { mode: options?.full ? "full" : same ? "none" : "incremental", changedMappings: 0 };
  }
  async verify(ruleset: Ruleset): Promise<boolean> {
    return JSON.stringify(this.live) === JSON.stringify(ruleset);
  }
  async cleanup(): Promise<boolean> {
    this.live = undefined;
    return true;
  }
}

const silent = pino({ level: "silent" });
function service(name: string, ip: string) {
  return {
    metadata: { namespace: "default", name },
    spec: { type: "LoadBalancer", clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
    status: { loadBalancer: { ingress: [{ ip }] } },
  };
}

describe("SyncLoop", () => {
  const loops: SyncLoop[] = [];
  afterEach(async () => {
    await Promise.all(loops.splice(0).map((loop) => loop.stop()));
  });

  function start(backend: Backend, desired: () => RulesetResult | undefined, overrides = {}) {
    const loop = new SyncLoop({
      backend,
      desired,
      minSyncPeriodMs: 0,
      syncPeriodMs: 60_000,
      retry: { initialMs: 10, maxMs: 40 },
      metrics: new ControllerMetrics(),
      log: silent,
      ...overrides,
    });
    loops.push(loop);
    loop.start();
    return loop;
  }

  it("does not apply before the caches have synced, then applies in full", async () => {
    const backend = new RecordingBackend();
    let synced = false;
    const loop = start(backend, () =>
      synced ? computeRuleset({ services: [service("a", "192.0.2.1")] }) : undefined,
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(backend.applies).toEqual([]);
    expect(loop.readiness().ready).toBe(false);
    synced = true;
    loop.markDirty();
    await eventually("1 apply", () => backend.applies.length === 1, 3000, 5);
    expect(backend.applies[0]?.full).toBe(true);
    expect(loop.readiness()).toEqual({ ready: true });
  });

  it("coalesces a burst of changes within the minimum sync period", async () => {
    const backend = new RecordingBackend();
    const services = [service("a", "192.0.2.1")];
    const loop = start(backend, () => computeRuleset({ services: services as never }), {
      minSyncPeriodMs: 200,
    });
    await eventually("1 apply", () => backend.applies.length === 1, 3000, 5);
    for (let i = 2; i < 12; i++) {
      services.push(service(`s${i}`, `192.0.2.${i}`));
      loop.markDirty();
    }
    await eventually("2 applies", () => backend.applies.length === 2, 3000, 5);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(backend.applies).toHaveLength(2);
    expect(backend.applies[1]?.ruleset.families[0]?.mappings).toHaveLength(11);
    expect(backend.applies[1]?.full).toBe(false);
  });

  it("retries a failed apply with backoff, unready until it succeeds, then in full", async () => {
    const backend = new RecordingBackend();
    backend.failNext = 2;
    const metrics = new ControllerMetrics();
    const loop = start(backend, () => computeRuleset({ services: [service("a", "192.0.2.1")] }), {
      metrics,
    });
    await eventually(
      "the first failure is counted",
      () =>
        (metrics.syncFailures as unknown as { hashMap: Record<string, { value: number }> }).hashMap[
          ""
        ]?.value === 1,
      3000,
      5,
    );
    expect(loop.readiness()).toMatchObject({
      ready: false,
      reason: expect.stringMatching(/kernel said no/),
    });
    await eventually("1 apply", () => backend.applies.length === 1, 3000, 5);
    expect(backend.applies[0]?.full).toBe(true);
    expect(loop.readiness()).toEqual({ ready: true });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/ipvs_node_controller_sync_failures_total 2/);
    expect(text).toMatch(/ipvs_node_controller_syncs_total\{mode="full"\} 1/);
  });

  it("repairs drift found by the periodic verification with a full sync", async () => {
    const backend = new RecordingBackend();
    start(backend, () => computeRuleset({ services: [service("a", "192.0.2.1")] }), {
      syncPeriodMs: 1000,
    });
    await eventually("1 apply", () => backend.applies.length === 1, 3000, 5);
    backend.live = undefined; // someone flushed our rules
    await eventually("2 applies", () => backend.applies.length === 2, 4000, 5);
    expect(backend.applies[1]?.full).toBe(true);
    expect(backend.live).toBeDefined();
  });

  it("lets an apply in progress finish on stop", async () => {
    const backend = new RecordingBackend();
    backend.applyDelayMs = 200;
    const loop = start(backend, () => computeRuleset({ services: [service("a", "192.0.2.1")] }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await loop.stop();
    expect(backend.applies).toHaveLength(1);
  });

  it("records the time from a change to its rules being applied", async () => {
    const backend = new RecordingBackend();
    const metrics = new ControllerMetrics();
    const loop = start(backend, () => computeRuleset({ services: [service("a", "192.0.2.1")] }), {
      metrics,
    });
    loop.markDirty();
    await eventually("at least 1 apply", () => backend.applies.length >= 1, 3000, 5);
    await loop.stop();
    expect(await metrics.registry.metrics()).toMatch(
      /network_programming_duration_seconds_count [12]\n/,
    );
  });
});
