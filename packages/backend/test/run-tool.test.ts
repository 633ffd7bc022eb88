import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  createToolRunner,
  runTool,
  SerialQueue,
  ToolNotStartedError,
  ToolTimedOutError,
} from "../src/index.js";

const scratch = mkdtempSync(join(tmpdir(), "exec-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("runTool", () => {
  it("passes arguments as they are, with no shell in between", async () => {
    const result = await runTool("printf", ["%s|", "a b", "$(id)", ";"]);
    expect(result).toEqual({ stdout: "a b|$(id)|;|", stderr: "", exitCode: 0 });
  });

  it("feeds input from a file that /dev/stdin can open, as nft -f - needs", async () => {
    const result = await runTool("cat", ["/dev/stdin"], { input: "line 1\nline 2\n" });
    expect(result.stdout).toBe("line 1\nline 2\n");
  });

  it("returns a non-zero exit with the tool's own words", async () => {
    const result = await runTool("sh", ["-c", "echo refused >&2; exit 3"]);
    expect(result).toEqual({ stdout: "", stderr: "refused\n", exitCode: 3 });
  });

  it("throws ToolNotStartedError naming a program that does not exist", async () => {
    const error = await runTool("/nonexistent/nft", ["list", "ruleset"]).catch((e) => e);
    expect(error).toBeInstanceOf(ToolNotStartedError);
    expect(error).toMatchObject({ tool: "/nonexistent/nft", reason: "ENOENT" });
    expect(error.message).toBe("/nonexistent/nft could not be started: ENOENT");
  });

  it("throws ToolNotStartedError for a file that is not executable", async () => {
    const file = join(scratch, "not-executable");
    writeFileSync(file, "#!/bin/sh\n");
    chmodSync(file, 0o644);
    await expect(runTool(file, [])).rejects.toMatchObject({
      name: "ToolNotStartedError",
      reason: "EACCES",
    });
  });

  it("kills a tool that overruns its time limit and leaves no process behind", async () => {
    const runner = createToolRunner({ timeoutMs: 300 });
    const marker = "31.4159";
    const error = await runner("sleep", [marker]).catch((e) => e);
    expect(error).toBeInstanceOf(ToolTimedOutError);
    expect(error).toMatchObject({ tool: "sleep", timeoutMs: 300 });
    const left = await runTool("pgrep", ["-f", `sleep ${marker}`]);
    expect(left.stdout).toBe("");
  });

  it("refuses a time limit that is not a positive integer", () => {
    expect(() => createToolRunner({ timeoutMs: 0 })).toThrow(RangeError);
  });
});

describe("SerialQueue", () => {
  it("runs operations one at a time, in order, and goes on after a failure", async () => {
    const queue = new SerialQueue();
    const log: string[] = [];
    const step = (name: string, ms: number, fail = false) =>
      queue.run(async () => {
        log.push(`start ${name}`);
        await new Promise((resolve) => setTimeout(resolve, ms));
        log.push(`end ${name}`);
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([step("a", 30), step("b", 1, true), step("c", 1)]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(log).toEqual(["start a", "end a", "start b", "end b", "start c", "end c"]);
  });
});
