/**
 * The backend's decisions (full, incremental, none, fallback, errors) against nft without a
 * kernel: test-support's FakeNft applies the documents the backend sends, all or nothing, and
 * lists the table back, so every answer of `verify` and `read` goes through the real read-back.
 * The kernel tests prove the same on the real kernel.
 */
import {
  type CommandRunner,
  ToolNotStartedError,
  ToolRefusedError,
} from "@ipvs-node-controller/backend";
import {
  ConfigError,
  InvalidRulesetError,
  settingsOf,
  updateBetween,
} from "@ipvs-node-controller/core";
import { FakeNft } from "@ipvs-node-controller/test-support";
import { describe, expect, it } from "vitest";
import { createNftBackend } from "../src/index.js";
import { mapping, ruleset } from "./helpers.js";

const TABLE = "ipvs-node-controller";
const web = mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10" });
const api = mapping({ externalIP: "203.0.113.11", clusterIP: "10.96.0.11", port: 443 });
const admin = {
  ...mapping({ externalIP: "203.0.113.12", clusterIP: "10.96.0.12" }),
  allowedSources: ["10.244.0.0/16", "203.0.113.12/32"],
};
const v1 = ruleset([web]);
const v2 = ruleset([web, api]);

/** Whether a transaction rebuilt the table. */
const isFullSync = (document: Record<string, unknown>[] | undefined) =>
  document?.some((command) => "delete" in command && "table" in (command.delete as object)) ===
  true;

function setUp() {
  const nft = new FakeNft();
  return { nft, backend: createNftBackend({ runner: nft.runner }) };
}

describe("apply and applyChanges", () => {
  it("syncs fully with apply, then sends only the changed elements", async () => {
    const { nft, backend } = setUp();
    expect(await backend.apply(v1)).toEqual({ mode: "full", changedMappings: 1 });
    const changes = await backend.applyChanges(updateBetween(v1, v2));
    expect(changes).toMatchObject({ mode: "incremental", changedMappings: 1 });
    expect(changes.changes?.added).toEqual([api]);
    const [full, incremental] = nft.documents();
    expect(isFullSync(full)).toBe(true);
    expect(isFullSync(incremental)).toBe(false);
    expect(JSON.stringify(incremental)).toContain('"203.0.113.11","tcp",443');
    expect(JSON.stringify(incremental)).not.toContain('"203.0.113.10"');
    expect(await backend.verify(v2)).toBe(true);
  });

  it("measures an update against the kernel: keys that hold what they should cost nothing", async () => {
    const { nft, backend } = setUp();
    await backend.apply(v2);
    expect(
      await backend.applyChanges({ settings: settingsOf(v2), mappings: [web, api], removed: [] }),
    ).toEqual({ mode: "none", changedMappings: 0 });
    expect(nft.documents()).toHaveLength(1);
  });

  it("adds, narrows and removes a restriction element by element", async () => {
    const { nft, backend } = setUp();
    await backend.apply(v1);
    const restricted = ruleset([web, admin]);
    expect(await backend.applyChanges(updateBetween(v1, restricted))).toMatchObject({
      mode: "incremental",
    });
    expect(await backend.verify(restricted)).toBe(true);
    const narrowed = ruleset([web, { ...admin, allowedSources: ["10.244.1.0/24"] }]);
    expect(await backend.applyChanges(updateBetween(restricted, narrowed))).toMatchObject({
      mode: "incremental",
    });
    expect(await backend.verify(narrowed)).toBe(true);
    expect(await backend.applyChanges(updateBetween(narrowed, v1))).toMatchObject({
      mode: "incremental",
    });
    expect(await backend.verify(v1)).toBe(true);
    expect(nft.documents().filter(isFullSync)).toHaveLength(1);
  });

  it("answers a settings change, or a change the kernel refuses, with a full sync of the result", async () => {
    const { nft, backend } = setUp();
    await backend.apply(v1);
    const marked = ruleset([web], { mark: 0x8000 });
    expect(await backend.applyChanges(updateBetween(v1, marked))).toEqual({
      mode: "full",
      changedMappings: 1,
    });
    // An element removed behind our back: deleting it again is refused, the table is rebuilt.
    nft.deleteElement(TABLE, "mappings-ipv4", { concat: ["203.0.113.10", "tcp", 80] });
    const moved = ruleset([{ ...web, clusterIP: "10.96.0.99" }], { mark: 0x8000 });
    expect(await backend.applyChanges(updateBetween(marked, moved))).toEqual({
      mode: "full",
      changedMappings: 1,
    });
    expect(nft.documents().map(isFullSync)).toEqual([true, true, false, true]);
    expect(await backend.verify(moved)).toBe(true);
  });

  it("throws ToolRefusedError with nft's stderr, and keeps the kernel's previous rules", async () => {
    const { nft, backend } = setUp();
    await backend.apply(v1);
    nft.refuseNext("Error: Could not process rule: Invalid argument");
    const error = await backend.apply(v2).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ToolRefusedError);
    expect(error).toMatchObject({
      tool: "nft",
      exitCode: 1,
      stderr: "Error: Could not process rule: Invalid argument",
      message: expect.stringContaining(`nft rejected the full sync of table inet ${TABLE}`),
    });
    expect(await backend.verify(v1)).toBe(true);
    // After a failed write the next change is a full sync.
    expect(await backend.applyChanges(updateBetween(v1, v2))).toMatchObject({ mode: "full" });
  });

  it("rejects an invalid ruleset or update before running nft", async () => {
    const { nft, backend } = setUp();
    const bad = ruleset([
      mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10", port: 70000 }),
    ]);
    await expect(backend.apply(bad)).rejects.toThrow(
      /families\[0\]\.mappings\[0\]\.port 70000 is not a port/,
    );
    await expect(backend.apply(bad)).rejects.toBeInstanceOf(InvalidRulesetError);
    await expect(
      backend.applyChanges({
        settings: settingsOf(v1),
        mappings: [{ ...web, port: 0 }],
        removed: [],
      }),
    ).rejects.toThrow(/mappings\[0\]\.port 0/);
    expect(nft.calls).toHaveLength(0);
  });

  it("serialises concurrent writes", async () => {
    const { nft, backend } = setUp();
    const results = await Promise.all([
      backend.apply(v1),
      backend.applyChanges(updateBetween(v1, v2)),
      backend.applyChanges(updateBetween(v1, v2)),
    ]);
    expect(results.map((result) => result.mode)).toEqual(["full", "incremental", "none"]);
    expect(nft.documents()).toHaveLength(2);
  });
});

