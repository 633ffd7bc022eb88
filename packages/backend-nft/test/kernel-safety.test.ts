/**
 * What the backend must never do on a real kernel: touch other tables or chains, lose working rules
 * when a document is refused, or emit a document nft refuses for anything the core computes.
 */

import { type CommandRunner, ToolRefusedError } from "@ipvs-node-controller/backend";
import {
  computeRuleset,
  InvalidRulesetError,
  type Ruleset,
  updateBetween,
} from "@ipvs-node-controller/core";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNftBackend } from "../src/index.js";
import { addressOf, hostileString } from "./arbitraries.js";
import { deployServices, replyOf, rulesetFor, type TestService } from "./helpers.js";

const kernel = await kernelTestsEnabled("nft backend kernel safety tests");

const web: TestService = {
  name: "web",
  cluster: { ipv4: "10.96.0.10", ipv6: "fd00:10:96::10" },
  lb: { ipv4: "203.0.113.10", ipv6: "2001:db8:ffff::10" },
  ports: [{ port: 80, protocol: "tcp" }],
};
const api: TestService = {
  name: "api",
  cluster: { ipv4: "10.96.0.11", ipv6: "fd00:10:96::11" },
  lb: { ipv4: "203.0.113.11", ipv6: "2001:db8:ffff::11" },
  ports: [{ port: 443, protocol: "tcp" }],
};

/** kube-proxy-like iptables nat chains and unrelated nft tables, one of them with our name in another family. */
const IPTABLES_RULES = `*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 192.0.2.99/32 -p tcp -m tcp --dport 9 -j RETURN
COMMIT
`;
const OTHER_NFT_TABLES = `table inet other-firewall {
  set blocked { type ipv4_addr; elements = { 192.0.2.200, 192.0.2.201 } }
  chain pre { type nat hook prerouting priority -100; policy accept; ip daddr 192.0.2.202 tcp dport 9 dnat ip to 10.96.0.10:80; }
  chain in { type filter hook input priority 10; policy accept; ip saddr @blocked drop; }
}
table ip ipvs-node-controller {
  chain decoy { ip daddr 192.0.2.203 accept; }
}
`;

