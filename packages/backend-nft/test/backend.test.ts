/**
 * The backend's decisions (full, incremental, none, fallback, errors) with a scripted runner: no kernel.
 */
import {
  type CommandResult,
  type CommandRunner,
  ConfigError,
  InvalidRulesetError,
  type RulesetDiff,
  settingsOf,
  ToolNotStartedError,
  ToolRefusedError,
} from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import { createNftBackend } from "../src/index.js";
import { mapping, ruleset } from "./helpers.js";

interface Call {
  file: string;
  args: readonly string[];
  input?: string;
}

/** A runner that records calls and answers from a script (default: success, empty output). */
function scriptedRunner(answer: (call: Call) => Partial<CommandResult> = () => ({})) {
  const calls: Call[] = [];
  const runner: CommandRunner = async (file, args, options) => {
    const call = { file, args, input: options?.input };
    calls.push(call);
    return { stdout: "", stderr: "", exitCode: 0, ...answer(call) };
  };
  return { runner, calls };
}

const web = mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10" });
const api = mapping({ externalIP: "203.0.113.11", clusterIP: "10.96.0.11", port: 443 });
const v1 = ruleset([web]);
const v2 = ruleset([web, api]);

function isFullSync(call: Call | undefined): boolean {
  return call?.input?.includes('{"delete":{"table"') === true;
}

describe("apply", () => {
  it("syncs fully first, then incrementally, and skips the kernel when nothing changed", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    expect(await backend.apply(v1)).toEqual({ mode: "full", changedMappings: 1 });
    expect(calls[0]?.args).toEqual(["-j", "-f", "-"]);
    expect(isFullSync(calls[0])).toBe(true);
    expect(await backend.apply(v1)).toEqual({ mode: "none", changedMappings: 0 });
    expect(calls).toHaveLength(1);
    expect(await backend.apply(v2)).toEqual({ mode: "incremental", changedMappings: 1 });
    expect(isFullSync(calls[1])).toBe(false);
    expect(calls[1]?.input).toContain('"203.0.113.11","tcp",443');
    expect(calls[1]?.input).not.toContain('"203.0.113.10","tcp",80');
  });

  it("syncs fully when asked to, and when settings change", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    expect(await backend.apply(v1, { full: true })).toEqual({ mode: "full", changedMappings: 1 });
    expect(await backend.apply(ruleset([web], { mark: 0x8000 }))).toMatchObject({ mode: "full" });
    expect(calls.map(isFullSync)).toEqual([true, true, true]);
  });

  it("falls back to a full sync when the incremental transaction fails", async () => {
    const { runner, calls } = scriptedRunner((call) =>
      isFullSync(call) ? {} : { exitCode: 1, stderr: "Error: No such file or directory" },
    );
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    expect(await backend.apply(v2)).toEqual({ mode: "full", changedMappings: 2 });
    expect(calls.map(isFullSync)).toEqual([true, false, true]);
  });

  it("throws ToolRefusedError with nft's stderr and keeps its idea of the last ruleset", async () => {
    let failing = false;
    const { runner, calls } = scriptedRunner(() =>
      failing ? { exitCode: 1, stderr: "Error: Could not process rule: Invalid argument\n" } : {},
    );
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    failing = true;
    const error = await backend.apply(v2).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ToolRefusedError);
    expect(error).toMatchObject({
      tool: "nft",
      exitCode: 1,
      stderr: "Error: Could not process rule: Invalid argument",
      message: expect.stringContaining(
        "nft rejected the full sync of table inet ipvs-node-controller",
      ),
    });
    failing = false;
    // Still diffed against v1: the failed apply did not count.
    expect(await backend.apply(v2)).toEqual({ mode: "incremental", changedMappings: 1 });
    expect(calls).toHaveLength(4);
  });

  it("rejects an invalid ruleset before running nft", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    const bad = ruleset([
      mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10", port: 70000 }),
    ]);
    await expect(backend.apply(bad)).rejects.toThrow(
      /families\[0\]\.mappings\[0\]\.port 70000 is not a port/,
    );
    await expect(backend.apply(bad)).rejects.toBeInstanceOf(InvalidRulesetError);
    const change = {
      added: [{ ...web, port: 0 }],
      removed: [],
      changed: [],
      settingsChanged: false,
      settings: settingsOf(v1),
    };
    await expect(backend.applyChanges(change)).rejects.toThrow(/added\[0\]\.port 0/);
    expect(calls).toHaveLength(0);
  });

  it("serialises concurrent applies", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    const results = await Promise.all([backend.apply(v1), backend.apply(v2), backend.apply(v2)]);
    expect(results.map((result) => result.mode)).toEqual(["full", "incremental", "none"]);
    expect(calls).toHaveLength(2);
  });
});

