/**
 * The reflector's defences against connections that die without an error: a watch that the
 * server never ends and a list that never answers. Both are restarted. The "server" here is an
 * in-memory list/watch source; the real API server is exercised in reflector.test.ts.
 */
import { eventually } from "@ipvs-node-controller/test-support";
import { describe, expect, it } from "vitest";
import { Reflector, type ReflectorEvent } from "../../src/kube/reflector.js";

const service = (name: string) => ({
  metadata: { namespace: "default", name, resourceVersion: "1" },
});

describe("Reflector on a silent connection", () => {
  it("restarts a watch the server should have ended but did not", async () => {
    const events: ReflectorEvent[] = [];
    let watches = 0;
    const reflector = new Reflector({
      name: "services",
      list: async () => ({ items: [service("a")], metadata: { resourceVersion: "1" } }),
      watchPath: "/api/v1/services",
      // A half-open connection: the watch starts and then nothing, ever.
      watch: {
        watch: async () => {
          watches += 1;
          return new AbortController();
        },
      },
      trim: (object) => object,
      onChange: () => {},
      onEvent: (event) => events.push(event),
      watchTimeoutSeconds: [1, 1],
      stallGraceMs: 100,
      backoff: { initialMs: 10, maxMs: 10 },
    });
    reflector.start();
    try {
      await eventually("the stalled watch is replaced", () => watches >= 2, 5000, 10);
      const retry = events.find((event) => event.type === "retry");
      expect(String((retry as { error: unknown }).error)).toMatch(
        /watch stalled past its 1 s timeout/,
      );
      expect(reflector.hasSynced).toBe(true);
    } finally {
      await reflector.stop();
    }
  });

  it("abandons a list that never answers and lists again", async () => {
    let lists = 0;
    const events: ReflectorEvent[] = [];
    const handed: string[] = [];
    const reflector = new Reflector({
      name: "services",
      list: () => {
        lists += 1;
        return lists === 1
          ? new Promise(() => {}) // never settles
          : Promise.resolve({ items: [service("b")], metadata: { resourceVersion: "2" } });
      },
      watchPath: "/api/v1/services",
      watch: { watch: async () => new AbortController() },
      trim: (object) => object,
      onChange: (key, object) => handed.push(`${key}=${object === undefined ? "deleted" : "set"}`),
      onEvent: (event) => events.push(event),
      listTimeoutMs: 100,
      backoff: { initialMs: 10, maxMs: 10 },
    });
    reflector.start();
    try {
      await eventually("the second list succeeds", () => reflector.hasSynced, 5000, 10);
      expect(lists).toBe(2);
      expect(handed).toEqual(["default/b=set"]);
      const retry = events.find((event) => event.type === "retry");
      expect(String((retry as { error: unknown }).error)).toMatch(
        /listing services timed out after 100 ms/,
      );
    } finally {
      await reflector.stop();
    }
  });
});

describe("Reflector.stop", () => {
  it("returns at once while a list is still waiting for an answer", async () => {
    const reflector = new Reflector({
      name: "services",
      list: () => new Promise(() => {}),
      watchPath: "/api/v1/services",
      watch: { watch: async () => new AbortController() },
      trim: (object) => object,
      onChange: () => {},
    });
    reflector.start();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = Date.now();
    await reflector.stop();
    // Without the abort it would wait for the 60 s list timeout.
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
