/**
 * Presence of controller instances through abstract Unix sockets, and the removal of the other
 * backend's rules that depends on it. Names are unique per test so that files running in parallel
 * never see each other's instances. two-controllers.test.ts proves the same with real processes.
 */
import { eventually } from "@ipvs-node-controller/test-support";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { OtherBackendJanitor } from "../src/other-backend.js";
import { connectToPresence, holdPresence } from "../src/presence.js";

let counter = 0;
const unique = (name: string) => `${name}-test-${process.pid}-${++counter}`;
const log = pino({ level: "silent" });

describe("presence", () => {
  it("is seen while held and gone once released", async () => {
    const backend = unique("nft");
    expect(await connectToPresence(backend)).toBeUndefined();
    const presence = holdPresence(backend);
    await eventually("the name is held", () => presence.held());
    const watcher = await connectToPresence(backend);
    expect(watcher).toBeDefined();
    const closed = new Promise((resolve) => watcher?.once("close", resolve));
    await presence.release();
    await closed;
    expect(await connectToPresence(backend)).toBeUndefined();
  });

  it("lets a second holder of one name take over once the first has gone", async () => {
    const backend = unique("nft");
    const states: string[] = [];
    const first = holdPresence(backend);
    await eventually("the first holds the name", () => first.held());
    const second = holdPresence(backend, { retryMs: 20, onState: (state) => states.push(state) });
    await eventually("the second waits", () => states.includes("waiting"));
    expect(second.held()).toBe(false);
    await first.release();
    await eventually("the second holds the name", () => second.held());
    expect(states).toEqual(["waiting", "held"]);
    await second.release();
  });
});

describe("OtherBackendJanitor", () => {
  it("removes the other backend's rules when no instance of it runs", async () => {
    const [ours, other] = [unique("nft"), unique("iptables")];
    let removals = 0;
    const janitor = new OtherBackendJanitor({
      backend: ours,
      other,
      removeOther: async () => {
        removals += 1;
      },
      log,
    });
    await janitor.afterSync();
    expect(removals).toBe(1);
    await janitor.stop();
  });

  it("leaves them while the other instance runs, and removes them as soon as it ends", async () => {
    const [ours, other] = [unique("nft"), unique("iptables")];
    const running = holdPresence(other);
    await eventually("the other instance runs", () => running.held());
    let removals = 0;
    const janitor = new OtherBackendJanitor({
      backend: ours,
      other,
      removeOther: async () => {
        removals += 1;
      },
      log,
    });
    await janitor.afterSync();
    await janitor.afterSync();
    expect(removals).toBe(0);
    await running.release();
    await eventually("the rules are removed once it ended", () => removals === 1);
    await janitor.stop();
  });

  it("announces its own instance until stopped", async () => {
    const [ours, other] = [unique("nft"), unique("iptables")];
    const janitor = new OtherBackendJanitor({
      backend: ours,
      other,
      removeOther: async () => {},
      log,
    });
    await eventually("our instance is seen", async () => {
      const socket = await connectToPresence(ours);
      socket?.destroy();
      return socket !== undefined;
    });
    await janitor.stop();
    expect(await connectToPresence(ours)).toBeUndefined();
  });
});
