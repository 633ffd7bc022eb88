/**
 * Reading our rules back on the real kernel, with each iptables variant: what the save tools
 * print, before and after tampering, and that reading creates no table.
 */

import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/backend";
import { quote, settingsOf } from "@ipvs-node-controller/core";
import { hostRunner, kernelTestsEnabled, runnerIn } from "@ipvs-node-controller/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { createIptablesBackend, type IptablesVariant } from "../src/index.js";
import { family, mapping, ruleset } from "./fixtures.js";

const kernel = await kernelTestsEnabled("iptables read-back kernel tests");

const web = mapping("192.0.2.10", 80, "10.96.0.10");
const dns = mapping("192.0.2.53", 53, "10.96.0.53", { protocol: "udp", name: "dns" });
const web6 = mapping("2001:db8::10", 443, "fd00:96::10");
const desired = ruleset([
  family("ipv4", { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] }, [web, dns]),
  family("ipv6", { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64"] }, [web6]),
]);
const settings = settingsOf(desired);

const owned = (found: typeof web, owner = `${found.service.namespace}/${found.service.name}`) => {
  const { service: _service, ...rest } = found;
  return { ...rest, owner };
};

describe.skipIf(!kernel)("iptables read-back on the kernel", () => {
  const namespaces: string[] = [];
  let counter = 0;

  async function freshNamespace(): Promise<CommandRunner> {
    const namespace = `ipt-readback-${process.pid}-${++counter}`;
    const added = await hostRunner("ip", ["netns", "add", namespace]);
    if (added.exitCode !== 0) throw new Error(added.stderr);
    namespaces.push(namespace);
    return runnerIn(namespace);
  }

  const legacyTables = async (run: CommandRunner) =>
    (await run("cat", ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"])).stdout
      .split("\n")
      .filter((line) => line !== "");

  afterAll(async () => {
    for (const namespace of namespaces) await hostRunner("ip", ["netns", "del", namespace]);
  });

  it("reads nothing from a fresh namespace, detects nft, and leaves no legacy table behind", async () => {
    const run = await freshNamespace();
    const live = await createIptablesBackend({ runner: run }).read(settings);
    expect(live).toMatchObject({ present: false, mappings: [], problems: [], variant: "nft" });
    expect(await legacyTables(run)).toEqual([]);
    const listed = await run("nft", ["list", "tables"]);
    expect(listed.stdout.trim()).toBe("");
  });

  it.each(["legacy", "nft"] as const)(
    "iptables-%s: finds what a sync wrote, then every change made behind its back",
    async (variant: IptablesVariant) => {
      const run = await freshNamespace();
      await createIptablesBackend({ runner: run, mode: variant }).apply(desired);
      const tablesBefore = await legacyTables(run);
      // Detected, not forced: the variant holding our rules sees more rules.
      const live = await createIptablesBackend({ runner: run }).read(settings);
      expect(live).toMatchObject({ present: true, problems: [], variant });
      expect(live.mappings).toEqual([owned(web), owned(dns), owned(web6)]);
      expect(await legacyTables(run)).toEqual(tablesBefore);

      const iptables = async (...args: string[]) => {
        const result = await run(`iptables-${variant}`, ["-w", "-t", "nat", ...args]);
        if (result.exitCode !== 0) throw new Error(`iptables ${args.join(" ")}: ${result.stderr}`);
      };
      const translation = (ip: string) =>
        `-d ${ip}/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.96.0.99:8080`;
      // DNS's bucket loses its only rule; web's gains a stale rule and one for another bucket.
      await iptables("-D", "IPVSNC-DNAT-35", "1");
      await iptables("-A", "IPVSNC-DNAT-0A", ...translation("192.0.2.10").split(" "));
      await iptables("-A", "IPVSNC-DNAT-0A", ...translation("192.0.2.99").split(" "));
      await iptables("-D", "OUTPUT", "1");
      await iptables("-I", "PREROUTING", "1", "-j", "RETURN");
      const tampered = await createIptablesBackend({ runner: run, mode: variant }).read(settings);
      expect(tampered.mappings).toEqual([
        owned(web),
        owned(mapping("192.0.2.10", 8080, "10.96.0.99"), ""),
        owned(mapping("192.0.2.99", 8080, "10.96.0.99"), ""),
        owned(web6),
      ]);
      expect(tampered.problems).toEqual([
        `ipv4: IPVSNC-DNAT-0A holds a translation of 192.0.2.99, whose packets go to IPVSNC-DNAT-63: ${quote(translation("192.0.2.99"))}`,
        "ipv4: the jump from nat PREROUTING is rule 2, not the first",
        "ipv4: no jump from nat OUTPUT into IPVSNC-OUTPUT",
      ]);
    },
  );

  it("throws the backend's error when no iptables program can start", async () => {
    const run = await freshNamespace();
    await expect(
      createIptablesBackend({ runner: run, binDir: "/nonexistent" }).read(settings),
    ).rejects.toThrow(ToolNotStartedError);
    await expect(
      createIptablesBackend({ runner: run, binDir: "/nonexistent", mode: "nft" }).read(settings),
    ).rejects.toThrow(ToolNotStartedError);
  });
});