describe("missing or broken nft", () => {
  it("names the binary it looked for", async () => {
    const backend = createNftBackend({ nftPath: "/nonexistent/sbin/nft" });
    await expect(backend.apply(v1)).rejects.toThrow(
      "/nonexistent/sbin/nft could not be started: ENOENT",
    );
    await expect(backend.verify(v1)).rejects.toBeInstanceOf(ToolNotStartedError);
    await expect(backend.cleanup()).rejects.toMatchObject({
      name: "ToolNotStartedError",
      tool: "/nonexistent/sbin/nft",
    });
  });

  it("passes a runner's ToolNotStartedError through unchanged", async () => {
    const runner: CommandRunner = async (file) => {
      throw new ToolNotStartedError(file, "EACCES");
    };
    await expect(createNftBackend({ runner }).apply(v1)).rejects.toThrow(
      "nft could not be started: EACCES",
    );
  });

  it("refuses a table name that is not an nft identifier", () => {
    expect(() => createNftBackend({ tableName: 'x" ; flush ruleset' })).toThrow(ConfigError);
    expect(() => createNftBackend({ tableName: "" })).toThrow(/invalid tableName/);
  });
});

describe("read, verify and cleanup", () => {
  it("verify is false when the table is absent, and read says so; other nft errors throw", async () => {
    const { backend } = setUp();
    expect(await backend.verify(v1)).toBe(false);
    expect(await backend.read(settingsOf(v1))).toMatchObject({ present: false, mappings: [] });
    const denied: CommandRunner = async () => ({
      stdout: "",
      stderr: "Error: Operation not permitted",
      exitCode: 1,
    });
    await expect(createNftBackend({ runner: denied }).verify(v1)).rejects.toThrow(
      /Operation not permitted/,
    );
  });

  it("reads back every translation with its owner and sources", async () => {
    const { backend } = setUp();
    const restricted = ruleset([web, admin]);
    await backend.apply(restricted);
    const live = await backend.read(settingsOf(restricted));
    expect(live).toMatchObject({ backend: "nft", present: true, problems: [] });
    expect(live.mappings.map((m) => [m.externalIP, m.owner, m.allowedSources])).toEqual([
      ["203.0.113.10", "default/web", undefined],
      ["203.0.113.12", "default/web", ["10.244.0.0/16", "203.0.113.12/32"]],
    ]);
  });

  it("verify reads without holding up a change, and answers true when one landed meanwhile", async () => {
    const nft = new FakeNft();
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const runner: CommandRunner = async (file, args, options) => {
      const result = await nft.runner(file, args, options);
      if (args[1] === "list") await held;
      return result;
    };
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    const verified = backend.verify(v1);
    // The change is not queued behind the read.
    expect(await backend.applyChanges(updateBetween(v1, v2))).toMatchObject({
      mode: "incremental",
    });
    release();
    expect(await verified).toBe(true);
  });

  it("verify is false when someone changed the table, and the next change is a full sync", async () => {
    const { nft, backend } = setUp();
    await backend.apply(v2);
    nft.deleteElement(TABLE, "mappings-ipv4", { concat: ["203.0.113.11", "tcp", 443] });
    expect(await backend.verify(v2)).toBe(false);
    const moved = ruleset([{ ...web, clusterIP: "10.96.0.99" }, api]);
    expect(await backend.applyChanges(updateBetween(v2, moved))).toMatchObject({ mode: "full" });
    expect(await backend.verify(moved)).toBe(true);
  });

  it("cleanup deletes only its own table, and only when present", async () => {
    const nft = new FakeNft();
    const other = createNftBackend({ runner: nft.runner, tableName: "other" });
    const mine = createNftBackend({ runner: nft.runner, tableName: "mine" });
    await other.apply(v1);
    await mine.apply(v1);
    expect(await mine.cleanup()).toBe(true);
    expect(await mine.cleanup()).toBe(false);
    expect(nft.table("mine")).toBeUndefined();
    expect(await other.verify(v1)).toBe(true);
  });
});