describe("applyChanges", () => {
  const change = (fields: Partial<RulesetDiff> = {}): RulesetDiff => ({
    added: [],
    removed: [],
    changed: [],
    settingsChanged: false,
    settings: settingsOf(v1),
    ...fields,
  });

  it("applies the first change as a full sync of the resulting ruleset", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    expect(await backend.applyChanges(change({ added: [web, api] }))).toEqual({
      mode: "full",
      changedMappings: 2,
    });
    expect(isFullSync(calls[0])).toBe(true);
    expect(calls[0]?.input).toContain('"203.0.113.11","tcp",443');
  });

  it("then sends only the changed elements, whatever else the table holds", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    await backend.apply(v2);
    const moved = { ...api, clusterIP: "10.96.0.99" };
    expect(
      await backend.applyChanges(change({ changed: [{ before: api, after: moved }] })),
    ).toEqual({ mode: "incremental", changedMappings: 1 });
    expect(isFullSync(calls[1])).toBe(false);
    expect(calls[1]?.input).toContain("10.96.0.99");
    expect(calls[1]?.input).not.toContain('"203.0.113.10"');
    expect(await backend.applyChanges(change())).toEqual({ mode: "none", changedMappings: 0 });
    expect(calls).toHaveLength(2);
    // What it applied is what it diffs against next.
    expect(await backend.apply(ruleset([web, moved]))).toEqual({
      mode: "none",
      changedMappings: 0,
    });
  });

  it("answers a settings change, or a refused change, with a full sync of the result", async () => {
    let refuse = false;
    const { runner, calls } = scriptedRunner((call) =>
      refuse && !isFullSync(call)
        ? { exitCode: 1, stderr: "Error: No such file or directory" }
        : {},
    );
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    const marked = settingsOf(ruleset([web], { mark: 0x8000 }));
    expect(await backend.applyChanges(change({ settingsChanged: true, settings: marked }))).toEqual(
      { mode: "full", changedMappings: 1 },
    );
    expect(calls[1]?.input).toContain("32768");
    refuse = true;
    expect(await backend.applyChanges(change({ added: [api], settings: marked }))).toEqual({
      mode: "full",
      changedMappings: 2,
    });
    expect(calls.map(isFullSync)).toEqual([true, true, false, true]);
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

describe("verify and cleanup", () => {
  it("verify is false when the table is absent and throws on other nft errors", async () => {
    const absent = scriptedRunner(() => ({
      exitCode: 1,
      stderr: "Error: No such file or directory",
    }));
    expect(await createNftBackend({ runner: absent.runner }).verify(v1)).toBe(false);
    expect(absent.calls[0]?.args).toEqual(["-j", "list", "table", "inet", "ipvs-node-controller"]);
    const denied = scriptedRunner(() => ({
      exitCode: 1,
      stderr: "Error: Operation not permitted",
    }));
    await expect(createNftBackend({ runner: denied.runner }).verify(v1)).rejects.toThrow(
      /Operation not permitted/,
    );
  });

  it("verify reads without holding up a change, and answers true when one landed meanwhile", async () => {
    let release = (_listing: string) => {};
    const listing = new Promise<string>((resolve) => {
      release = resolve;
    });
    const runner: CommandRunner = async (_file, args) => ({
      stdout: args[1] === "list" ? await listing : "",
      stderr: "",
      exitCode: 0,
    });
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    const verified = backend.verify(v1);
    // The change is not queued behind the half-second read.
    expect(await backend.apply(v2)).toEqual({ mode: "incremental", changedMappings: 1 });
    release('{"nftables":[]}');
    expect(await verified).toBe(true);
    // The same listing with no change in between is drift.
    const alone = createNftBackend({ runner });
    await alone.apply(v1);
    expect(await alone.verify(v1)).toBe(false);
  });

  it("verify is false for a listing that is not ours", async () => {
    const { runner } = scriptedRunner(() => ({
      stdout: '{"nftables":[{"chain":{"name":"prerouting"}}]}',
    }));
    expect(await createNftBackend({ runner }).verify(v1)).toBe(false);
  });

  it("cleanup deletes only its own table, and only when present", async () => {
    const tables = (names: string[]) =>
      JSON.stringify({ nftables: names.map((name) => ({ table: { family: "inet", name } })) });
    const present = scriptedRunner((call) =>
      call.args[1] === "list" ? { stdout: tables(["other", "mine"]) } : {},
    );
    expect(await createNftBackend({ runner: present.runner, tableName: "mine" }).cleanup()).toBe(
      true,
    );
    expect(present.calls.map((call) => call.args)).toEqual([
      ["-j", "list", "tables", "inet"],
      ["delete", "table", "inet", "mine"],
    ]);
    const absent = scriptedRunner(() => ({ stdout: tables(["other"]) }));
    expect(await createNftBackend({ runner: absent.runner, tableName: "mine" }).cleanup()).toBe(
      false,
    );
    expect(absent.calls).toHaveLength(1);
  });
});
