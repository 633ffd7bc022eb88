/** Retry delays that double after each consecutive failure, up to a ceiling. */
export interface Backoff {
  /** The delay after the first failure. */
  readonly initialMs: number;
  /** The longest delay. */
  readonly maxMs: number;
}

/** The delay before the next attempt after `failures` consecutive failures (1 or more). */
export function backoffDelay(backoff: Backoff, failures: number): number {
  return Math.min(backoff.maxMs, backoff.initialMs * 2 ** (failures - 1));
}
