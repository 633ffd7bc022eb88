/**
 * The kernel tests, run once per iptables variant (see kernel-legacy.test.ts and
 * kernel-nft.test.ts, which vitest runs in parallel in separate namespaces).
 *
 * Every claim is proven with real traffic through a three-namespace topology: a pod and a remote
 * host attached to a node whose `lo` carries the LB IPs and cluster IPs, with listeners on the
 * cluster IPs only.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CommandRunner, ToolRefusedError } from "@ipvs-node-controller/backend";
import {
  computeRuleset,
  diffRulesets,
  type Ruleset,
  updateBetween,
} from "@ipvs-node-controller/core";
import {
  ADDRESS_PLAN,
  createTopology,
  type Host,
  kernelTestsEnabled,
  type ProbeProtocol,
  type Topology,
} from "@ipvs-node-controller/test-support";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIptablesBackend, type IptablesVariant, renderRuleset } from "../src/index.js";
import { family, mapping, ruleset, rulesetArbitrary, serviceArbitrary } from "./fixtures.js";

const LB4 = "192.0.2.10";
const LB6 = "2001:db8::10";
const OTHER_LB4 = "192.0.2.20";
/**
 * LB IPs the node does not own, served by the remote host as a load balancer would be: what LB IPs
 * look like under kube-proxy's iptables or nftables mode. Their mappings must stay inert.
 */
const VIRTUAL_LB = { ipv4: "192.0.2.30", ipv6: "2001:db8::30" } as const;
const LOAD_BALANCER_REPLY = "load balancer";

/** Cluster IPs with a listener each; the reply names the Service (and family) that answered. */
const LISTENERS = [
  { ip: "10.96.0.10", port: 80, protocol: "tcp", reply: "web-v4" },
  { ip: "10.96.0.10", port: 81, protocol: "tcp", reply: "web-unexposed" },
  { ip: "fd00:96::10", port: 80, protocol: "tcp", reply: "web-v6" },
  { ip: "10.96.0.53", port: 53, protocol: "udp", reply: "dns" },
  { ip: "fd00:96::53", port: 53, protocol: "udp", reply: "dns-v6" },
  { ip: "10.96.0.80", port: 8080, protocol: "tcp", reply: "api" },
  { ip: "10.96.0.81", port: 8080, protocol: "tcp", reply: "api-2" },
  { ip: "10.96.0.20", port: 80, protocol: "tcp", reply: "other" },
] as const;

const POD_CIDRS = {
  ipv4: { kind: "sourceCIDRs", cidrs: [ADDRESS_PLAN.podCIDR.ipv4] },
  ipv6: { kind: "sourceCIDRs", cidrs: [ADDRESS_PLAN.podCIDR.ipv6] },
} as const;

/** Web on both families, and DNS (udp) and an API (tcp 8080) sharing the IPv4 LB IP. */
function dualStack(options: { apiCluster?: string; withDns?: boolean } = {}): Ruleset {
  const v4 = [
    mapping(LB4, 80, "10.96.0.10", { name: "web" }),
    mapping(LB4, 8080, options.apiCluster ?? "10.96.0.80", { name: "api" }),
    mapping(OTHER_LB4, 80, "10.96.0.20", { name: "other" }),
  ];
  if (options.withDns ?? true) {
    v4.push(mapping(LB4, 53, "10.96.0.53", { protocol: "udp", name: "dns" }));
  }
  return ruleset([
    family("ipv4", POD_CIDRS.ipv4, v4),
    family("ipv6", POD_CIDRS.ipv6, [
      mapping(LB6, 80, "fd00:96::10", { name: "web" }),
      mapping(LB6, 53, "fd00:96::53", { protocol: "udp", name: "dns" }),
    ]),
  ]);
}

