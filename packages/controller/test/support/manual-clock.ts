import type { Clock } from "../../src/clock.js";

interface Sleeper {
  readonly until: number;
  readonly wakeUp: () => void;
}

/**
 * A clock that moves only when a test says so. `idle()` waits until the code under test sleeps
 * (it has done all it can at this instant); `advance(ms)` moves time forward, waking each sleeper
 * in turn and letting it run until it sleeps again.
 */
export class ManualClock implements Clock {
  private time = 1_000_000;
  private readonly sleepers = new Set<Sleeper>();

  now(): number {
    return this.time;
  }

  sleep(ms: number, wake: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (wake.aborted) {
        resolve();
        return;
      }
      const sleeper: Sleeper = {
        until: this.time + Math.max(0, ms),
        wakeUp: () => {
          this.sleepers.delete(sleeper);
          wake.removeEventListener("abort", sleeper.wakeUp);
          resolve();
        },
      };
      wake.addEventListener("abort", sleeper.wakeUp);
      this.sleepers.add(sleeper);
    });
  }

  /** Moves time forward by `ms`, in steps from one sleeper's deadline to the next. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    await this.idle();
    for (;;) {
      const due = [...this.sleepers].sort((a, b) => a.until - b.until)[0];
      if (due === undefined || due.until > target) break;
      this.time = Math.max(this.time, due.until);
      due.wakeUp();
      await this.idle();
    }
    this.time = target;
  }

  /** Moves time without waking anyone: work that takes time, as seen from inside it. */
  pass(ms: number): void {
    this.time += ms;
  }

  /**
   * Resolves once someone sleeps on this clock and stays asleep for a few turns, so that work it
   * started in the background (and that may wake it) has run; fails if nobody does within many
   * turns.
   */
  async idle(): Promise<void> {
    let asleepFor = 0;
    for (let turn = 0; turn < 10_000; turn++) {
      asleepFor = this.sleepers.size > 0 ? asleepFor + 1 : 0;
      if (asleepFor >= 10) return;
      await new Promise((resolve) => setImmediate(resolve));
    }
    throw new Error("nobody went to sleep: the code under test is stuck or busy");
  }
}
