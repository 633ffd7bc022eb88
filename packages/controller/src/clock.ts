/**
 * Time as the controller sees it (the sync loop, the reflectors, the watch logs), injectable so
 * that tests drive it by hand instead of sleeping.
 */

/** A source of time and of waiting. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`, or as soon as `wake` aborts. Never rejects. */
  sleep(ms: number, wake: AbortSignal): Promise<void>;
}

/** The real clock, with sub-millisecond resolution. */
export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  sleep: (ms, wake) =>
    new Promise((resolve) => {
      if (wake.aborted) {
        resolve();
        return;
      }
      const done = () => {
        clearTimeout(timer);
        wake.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      wake.addEventListener("abort", done);
    }),
};
