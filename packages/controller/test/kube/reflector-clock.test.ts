/**
 * The reflector's waits on an injected clock, with its jitter fixed: retry delays that double up
 * to the ceiling, a list that never answers, and a watch that outlives its server-side timeout.
 * No real time passes; the list and watch are in memory.
 */
import { describe, expect, it } from "vitest";
import type { ListPage } from "../../src/kube/list.js";
import { Reflector, type ReflectorEvent, type ReflectorOptions } from "../../src/kube/reflector.js";
import { ManualClock } from "../support/manual-clock.js";

const service = (name: string) => ({
  metadata: { namespace: "default", name, resourceVersion: "1" },
});

/** A reflector on a manual clock whose jitter is `random`, over the given list and watch. */
function reflectorOn(
  clock: ManualClock,
  overrides: Partial<ReflectorOptions<unknown>> & Pick<ReflectorOptions<unknown>, "list">,
) {
  const events: ReflectorEvent[] = [];
  const reflector = new Reflector<unknown>({
    name: "services",
    watchPath: "/api/v1/services",
    watch: { watch: async () => new AbortController() },
    trim: (object) => object,
    onChange: () => {},
    onEvent: (event) => events.push(event),
    clock,
    ...overrides,
  });
  return { reflector, events };
}

describe("Reflector on a manual clock", () => {
  it("retries a failing list after doubling delays, jittered by the injected random", async () => {
    const clock = new ManualClock();
    let lists = 0;
    const { reflector, events } = reflectorOn(clock, {
      list: async (): Promise<ListPage> => {
        lists += 1;
        throw new Error("connection refused");
      },
      backoff: { initialMs: 1_000, maxMs: 4_000 },
      // The low end of the jitter: 0.8 times the backoff.
      random: () => 0,
    });
    reflector.start();
    try {
      await clock.idle();
      expect(lists).toBe(1);
      for (const [attempt, delayMs] of [800, 1_600, 3_200, 3_200].entries()) {
        const retry = events.filter((event) => event.type === "retry")[attempt];
        expect(retry).toMatchObject({ type: "retry", delayMs });
        await clock.advance(delayMs - 1);
        expect(lists).toBe(attempt + 1);
        await clock.advance(1);
        expect(lists).toBe(attempt + 2);
      }
    } finally {
      await reflector.stop();
    }
  });

  it("abandons a list that has not answered within its time limit", async () => {
    const clock = new ManualClock();
    let lists = 0;
    const { reflector, events } = reflectorOn(clock, {
      list: () => {
        lists += 1;
        return lists === 1
          ? new Promise<ListPage>(() => {}) // never settles
          : Promise.resolve({ items: [service("a")], metadata: { resourceVersion: "2" } });
      },
      // The middle of the jitter: exactly the backoff.
      random: () => 0.5,
    });
    reflector.start();
    try {
      await clock.advance(59_999);
      expect(events).toEqual([]);
      await clock.advance(1);
      const retry = events.find((event) => event.type === "retry");
      expect(retry).toMatchObject({ delayMs: 500 });
      expect(String((retry as { error: unknown }).error)).toMatch(
        /listing services timed out after 60000 ms/,
      );
      await clock.advance(500);
      expect(lists).toBe(2);
      expect(reflector.hasSynced).toBe(true);
    } finally {
      await reflector.stop();
    }
  });

  it("restarts a watch still open its grace past the timeout it asked the server for", async () => {
    const clock = new ManualClock();
    const watches: { timeoutSeconds: unknown; controller: AbortController }[] = [];
    const { reflector, events } = reflectorOn(clock, {
      list: async () => ({ items: [service("a")], metadata: { resourceVersion: "1" } }),
      // A half-open connection: the watch starts and then nothing, ever.
      watch: {
        watch: async (_path, query) => {
          const controller = new AbortController();
          watches.push({ timeoutSeconds: query.timeoutSeconds, controller });
          return controller;
        },
      },
      // 300 + floor(0.5 * 301) = 450 s, within the default range of 300 to 600 s.
      random: () => 0.5,
    });
    reflector.start();
    try {
      await clock.idle();
      expect(watches.map((watch) => watch.timeoutSeconds)).toEqual(["450"]);
      // The default grace is 30 s past the server's timeout.
      await clock.advance(480_000 - 1);
      expect(watches).toHaveLength(1);
      expect(watches[0]?.controller.signal.aborted).toBe(false);
      await clock.advance(1);
      expect(watches[0]?.controller.signal.aborted).toBe(true);
      const retry = events.find((event) => event.type === "retry");
      expect(String((retry as { error: unknown }).error)).toMatch(
        /services watch stalled past its 450 s timeout/,
      );
      await clock.advance(500);
      expect(watches).toHaveLength(2);
    } finally {
      await reflector.stop();
    }
  });
});
