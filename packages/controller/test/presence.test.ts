/**
 * Presence of controller instances through abstract Unix sockets, and the removal of the other
 * backend's rules that depends on it (and how that removal is logged). Names are unique per test so that files running in parallel
 * never see each other's instances. two-controllers.test.ts proves the same with real processes.
 */

import { FakeBackend, ToolNotStartedError, ToolRefusedError } from "@ipvs-node-controller/backend";
import { computeRuleset } from "@ipvs-node-controller/core";
import { eventually } from "@ipvs-node-controller/test-support";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { OtherBackendJanitor, removeRulesOf } from "../src/other-backend.js";
import { connectToPresence, holdPresence } from "../src/presence.js";
import { memoryLog } from "./support/memory-log.js";

let counter = 0;
const unique = (name: string) => `${name}-test-${process.pid}-${++counter}`;
const log = pino({ level: "silent" });

/** Holds the presence of `backend`, keeping every state it reports. */
function holdAndTrack(backend: string, retryMs?: number) {
  const states: string[] = [];
  const presence = holdPresence(backend, { retryMs, onState: (state) => states.push(state) });
  return { presence, states, held: () => states.includes("held") };
}

describe("presence", () => {
  it("is seen while held and gone once released", async () => {
    const backend = unique("nft");
    expect(await connectToPresence(backend)).toBeUndefined();
    const { presence, held } = holdAndTrack(backend);
    await eventually("the name is held", held);
    const watcher = await connectToPresence(backend);
    expect(watcher).toBeDefined();
    const closed = new Promise((resolve) => watcher?.once("close", resolve));
    await presence.release();
    await closed;
    expect(await connectToPresence(backend)).toBeUndefined();
  });

  it("lets a second holder of one name take over once the first has gone", async () => {
    const backend = unique("nft");
    const first = holdAndTrack(backend);
    await eventually("the first holds the name", first.held);
    const second = holdAndTrack(backend, 20);
    await eventually("the second waits", () => second.states.includes("waiting"));
    expect(second.states).toEqual(["waiting"]);
    await first.presence.release();
    await eventually("the second holds the name", second.held);
    expect(second.states).toEqual(["waiting", "held"]);
    expect(first.states).toEqual(["held"]);
    await second.presence.release();
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
    const { presence: running, held } = holdAndTrack(other);
    await eventually("the other instance runs", held);
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

describe("removeRulesOf", () => {
  const setUp = () => {
    const backend = new FakeBackend();
    const { log, lines } = memoryLog();
    return { backend, log, lines };
  };

  it("removes what the backend left behind and says so, and nothing when there was nothing", async () => {
    const { backend, log, lines } = setUp();
    await backend.apply(computeRuleset({ services: [] }).ruleset);
    await removeRulesOf(backend, log);
    await removeRulesOf(backend, log);
    expect(backend.calls.map((call) => call.method)).toEqual(["apply", "cleanup", "cleanup"]);
    expect(lines.map((line) => line.msg)).toEqual([
      "removed the rules of the previously used backend",
    ]);
    expect(lines[0]).toMatchObject({ backend: "fake", level: 30 });
  });

  it("never throws: a tool that is not installed is a debug line, any other failure a warning", async () => {
    const { backend, log, lines } = setUp();
    backend.failNext(new ToolNotStartedError("iptables-nft-save", "ENOENT"));
    backend.failNext(new ToolRefusedError("nft said no", "nft", 1, "said no"));
    await removeRulesOf(backend, log);
    await removeRulesOf(backend, log);
    expect(lines.map(({ level, msg }) => [level, msg])).toEqual([
      [20, "the other backend's tool is not available"],
      [40, "could not remove the other backend's rules"],
    ]);
  });
});
