/**
 * The controller's health, as `/healthz` (liveness) and `/readyz` (readiness) answer it.
 */

/** A health answer, with the reason when unhealthy. */
export type HealthState = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** What the health endpoints report. */
export interface HealthSource {
  /** Liveness: the loop is not wedged (no change waiting, no operation running, too long). */
  alive(): HealthState;
  /** Readiness: caches synced and the last sync succeeded. */
  ready(): HealthState;
}

/** What the controller's health is made of. */
export interface HealthParts {
  /** True once the controller was told to stop. */
  readonly stopping: () => boolean;
  /** True once every cache has synced. */
  readonly synced: () => boolean;
  /** The sync loop's own liveness and readiness. */
  readonly sync: { liveness(): HealthState; readiness(): HealthState };
}

/**
 * Alive unless stopping or the sync loop is wedged; ready once the caches have synced and as long
 * as the last sync succeeded.
 */
export function controllerHealth({ stopping, synced, sync }: HealthParts): HealthSource {
  return {
    alive: () => (stopping() ? { ok: false, reason: "stopping" } : sync.liveness()),
    ready: () => (synced() ? sync.readiness() : { ok: false, reason: "caches not synced" }),
  };
}
