/**
 * The built CLI never creates iptables-legacy tables on a node that has none.
 *
 * Any iptables-legacy command that names a table makes the kernel create it, and from then on
 * every iptables-nft command on the node (kube-proxy's included) warns "iptables-legacy tables
 * present". Each case runs in a fresh network namespace: `sync --once` and `cleanup` with either
 * backend, `cleanup --backend all`, and `run` with either backend against a real API server (the
 * iptables backend's variant detection and the other backend's cleanup run at start). Afterwards
 * the kernel's lists of legacy tables are still empty and iptables-nft-save does not warn.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CommandRunner } from "@ipvs-node-controller/backend";
import {
  bridgeIntoNamespace,
  envtestTestsEnabled,
  hostRunner,
  kernelTestsEnabled,
  runnerIn,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  type ControllerProcess,
  startControllerProcess,
} from "../support/controller-process.js";

const LEGACY_TABLE_LISTS = ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"];
const kernel = await kernelTestsEnabled("legacy-probe kernel tests");
const envtest = kernel && (await envtestTestsEnabled("legacy-probe tests of run")) !== undefined;

const service = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { namespace: "default", name: "web" },
  spec: {
    type: "LoadBalancer",
    clusterIP: "10.96.0.10",
    clusterIPs: ["10.96.0.10"],
    ports: [{ port: 80, protocol: "TCP" }],
  },
  status: { loadBalancer: { ingress: [{ ip: "192.0.2.10" }] } },
};

const namespaces: string[] = [];
let counter = 0;

/** A fresh network namespace with its loopback up, and a runner inside it. */
async function freshNamespace(): Promise<{ name: string; run: CommandRunner }> {
  const name = `legacyprobe-${process.pid}-${++counter}`;
  for (const args of [
    ["netns", "add", name],
    ["-n", name, "link", "set", "lo", "up"],
  ]) {
    const result = await hostRunner("ip", args);
    if (result.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
  }
  namespaces.push(name);
  return { name, run: runnerIn(name) };
}

/** What the kernel lists as existing legacy tables (a missing list means none). */
async function legacyTables(run: CommandRunner): Promise<string> {
  let tables = "";
  for (const file of LEGACY_TABLE_LISTS) {
    const result = await run("cat", [file]);
    if (result.exitCode === 0) tables += result.stdout;
    else expect(result.stderr).toMatch(/No such file or directory/);
  }
  return tables;
}

/** Fails unless the namespace has no legacy table and iptables-nft-save prints no warning. */
async function expectNoLegacyTables(run: CommandRunner): Promise<void> {
  expect(await legacyTables(run)).toBe("");
  for (const save of ["iptables-nft-save", "ip6tables-nft-save"]) {
    const result = await run(save, []);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(`${result.stdout}${result.stderr}`).not.toMatch(/legacy/i);
  }
}

afterAll(async () => {
  for (const name of namespaces) await hostRunner("ip", ["netns", "del", name]);
});

describe.skipIf(!kernel)("the CLI on a node without iptables-legacy tables", () => {
  let servicesFile: string;
  const cli = async (run: CommandRunner, ...args: string[]) => {
    const result = await run(process.execPath, [CLI, ...args]);
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stderr;
  };

  beforeAll(async () => {
    servicesFile = join(await mkdtemp(join(tmpdir(), "legacy-probe-")), "services.json");
    await writeFile(servicesFile, JSON.stringify(service));
  });

  it.each(["iptables", "nft"] as const)(
    "sync --once and cleanup with --backend %s create none",
    async (backend) => {
      const { run } = await freshNamespace();
      await expectNoLegacyTables(run);
      expect(
        await cli(run, "sync", "--once", `--backend=${backend}`, `--services=${servicesFile}`),
      ).toMatch(new RegExp(`applied 1 mappings with ${backend}`));
      const ours =
        backend === "nft"
          ? await run("nft", ["list", "tables"])
          : await run("iptables-nft-save", []);
      expect(ours.stdout).toMatch(backend === "nft" ? /ipvs-node-controller/ : /IPVSNC-DNAT/);
      await expectNoLegacyTables(run);
      expect(await cli(run, "cleanup", `--backend=${backend}`)).toMatch(
        new RegExp(`removed the ${backend} rules`),
      );
      await expectNoLegacyTables(run);
    },
    30_000,
  );

  it("cleanup --backend all creates none", async () => {
    const { run } = await freshNamespace();
    expect(await cli(run, "cleanup", "--backend=all")).toMatch(/no iptables rules to remove/);
    await expectNoLegacyTables(run);
  }, 30_000);
});

describe.skipIf(!envtest)("run on a node without iptables-legacy tables", () => {
  let api: TestApiServer;
  let controller: ControllerProcess | undefined;

  beforeAll(async () => {
    api = await startTestApiServer();
    await api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({ ...service, status: undefined }),
    });
    await api.kubectl([
      "patch",
      "service",
      "web",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: service.status }),
    ]);
  }, 180_000);

  afterAll(async () => {
    await controller?.kill();
    await api?.stop();
  }, 60_000);

  it.each(["iptables", "nft"] as const)(
    "run --backend %s creates none",
    async (backend) => {
      const { name, run } = await freshNamespace();
      const bridge = await bridgeIntoNamespace(name, {
        host: "127.0.0.1",
        port: Number(new URL(api.serverUrl).port),
      });
      try {
        controller = startControllerProcess({
          namespace: name,
          args: [
            `--backend=${backend}`,
            `--kubeconfig=${api.kubeconfigPath}`,
            "--node-name=worker-1",
            // There is no Node object: its empty list must start the first sync at once, not
            // leave it to the periodic one.
            "--sync-period=10m",
          ],
        });
        await controller.waitReady(60_000);
        const ours =
          backend === "nft"
            ? await run("nft", ["list", "tables"])
            : await run("iptables-nft-save", []);
        expect(ours.stdout).toMatch(backend === "nft" ? /ipvs-node-controller/ : /IPVSNC-DNAT/);
        expect(await controller.stop()).toBe(0);
        await expectNoLegacyTables(run);
      } finally {
        await bridge.stop();
      }
    },
    120_000,
  );
});
