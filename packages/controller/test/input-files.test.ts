import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { podCIDRsOf } from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import { InputFileError, readNode, readServicesFile } from "../src/input-files.js";

const fixture = (name: string) => new URL(`fixtures/${name}`, import.meta.url).pathname;

describe("readServicesFile", () => {
  it("reads a List", async () => {
    const services = await readServicesFile(fixture("services.yaml"));
    expect(services.map((s) => s.metadata?.name)).toEqual(["web", "broken"]);
  });

  it("reads a multi-document stream and ignores other kinds", async () => {
    const services = await readServicesFile(fixture("stream.yaml"));
    expect(services.map((s) => s.metadata?.name)).toEqual(["one", "two"]);
  });

  it("reads JSON: a single object and a ServiceList", async () => {
    const dir = await mkdtemp(join(tmpdir(), "inc-input-"));
    const single = join(dir, "single.json");
    await writeFile(single, JSON.stringify({ kind: "Service", metadata: { name: "x" } }));
    expect((await readServicesFile(single)).map((s) => s.metadata?.name)).toEqual(["x"]);
    const list = join(dir, "list.json");
    await writeFile(
      list,
      JSON.stringify({ kind: "ServiceList", items: [{ metadata: { name: "y" } }] }),
    );
    expect((await readServicesFile(list)).map((s) => s.metadata?.name)).toEqual(["y"]);
  });

  it("names the file when it is missing or unparsable", async () => {
    await expect(readServicesFile("/nonexistent/services.yaml")).rejects.toThrow(
      /cannot read \/nonexistent\/services.yaml/,
    );
    const dir = await mkdtemp(join(tmpdir(), "inc-input-"));
    const bad = join(dir, "bad.yaml");
    await writeFile(bad, "items: [unclosed\n");
    await expect(readServicesFile(bad)).rejects.toThrow(InputFileError);
    await expect(readServicesFile(bad)).rejects.toThrow(/cannot parse .*bad.yaml/);
  });
});

describe("readNode", () => {
  it("reads a Node whose spec.podCIDRs the core uses", async () => {
    expect(podCIDRsOf(await readNode(fixture("node.json")))).toEqual([
      "10.244.1.0/24",
      "fd00:10:244:1::/64",
    ]);
  });

  it("refuses a file without a Node", async () => {
    await expect(readNode(fixture("stream.yaml"))).rejects.toThrow(/holds no Node object/);
    const dir = await mkdtemp(join(tmpdir(), "inc-input-"));
    const empty = join(dir, "empty.yaml");
    await writeFile(empty, "");
    await expect(readNode(empty)).rejects.toThrow(/holds no Node object/);
  });
});
