/** The controller's health as `/healthz` and `/readyz` answer it, from its parts. */
import { describe, expect, it } from "vitest";
import { controllerHealth, type HealthState } from "../src/health.js";

function parts(sync: { liveness: HealthState; readiness: HealthState }) {
  const state = { stopping: false, synced: false };
  const health = controllerHealth({
    stopping: () => state.stopping,
    synced: () => state.synced,
    sync: { liveness: () => sync.liveness, readiness: () => sync.readiness },
  });
  return { state, health };
}

describe("controllerHealth", () => {
  it("is not ready before the caches have synced, then as ready as the sync loop", () => {
    const { state, health } = parts({
      liveness: { ok: true },
      readiness: { ok: false, reason: "waiting for the first sync" },
    });
    expect(health.ready()).toEqual({ ok: false, reason: "caches not synced" });
    state.synced = true;
    expect(health.ready()).toEqual({ ok: false, reason: "waiting for the first sync" });
  });

  it("is as alive as the sync loop until it stops", () => {
    const wedged: HealthState = {
      ok: false,
      reason: "a sync has run for 61000 ms (limit 60000 ms)",
    };
    const { state, health } = parts({ liveness: wedged, readiness: { ok: true } });
    expect(health.alive()).toEqual(wedged);
    state.stopping = true;
    expect(health.alive()).toEqual({ ok: false, reason: "stopping" });
  });
});
