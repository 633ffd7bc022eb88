/**
 * Variant detection against the real tools, each case in a namespace of its own (rules written
 * through one variant are invisible to the other, which is the whole point).
 */
import { hostRunner, kernelTestsEnabled, runnerIn } from "@ipvs-node-controller/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { createIptablesBackend, detectIptablesVariant, LEGACY_TABLE_LISTS } from "../src/index.js";
import { family, mapping, ruleset } from "./fixtures.js";

const enabled = await kernelTestsEnabled("iptables variant detection kernel tests");

describe.skipIf(!enabled)("iptables variant detection on the kernel", () => {
  const namespaces: string[] = [];
  let counter = 0;

  afterAll(async () => {
    for (const namespace of namespaces) await hostRunner("ip", ["netns", "del", namespace]);
  });

  /** A fresh namespace with `rules` fed to each given restore tool. */
  async function namespaceWith(documents: Record<string, string>) {
    const namespace = `iptvar-${process.pid}-${++counter}`;
    const added = await hostRunner("ip", ["netns", "add", namespace]);
    if (added.exitCode !== 0) throw new Error(`ip netns add: ${added.stderr}`);
    namespaces.push(namespace);
    const runner = runnerIn(namespace);
    for (const [tool, document] of Object.entries(documents)) {
      const result = await runner(tool, ["--noflush", "-w"], { input: document });
      if (result.exitCode !== 0) throw new Error(`${tool}: ${result.stderr}`);
    }
    return runner;
  }

  const rules = (n: number) =>
    `*filter\n${Array.from({ length: n }, (_, i) => `-A INPUT -s 203.0.113.${i}/32 -j DROP`).join("\n")}\nCOMMIT\n`;
  const HINT = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";

  it("picks legacy when only iptables-legacy holds rules", async () => {
    const runner = await namespaceWith({ "iptables-legacy-restore": rules(3) });
    expect(await detectIptablesVariant(runner)).toMatchObject({
      variant: "legacy",
      legacyRules: 3,
      nftRules: 0,
    });
  });

  it("picks nft when iptables-nft holds more rules, counting IPv6 too", async () => {
    const runner = await namespaceWith({
      "iptables-legacy-restore": rules(2),
      "ip6tables-nft-restore": rules(0).replace(
        "COMMIT",
        "-A INPUT -p tcp -j DROP\n-A INPUT -p udp -j DROP\n-A INPUT -p sctp -j DROP\nCOMMIT",
      ),
    });
    expect(await detectIptablesVariant(runner)).toMatchObject({ variant: "nft", nftRules: 3 });
  });

  it("picks nft in an empty namespace", async () => {
    const runner = await namespaceWith({});
    expect((await detectIptablesVariant(runner)).variant).toBe("nft");
  });

  it("follows the kubelet's hint chain over rule counts", async () => {
    const runner = await namespaceWith({
      "iptables-nft-restore": rules(5),
      "iptables-legacy-restore": HINT,
    });
    expect((await detectIptablesVariant(runner)).variant).toBe("legacy");
  });

  it("applies through the detected variant in auto mode", async () => {
    const runner = await namespaceWith({ "iptables-legacy-restore": rules(2) });
    const messages: string[] = [];
    const backend = createIptablesBackend({ runner, log: (m) => messages.push(m) });
    const simple = ruleset([
      family("ipv4", { kind: "inputInterface", name: "cni0" }, [
        mapping("192.0.2.1", 80, "10.96.0.1"),
      ]),
    ]);
    await backend.apply(simple);
    expect(await backend.variant()).toBe("legacy");
    expect(messages[0]).toMatch(/^using iptables-legacy: iptables-legacy sees more rules/);
    expect((await runner("iptables-legacy-save", ["-t", "nat"])).stdout).toContain(
      "-A IPVSNC-PREROUTING -i cni0 -j IPVSNC-PODS",
    );
    expect((await runner("iptables-nft-save", ["-t", "nat"])).stdout).not.toContain("IPVSNC");
    expect(await backend.cleanup()).toBe(true);
  });

  it("creates no iptables-legacy table where none existed", async () => {
    const runner = await namespaceWith({});
    const legacyTables = async () => {
      const lists = [];
      for (const file of Object.values(LEGACY_TABLE_LISTS)) {
        lists.push((await runner("cat", [file])).stdout);
      }
      return lists.join("");
    };
    expect(await legacyTables()).toBe("");
    expect((await detectIptablesVariant(runner)).variant).toBe("nft");
    const auto = createIptablesBackend({ runner });
    await auto.apply(
      ruleset([
        family("ipv4", { kind: "inputInterface", name: "cni0" }, [
          mapping("192.0.2.1", 80, "10.96.0.1"),
        ]),
      ]),
    );
    expect(await auto.cleanup()).toBe(true);
    // Forced legacy, with nothing to do: looks, and touches nothing.
    const legacy = createIptablesBackend({ mode: "legacy", runner });
    expect(await legacy.cleanup()).toBe(false);
    expect(await legacy.verify(ruleset([]))).toBe(true);
    expect(await legacyTables()).toBe("");
    const save = await runner("iptables-nft-save", []);
    expect(`${save.stdout}${save.stderr}`).not.toMatch(/legacy/);
  });
});