describe.skipIf(!kernel)("nft backend safety on the kernel", () => {
  let topology: Topology;
  let node: CommandRunner;

  async function run(file: string, args: string[], input?: string): Promise<string> {
    const result = await node(file, args, input === undefined ? undefined : { input });
    if (result.exitCode !== 0) throw new Error(`${file} ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  /** Everything that is not ours, as text. Generated-at comments carry timestamps and are dropped. */
  async function othersSnapshot(): Promise<string> {
    const iptables = (await run("iptables-save", ["-t", "nat"]))
      .split("\n")
      .filter((line) => !line.startsWith("#"))
      .join("\n");
    const firewall = await run("nft", ["list", "table", "inet", "other-firewall"]);
    const decoy = await run("nft", ["list", "table", "ip", "ipvs-node-controller"]);
    return [iptables, firewall, decoy].join("\n----\n");
  }

  beforeAll(async () => {
    topology = await createTopology({ prefix: "nft-safety" });
    node = topology.runner("node");
    await deployServices(topology, [web, api]);
    await run("iptables-restore", ["--noflush"], IPTABLES_RULES);
    await run("nft", ["-f", "-"], OTHER_NFT_TABLES);
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it("leaves kube-proxy's iptables chains and other nft tables byte-identical", async () => {
    const before = await othersSnapshot();
    expect(before).toContain("-A KUBE-SERVICES -d 192.0.2.99/32");
    expect(before).toContain("chain decoy");
    const backend = createNftBackend({ runner: node });
    await backend.apply(rulesetFor([web]));
    await backend.applyChanges(updateBetween(rulesetFor([web]), rulesetFor([web, api])));
    expect(await topology.connect("pod", api.lb.ipv4, 443, "tcp")).toMatchObject({ ok: true });
    expect(await othersSnapshot()).toBe(before);
    expect(await backend.cleanup()).toBe(true);
    expect(await othersSnapshot()).toBe(before);
    const tables = await run("nft", ["list", "tables"]);
    expect(tables).not.toContain("table inet ipvs-node-controller");
    expect(tables).toContain("table ip ipvs-node-controller");
  });

  it("rejects a hand-made ruleset with port 70000 and keeps the previous rules working", async () => {
    const backend = createNftBackend({ runner: node });
    await backend.apply(rulesetFor([web]));
    const bad: Ruleset = {
      ...rulesetFor([web]),
      families: rulesetFor([web]).families.map((family) => ({
        ...family,
        mappings: family.mappings.map((mapping) => ({ ...mapping, port: 70000 })),
      })),
    };
    await expect(backend.apply(bad)).rejects.toThrow(InvalidRulesetError);
    await expect(backend.apply(bad)).rejects.toThrow(/port 70000 is not a port/);
    expect(await topology.connect("pod", web.lb.ipv4, 80, "tcp")).toEqual({
      ok: true,
      reply: replyOf(web, "ipv4", 80),
    });
    expect(await backend.verify(rulesetFor([web]))).toBe(true);
    await backend.cleanup();
  });

  it("when nft refuses a document, throws ToolRefusedError with its stderr and the old rules keep working", async () => {
    let corrupt = false;
    // Slips an element with port 70000 into every transaction while `corrupt` is set.
    const corrupting: CommandRunner = (file, args, options) => {
      if (!corrupt || options?.input === undefined) return node(file, args, options);
      const document = JSON.parse(options.input) as { nftables: unknown[] };
      document.nftables.push({
        add: {
          element: {
            family: "inet",
            table: "ipvs-node-controller",
            name: "mappings-ipv4",
            elem: [[{ concat: ["203.0.113.99", "tcp", 70000] }, "10.96.0.99"]],
          },
        },
      });
      return node(file, args, { input: JSON.stringify(document) });
    };
    const backend = createNftBackend({ runner: corrupting });
    await backend.apply(rulesetFor([web]));
    corrupt = true;
    const error = (await backend
      .applyChanges(updateBetween(rulesetFor([web]), rulesetFor([web, api])))
      .catch((caught) => caught)) as ToolRefusedError;
    expect(error).toBeInstanceOf(ToolRefusedError);
    expect(error.message).toMatch(/nft rejected the full sync/);
    expect(error.stderr).toMatch(/out of range/);
    // Both the incremental and the fallback full sync were refused as a whole.
    expect(await topology.connect("pod", web.lb.ipv6, 80, "tcp")).toEqual({
      ok: true,
      reply: replyOf(web, "ipv6", 80),
    });
    expect(await topology.connect("pod", api.lb.ipv4, 443, "tcp")).toEqual({
      ok: false,
      error: "refused",
    });
    expect(await backend.verify(rulesetFor([web]))).toBe(true);
    corrupt = false;
    // After a failed write nothing it knows is trusted: the next change is a full sync.
    expect(
      await backend.applyChanges(updateBetween(rulesetFor([web]), rulesetFor([web, api]))),
    ).toEqual({ mode: "full", changedMappings: 4 });
    expect(await topology.connect("pod", api.lb.ipv4, 443, "tcp")).toMatchObject({ ok: true });
    await backend.cleanup();
  });

  it("nft accepts the full sync of every ruleset the core computes from random Services", async () => {
    // Mostly valid data, so that real mappings come out, with hostile values mixed in everywhere.
    const mostly = <T>(valid: fc.Arbitrary<T>, hostile: fc.Arbitrary<unknown>) =>
      fc.oneof({ arbitrary: valid, weight: 4 }, { arbitrary: hostile, weight: 1 });
    const anyAddress = mostly(
      fc.oneof(addressOf.ipv4, addressOf.ipv6),
      fc.oneof(fc.ipV6(), hostileString),
    );
    const service = fc.record({
      apiVersion: fc.constant("v1"),
      kind: fc.constant("Service"),
      metadata: fc.record({
        namespace: mostly(fc.constantFrom("default", "prod"), hostileString),
        name: mostly(fc.constantFrom("web", "api", "dns"), hostileString),
      }),
      spec: fc.record({
        type: mostly(fc.constant("LoadBalancer"), fc.constantFrom("ClusterIP", "NodePort")),
        externalTrafficPolicy: fc.constantFrom("Local", "Cluster"),
        clusterIPs: mostly(
          fc.oneof(
            fc.tuple(addressOf.ipv4, addressOf.ipv6).map((ips) => [...ips]),
            fc.tuple(addressOf.ipv6).map((ips) => [...ips]),
          ),
          fc.array(anyAddress, { maxLength: 2 }),
        ),
        externalIPs: fc.array(anyAddress, { maxLength: 2 }),
        ports: fc.array(
          fc.record({
            port: mostly(
              fc.integer({ min: 1, max: 65535 }),
              fc.oneof(fc.integer({ min: -5, max: 70000 }), hostileString),
            ),
            protocol: mostly(fc.constantFrom("TCP", "UDP", "SCTP"), hostileString),
          }),
          { minLength: 1, maxLength: 3 },
        ),
      }),
      status: fc.record({
        loadBalancer: fc.record({
          ingress: fc.array(
            fc.record({ ip: anyAddress, ipMode: fc.constantFrom("VIP", "Proxy", undefined) }),
            { maxLength: 3 },
          ),
        }),
      }),
    });
    let mappings = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(service, { maxLength: 8 }), async (services) => {
        for (const s of services) {
          // The primary cluster IP repeats the first of clusterIPs, as the API server does.
          (s.spec as Record<string, unknown>).clusterIP = (s.spec.clusterIPs as unknown[])[0];
        }
        const { ruleset } = computeRuleset({
          services: services as never,
          node: { spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] } },
          config: { families: ["ipv4", "ipv6"] },
        });
        mappings += ruleset.families.reduce((sum, family) => sum + family.mappings.length, 0);
        const backend = createNftBackend({ runner: node });
        const checked = await node("nft", ["-c", "-j", "-f", "-"], {
          input: backend.render(ruleset),
        });
        expect(checked.stderr).toBe("");
        expect(checked.exitCode).toBe(0);
      }),
      { numRuns: 25 },
    );
    // The property must have exercised real mappings, not only empty rulesets.
    expect(mappings).toBeGreaterThan(10);
  }, 60_000);
});