/** kube-proxy-like state that must survive every apply and cleanup untouched. */
const KUBE_PROXY_LIKE = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j RETURN
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-NODE-PORT -p tcp -m tcp --dport 30000 -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -s 203.0.113.0/24 -j DROP
COMMIT
`;

const UNRELATED_NFT_TABLE = `table inet unrelated {
	set blocked {
		type ipv4_addr
		elements = { 203.0.113.99 }
	}

	chain input {
		type filter hook input priority filter + 10; policy accept;
		ip saddr @blocked drop
	}
}
`;

/**
 * Defines the suite for one variant. Call it from a test module after
 * `await kernelTestsEnabled(...)`, which warns (or, with CI=true, fails) when namespaces are
 * unavailable.
 */
export async function defineKernelSuite(variant: IptablesVariant): Promise<void> {
  const tools = {
    save4: `iptables-${variant}-save`,
    save6: `ip6tables-${variant}-save`,
    restore4: `iptables-${variant}-restore`,
    restore6: `ip6tables-${variant}-restore`,
  };
  const enabled = await kernelTestsEnabled(`iptables-${variant} kernel tests`);

  describe.skipIf(!enabled)(`iptables-${variant} backend on the kernel`, () => {
    let topology: Topology;
    let node: CommandRunner;
    let lockDir: string;

    /** Runs a program in the node namespace and fails the test on a non-zero exit. */
    async function nodeRun(file: string, args: string[], input?: string): Promise<string> {
      const result = await node(file, args, input === undefined ? undefined : { input });
      if (result.exitCode !== 0) throw new Error(`${file} ${args.join(" ")}: ${result.stderr}`);
      return result.stdout;
    }

    /**
     * Both families' full iptables-save output (all tables), without the timestamped comments and
     * with the built-in chains' policy counters zeroed (iptables-legacy prints them even without
     * -c, and they grow with every probe).
     */
    async function saveAll(): Promise<string> {
      const v4 = await nodeRun(tools.save4, []);
      const v6 = await nodeRun(tools.save6, []);
      return `${v4}${v6}`
        .split("\n")
        .filter((line) => !line.startsWith("#"))
        .map((line) => line.replace(/^(:\S+ \S+) \[\d+:\d+\]$/, "$1 [0:0]"))
        .join("\n");
    }

    const withoutOurs = (save: string) =>
      save
        .split("\n")
        .filter((line) => !line.includes("IPVSNC-"))
        .join("\n");

    const backend = (runner: CommandRunner = node) =>
      createIptablesBackend({ mode: variant, runner });

    async function expectReply(
      from: Host,
      ip: string,
      port: number,
      protocol: ProbeProtocol,
      reply: string,
    ) {
      expect(await topology.connect(from, ip, port, protocol), `${from} -> ${ip}:${port}`).toEqual({
        ok: true,
        reply,
      });
    }

    async function expectRefused(from: Host, ip: string, port: number, protocol: ProbeProtocol) {
      expect(await topology.connect(from, ip, port, protocol), `${from} -> ${ip}:${port}`).toEqual({
        ok: false,
        error: "refused",
      });
    }

    /** Counts the jumps into our chains from each built-in chain. */
    async function jumpCounts(): Promise<Record<string, number>> {
      const counts: Record<string, number> = {};
      for (const save of [tools.save4, tools.save6]) {
        for (const line of (await nodeRun(save, ["-t", "nat"])).split("\n")) {
          const match = /^-A (PREROUTING|OUTPUT) .*-j (IPVSNC-\S+)/.exec(line);
          if (match) {
            const key = `${save}:${match[1]}`;
            counts[key] = (counts[key] ?? 0) + 1;
          }
        }
      }
      return counts;
    }

    beforeAll(async () => {
      // iptables-legacy serialises on a lock file; give the tests their own, as a container would.
      lockDir = mkdtempSync(join(tmpdir(), "ipvsnc-xtables-"));
      process.env.XTABLES_LOCKFILE = join(lockDir, "xtables.lock");
      topology = await createTopology({ prefix: `ipt${variant.slice(0, 3)}` });
      node = topology.runner("node");
      await topology.addNodeAddresses([
        LB4,
        LB6,
        OTHER_LB4,
        ...new Set(LISTENERS.map((l) => l.ip)),
      ]);
      await topology.listen(LISTENERS);
      await topology.addRemoteAddresses([VIRTUAL_LB.ipv4, VIRTUAL_LB.ipv6]);
      await topology.listen(
        [VIRTUAL_LB.ipv4, VIRTUAL_LB.ipv6].map((ip) => ({
          ip,
          port: 80,
          protocol: "tcp" as const,
          reply: LOAD_BALANCER_REPLY,
        })),
        "remote",
      );
    }, 60_000);

    afterAll(async () => {
      await topology?.destroy();
      rmSync(lockDir, { recursive: true, force: true });
    });

    it("reproduces the hole before any rule: LB IPs are refused", async () => {
      await expectRefused("pod", LB4, 80, "tcp");
      await expectRefused("pod", LB6, 80, "tcp");
      await expectRefused("node", LB4, 80, "tcp");
      await expectRefused("pod", LB4, 53, "udp");
      // ...while the cluster IPs answer.
      await expectReply("pod", "10.96.0.10", 80, "tcp", "web-v4");
    });

    let baseline: string;
    let unrelatedTable: string;

    it("leaves kube-proxy-like chains and an unrelated nft table byte-identical on apply", async () => {
      await nodeRun(tools.restore4, ["--noflush", "-w"], KUBE_PROXY_LIKE);
      await nodeRun(
        tools.restore6,
        ["--noflush", "-w"],
        KUBE_PROXY_LIKE.replace("10.96.0.1/32", "fd00:96::1/128").replace(
          "203.0.113.0/24",
          "2001:db8:113::/64",
        ),
      );
      await nodeRun("nft", ["-f", "-"], UNRELATED_NFT_TABLE);
      baseline = await saveAll();
      unrelatedTable = await nodeRun("nft", ["list", "table", "inet", "unrelated"]);

      const result = await backend().apply(dualStack());
      expect(result).toEqual({ mode: "full", changedMappings: 6 });

      const after = await saveAll();
      expect(after).not.toBe(baseline);
      expect(withoutOurs(after)).toBe(baseline);
      expect(await nodeRun("nft", ["list", "table", "inet", "unrelated"])).toBe(unrelatedTable);
      // Our jumps went to the top, above kube-proxy's.
      expect(after).toMatch(
        /-A PREROUTING -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING\n-A PREROUTING -m comment --comment "kubernetes service portals"/,
      );
    });

    it("lets pods and the node reach each Service through its LB IP, per family", async () => {
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      await expectReply("pod", LB6, 80, "tcp", "web-v6");
      await expectReply("node", LB4, 80, "tcp", "web-v4");
      await expectReply("node", LB6, 80, "tcp", "web-v6");
      // Two Services sharing one IP on different ports each get their own.
      await expectReply("pod", LB4, 53, "udp", "dns");
      await expectReply("pod", LB4, 8080, "tcp", "api");
      await expectReply("node", LB4, 8080, "tcp", "api");
      await expectReply("pod", LB6, 53, "udp", "dns-v6");
      await expectReply("pod", OTHER_LB4, 80, "tcp", "other");
    });

    it("translates only LB IPs that are addresses of the node", async () => {
      const base = dualStack();
      const withVirtual = ruleset(
        base.families.map((f) =>
          family(f.family, POD_CIDRS[f.family], [
            ...f.mappings,
            mapping(VIRTUAL_LB[f.family], 80, f.family === "ipv4" ? "10.96.0.10" : "fd00:96::10", {
              name: "virtual",
            }),
          ]),
        ),
      );
      await backend().apply(withVirtual);
      const counter = await topology.markCounter(0x4000);
      const before = await counter.read();
      for (const from of ["pod", "node"] as const) {
        await expectReply(from, VIRTUAL_LB.ipv4, 80, "tcp", LOAD_BALANCER_REPLY);
        await expectReply(from, VIRTUAL_LB.ipv6, 80, "tcp", LOAD_BALANCER_REPLY);
      }
      expect(await counter.read()).toBe(before);
      // The LB IPs bound on the node are still translated by the same rules.
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      await expectReply("node", LB6, 80, "tcp", "web-v6");
      await backend().apply(base);
      expect(await backend().verify(base)).toBe(true);
    });

    it("leaves traffic from outside the node and unexposed ports untranslated", async () => {
      await expectRefused("remote", LB4, 80, "tcp");
      await expectRefused("remote", LB6, 80, "tcp");
      await expectRefused("remote", LB4, 53, "udp");
      // Port 81 has a listener on the cluster IP but is no Service port: no translation.
      await expectRefused("pod", LB4, 81, "tcp");
      await expectRefused("node", LB4, 81, "tcp");
    });

    it("gives the host's translated packets the masquerade mark, and no others", async () => {
      const counter = await topology.markCounter(0x4000);
      const before = await counter.read();
      await expectRefused("remote", LB4, 80, "tcp");
      await expectRefused("pod", LB4, 81, "tcp");
      // A pod keeps its own address: its translated packets stay unmarked.
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      expect(await counter.read()).toBe(before);
      await expectReply("node", LB6, 80, "tcp", "web-v6");
      expect(await counter.read()).toBeGreaterThan(before);
    });

    it("changes nothing on a second full sync, nor on an update it already holds", async () => {
      const before = await saveAll();
      expect(await backend().verify(dualStack())).toBe(true);
      const instance = backend();
      expect(await instance.apply(dualStack())).toEqual({ mode: "full", changedMappings: 6 });
      expect(await saveAll()).toBe(before);
      expect(await instance.applyChanges(updateBetween(dualStack(), dualStack()))).toEqual({
        mode: "none",
        changedMappings: 0,
      });
      expect(await saveAll()).toBe(before);
    });

    it.each([
      ["the jumps into every bucket", tools.restore4, "IPVSNC-DNAT", LB4],
      ["one bucket", tools.restore4, "IPVSNC-DNAT-0A", LB4],
      ["an IPv6 bucket", tools.restore6, "IPVSNC-DNAT-10", LB6],
    ])("notices drift (%s flushed) and repairs it", async (_what, restore, chain, lb) => {
      await nodeRun(restore, ["--noflush", "-w"], `*nat\n:${chain} - [0:0]\nCOMMIT\n`);
      await expectRefused("pod", lb, 80, "tcp");
      expect(await backend().verify(dualStack())).toBe(false);
      expect((await backend().apply(dualStack())).mode).toBe("full");
      expect(await backend().verify(dualStack())).toBe(true);
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      await expectReply("pod", LB6, 80, "tcp", "web-v6");
    });

    it("changes only the traffic of an edited or removed mapping", async () => {
      const edited = dualStack({ apiCluster: "10.96.0.81", withDns: false });
      await backend().apply(edited);
      await expectReply("pod", LB4, 8080, "tcp", "api-2");
      await expectRefused("pod", LB4, 53, "udp");
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      await expectReply("pod", LB6, 53, "udp", "dns-v6");
      await expectReply("node", OTHER_LB4, 80, "tcp", "other");
      await backend().apply(dualStack());
      await expectReply("pod", LB4, 8080, "tcp", "api");
      await expectReply("pod", LB4, 53, "udp", "dns");
    });

    it("keeps exactly one jump per chain, at the top, across restarts", async () => {
      // A restarted kube-proxy prepends its own jump above ours.
      await nodeRun(
        tools.restore4,
        ["--noflush", "-w"],
        [
          "*nat",
          '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
          '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
          "COMMIT",
          "",
        ].join("\n"),
      );
      expect(await backend().verify(dualStack())).toBe(false);
      // Each apply is a new instance, as after a restart of the controller.
      for (let restart = 0; restart < 3; restart++) {
        await backend().apply(dualStack());
      }
      expect(await jumpCounts()).toEqual({
        [`${tools.save4}:PREROUTING`]: 1,
        [`${tools.save4}:OUTPUT`]: 1,
        [`${tools.save6}:PREROUTING`]: 1,
        [`${tools.save6}:OUTPUT`]: 1,
      });
      expect(await nodeRun(tools.save4, ["-t", "nat"])).toMatch(
        /\n-A PREROUTING -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING\n/,
      );
      expect(await backend().verify(dualStack())).toBe(true);
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
    });

    it("throws a ToolRefusedError for a document the kernel refuses and keeps the previous rules", async () => {
      const corrupting =
        (target: string): CommandRunner =>
        (file, args, options) =>
          node(file, args, {
            input:
              file === target && options?.input
                ? options.input.replace("-j DNAT", "-j NO-SUCH-TARGET")
                : options?.input,
          } as { input?: string });
      const edited = dualStack({ apiCluster: "10.96.0.81" });

      await expect(backend(corrupting(tools.restore4)).apply(edited)).rejects.toThrow(
        ToolRefusedError,
      );
      await expectReply("pod", LB4, 8080, "tcp", "api");

      // IPv6 fails after IPv4 went in: IPv4 is rolled back to the previous rules. (A family
      // whose rules the refused document would not have changed counts as written.)
      const [v4] = edited.families;
      const [, v6] = dualStack().families;
      const editedBoth = ruleset([
        v4 as Ruleset["families"][number],
        family("ipv6", POD_CIDRS.ipv6, (v6 as Ruleset["families"][number]).mappings.slice(0, 1)),
      ]);
      const error = await backend(corrupting(tools.restore6))
        .apply(editedBoth)
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ToolRefusedError);
      expect((error as ToolRefusedError).tool).toBe(tools.restore6);
      expect((error as ToolRefusedError).message).toMatch(/NO-SUCH-TARGET|line/);
      await expectReply("pod", LB4, 8080, "tcp", "api");
      await expectReply("pod", LB6, 80, "tcp", "web-v6");
      expect(await backend().verify(dualStack())).toBe(true);

      // A hand-made ruleset with a bad value never reaches the kernel.
      const bad = dualStack();
      const hostile = {
        ...bad,
        families: [
          {
            ...(bad.families[0] as Ruleset["families"][number]),
            mappings: [mapping(LB4, 80, '10.96.0.10" -j ACCEPT "')],
          },
        ],
      };
      await expect(backend().apply(hostile)).rejects.toThrow(/clusterIP/);
      await expectReply("pod", LB4, 8080, "tcp", "api");
      expect(await backend().verify(dualStack())).toBe(true);
    });

    it("handles a single family and removes a family that is no longer enabled", async () => {
      const [v4, v6] = dualStack().families as [
        Ruleset["families"][number],
        Ruleset["families"][number],
      ];
      const v4Only = ruleset([v4]);
      await backend().apply(v4Only);
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      await expectRefused("pod", LB6, 80, "tcp");
      expect(await nodeRun(tools.save6, ["-t", "nat"])).not.toContain("IPVSNC-");
      expect(await backend().verify(v4Only)).toBe(true);
      expect(await backend().verify(dualStack())).toBe(false);

      const v6Only = ruleset([v6]);
      await backend().apply(v6Only);
      await expectReply("pod", LB6, 80, "tcp", "web-v6");
      await expectReply("node", LB6, 53, "udp", "dns-v6");
      await expectRefused("pod", LB4, 80, "tcp");
      expect(await nodeRun(tools.save4, ["-t", "nat"])).not.toContain("IPVSNC-");
      expect(await backend().verify(v6Only)).toBe(true);
      await backend().apply(dualStack());
      await expectReply("pod", LB6, 80, "tcp", "web-v6");
    });

    it("cleans up everything of its own and nothing else", async () => {
      expect(await backend().cleanup()).toBe(true);
      expect(await saveAll()).toBe(baseline);
      expect(await nodeRun("nft", ["list", "table", "inet", "unrelated"])).toBe(unrelatedTable);
      await expectRefused("pod", LB4, 80, "tcp");
      await expectRefused("node", LB6, 80, "tcp");
      expect(await backend().cleanup()).toBe(false);
    });

    it("applies a change incrementally, and traffic follows it", async () => {
      const instance = backend();
      expect(await instance.apply(dualStack())).toMatchObject({ mode: "full" });
      const edited = dualStack({ apiCluster: "10.96.0.81", withDns: false });
      expect(await instance.applyChanges(updateBetween(dualStack(), edited))).toMatchObject({
        mode: "incremental",
        changedMappings: 2,
      });
      await expectReply("pod", LB4, 8080, "tcp", "api-2");
      await expectReply("node", LB4, 8080, "tcp", "api-2");
      await expectRefused("pod", LB4, 53, "udp");
      await expectReply("pod", LB4, 80, "tcp", "web-v4");
      await expectReply("pod", LB6, 53, "udp", "dns-v6");
      expect(await backend().verify(edited)).toBe(true);
      // And back, with an update that also names keys the kernel already holds as wanted.
      expect(
        await instance.applyChanges({
          ...updateBetween(edited, dualStack()),
          mappings: dualStack().families.flatMap((f) => f.mappings),
        }),
      ).toMatchObject({ mode: "incremental", changedMappings: 2 });
      await expectReply("pod", LB4, 8080, "tcp", "api");
      await expectReply("pod", LB4, 53, "udp", "dns");
      expect(await backend().verify(dualStack())).toBe(true);
    });

    it("rewrites everything when the kernel refuses a change because a rule drifted", async () => {
      const messages: string[] = [];
      const instance = createIptablesBackend({
        mode: variant,
        runner: node,
        log: (m) => messages.push(m),
      });
      await instance.apply(dualStack());
      // Someone deletes the rule that the next change replaces.
      const api = /^-A (IPVSNC-DNAT-0A .*default\/api.*)$/m.exec(
        await nodeRun(tools.save4, ["-t", "nat"]),
      )?.[1];
      expect(api).toBeDefined();
      await nodeRun(tools.restore4, ["--noflush", "-w"], `*nat\n-D ${api}\nCOMMIT\n`);
      await expectRefused("pod", LB4, 8080, "tcp");

      const edited = dualStack({ apiCluster: "10.96.0.81" });
      expect(await instance.applyChanges(updateBetween(dualStack(), edited))).toEqual({
        mode: "full",
        changedMappings: 6,
      });
      expect(messages.some((m) => m.startsWith("incremental change refused"))).toBe(true);
      await expectReply("pod", LB4, 8080, "tcp", "api-2");
      expect(await backend().verify(edited)).toBe(true);
      // Back to incremental from the rewritten state.
      expect((await instance.applyChanges(updateBetween(edited, dualStack()))).mode).toBe(
        "incremental",
      );
      expect(await backend().verify(dualStack())).toBe(true);
    });

    it("rewrites everything when a bucket that a change creates is already there", async () => {
      const messages: string[] = [];
      const instance = createIptablesBackend({
        mode: variant,
        runner: node,
        log: (m) => messages.push(m),
      });
      await instance.apply(dualStack());
      // Someone creates the chain of bucket 0F and puts a rule into it.
      await nodeRun(
        tools.restore4,
        ["--noflush", "-w"],
        "*nat\n:IPVSNC-DNAT-0F - [0:0]\n-A IPVSNC-DNAT-0F -j RETURN\nCOMMIT\n",
      );
      const [v4, v6] = dualStack().families as [
        Ruleset["families"][number],
        Ruleset["families"][number],
      ];
      const grown = ruleset([
        family("ipv4", POD_CIDRS.ipv4, [
          ...v4.mappings,
          mapping("192.0.2.15", 80, "10.96.0.10", { name: "new" }),
        ]),
        v6,
      ]);
      expect(await instance.applyChanges(updateBetween(dualStack(), grown))).toEqual({
        mode: "full",
        changedMappings: 7,
      });
      expect(messages.some((m) => m.startsWith("incremental change refused"))).toBe(true);
      expect(await backend().verify(grown)).toBe(true);
      // Back to incremental from the rewritten state; the bucket empties and goes.
      expect((await instance.applyChanges(updateBetween(grown, dualStack()))).mode).toBe(
        "incremental",
      );
      expect(await nodeRun(tools.save4, ["-t", "nat"])).not.toContain("IPVSNC-DNAT-0F");
      expect(await backend().verify(dualStack())).toBe(true);
    });

    it("puts IPv4 back when the IPv6 part of a change is refused", async () => {
      const messages: string[] = [];
      let refuseIPv6 = false;
      const runner: CommandRunner = (file, args, options) =>
        refuseIPv6 && file === tools.restore6
          ? node(file, args, { input: "*nat\n-A NO-SUCH-CHAIN -j RETURN\nCOMMIT\n" })
          : node(file, args, options);
      const instance = createIptablesBackend({
        mode: variant,
        runner,
        log: (m) => messages.push(m),
      });
      const before = dualStack();
      await instance.apply(before);
      // A change in each family: the API's cluster IP (IPv4), IPv6 DNS removed.
      const [v4] = dualStack({ apiCluster: "10.96.0.81" }).families;
      const [, v6] = before.families;
      const after = ruleset([
        v4 as Ruleset["families"][number],
        family("ipv6", POD_CIDRS.ipv6, (v6 as Ruleset["families"][number]).mappings.slice(0, 1)),
      ]);
      refuseIPv6 = true;
      // Refused as a change, then refused again as a full rewrite: the error reaches the caller.
      await expect(instance.applyChanges(updateBetween(before, after))).rejects.toThrow(
        ToolRefusedError,
      );
      expect(messages.filter((m) => m === "rolled ipv4 back to its previous rules")).toHaveLength(
        2,
      );
      await expectReply("pod", LB4, 8080, "tcp", "api");
      await expectReply("pod", LB6, 53, "udp", "dns-v6");
      expect(await backend().verify(before)).toBe(true);
      refuseIPv6 = false;
      expect((await instance.applyChanges(updateBetween(before, after))).mode).toBe("full");
      await expectReply("pod", LB4, 8080, "tcp", "api-2");
      await expectRefused("pod", LB6, 53, "udp");
      expect(await backend().verify(after)).toBe(true);
      await backend().apply(before);
    });

    it("leaves our chains byte for byte where one full sync would, after any sequence of changes", async () => {
      const ours = async () =>
        (await saveAll())
          .split("\n")
          .filter((line) => line.includes("IPVSNC-"))
          .join("\n");
      let incremental = 0;
      // Changes that created or removed a bucket chain: the property must cover them too.
      let bucketChanges = 0;
      const counting: CommandRunner = (file, args, options) => {
        if (options?.input && /^-[NX] IPVSNC-DNAT-/m.test(options.input)) bucketChanges++;
        return node(file, args, options);
      };
      await fc.assert(
        fc.asyncProperty(
          rulesetArbitrary,
          fc.array(fc.tuple(rulesetArbitrary, fc.boolean()), { minLength: 1, maxLength: 4 }),
          async (first, steps) => {
            const instance = backend(counting);
            await instance.apply(first);
            let previous = first;
            for (const [next, everyKey] of steps) {
              // An update of the changed keys, or of every key of the next ruleset.
              const update = updateBetween(previous, next);
              const result = await instance.applyChanges(
                everyKey
                  ? { ...update, mappings: next.families.flatMap((f) => f.mappings) }
                  : update,
              );
              const diff = diffRulesets(previous, next);
              const empty = diff.added.length + diff.removed.length + diff.changed.length === 0;
              // Never a fallback to a full sync: that would prove nothing about changes.
              expect(result.mode).toBe(empty ? "none" : "incremental");
              if (!empty) incremental++;
              previous = next;
            }
            const afterChanges = await ours();
            expect(await backend().verify(previous)).toBe(true);
            await backend().apply(previous);
            expect(afterChanges).toBe(await ours());
          },
        ),
        { numRuns: 12 },
      );
      expect(incremental).toBeGreaterThan(12);
      expect(bucketChanges).toBeGreaterThan(6);
      await backend().cleanup();
      expect(await saveAll()).toBe(baseline);
    }, 120_000);

    it("names a missing binary in its error", async () => {
      const missing = createIptablesBackend({
        mode: variant,
        runner: node,
        binaries: { iptablesSave: "/nonexistent/iptables-save" },
      });
      await expect(missing.apply(dualStack())).rejects.toThrow(/\/nonexistent\/iptables-save/);
    });

    it("has every document computed from random Services accepted by restore --test", async () => {
      let families = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(serviceArbitrary, { maxLength: 6 }), async (services) => {
          const { ruleset: computed } = computeRuleset({
            services,
            node: { spec: { podCIDRs: [ADDRESS_PLAN.podCIDR.ipv4, ADDRESS_PLAN.podCIDR.ipv6] } },
            config: { families: ["ipv4", "ipv6"] },
          });
          const documents = renderRuleset(computed).split(/^# (ipv[46]): .*$/m);
          for (let i = 1; i < documents.length; i += 2) {
            const tool = documents[i] === "ipv4" ? tools.restore4 : tools.restore6;
            const result = await node(tool, ["--test", "--noflush", "-w"], {
              input: documents[i + 1] as string,
            });
            expect(result.stderr).toBe("");
            expect(result.exitCode).toBe(0);
            families++;
          }
        }),
        { numRuns: 25 },
      );
      expect(families).toBe(50);
      expect(await saveAll()).toBe(baseline);
    });
  });
}
