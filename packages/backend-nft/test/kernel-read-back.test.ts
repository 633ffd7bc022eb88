/**
 * Reading the table back on the real kernel: nft's own listings, before and after tampering.
 */

import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/backend";
import { settingsOf } from "@ipvs-node-controller/core";
import { hostRunner, kernelTestsEnabled, runnerIn } from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNftBackend } from "../src/index.js";
import { READ_BACK_FIXTURE } from "./helpers.js";

const kernel = await kernelTestsEnabled("nft read-back kernel tests");

const { web, dns, web6, desired } = READ_BACK_FIXTURE;
const settings = settingsOf(desired);

const owned = (found: typeof web) => {
  const { service, ...rest } = found;
  return { ...rest, owner: `${service.namespace}/${service.name}` };
};

describe.skipIf(!kernel)("nft read-back on the kernel", () => {
  const namespace = `nft-readback-${process.pid}`;
  let run: CommandRunner;
  const nft = async (...args: string[]) => {
    const result = await run("nft", args);
    if (result.exitCode !== 0) throw new Error(`nft ${args.join(" ")}: ${result.stderr}`);
  };

  beforeAll(async () => {
    const added = await hostRunner("ip", ["netns", "add", namespace]);
    if (added.exitCode !== 0) throw new Error(added.stderr);
    run = runnerIn(namespace);
  });
  afterAll(async () => {
    await hostRunner("ip", ["netns", "del", namespace]);
  });

  it("reads nothing before a sync, everything after it, and no problem", async () => {
    expect(await createNftBackend({ runner: run }).read(settings)).toMatchObject({
      present: false,
      mappings: [],
    });
    await createNftBackend({ runner: run }).apply(desired);
    const live = await createNftBackend({ runner: run }).read(settings);
    expect(live).toMatchObject({ backend: "nft", tool: "nft", present: true, problems: [] });
    expect(live.mappings).toEqual([owned(web), owned(dns), owned(web6)]);
  });

  it("sees a deleted element, a foreign element, and damaged chains and sets", async () => {
    const table = ["inet", "ipvs-node-controller"];
    await nft("delete", "element", ...table, "mappings-ipv4", "{ 192.0.2.53 . udp . 53 }");
    await nft(
      "add",
      "element",
      ...table,
      "mappings-ipv4",
      "{ 192.0.2.99 . tcp . 8080 : 10.96.0.99 }",
    );
    await nft("flush", "chain", ...table, "output");
    await nft("flush", "set", ...table, "pod-cidrs-ipv4");
    await nft("add", "chain", ...table, "extra");
    const live = await createNftBackend({ runner: run }).read(settings);
    expect(live.mappings).toEqual([
      owned(web),
      { ...owned(web), externalIP: "192.0.2.99", port: 8080, clusterIP: "10.96.0.99", owner: "" },
      owned(web6),
    ]);
    expect(live.problems).toEqual([
      "chain output lacks 2 rules of the 2 a sync writes",
      "chain extra is not one a sync creates",
      "set pod-cidrs-ipv4 holds other addresses than the pod CIDRs (10.244.1.0/24)",
    ]);
  });

  it("throws the backend's error for a program that cannot start", async () => {
    await expect(
      createNftBackend({ runner: run, nftPath: "/nonexistent/nft" }).read(settings),
    ).rejects.toThrow(ToolNotStartedError);
  });
});
