/**
 * Lock contention with kube-proxy on an iptables-legacy node. iptables-legacy-restore reads the
 * whole nat table, edits it in memory and writes the whole table back, so two writers that do not
 * share the xtables lock lose each other's writes: whatever one wrote between the other's read and
 * write is reverted. The DaemonSet's iptables overlay mounts the host's /run/xtables.lock for that.
 *
 * Here `ipvs-node-controller run --backend iptables --iptables-mode legacy`, against a real API
 * server in a node network namespace, syncs 1,000 Services under churn while a kube-proxy-like
 * loop runs `iptables-legacy-restore --noflush -w` on the nat table every 100 ms for a minute,
 * both with XTABLES_LOCKFILE on one file. A monitor reads the nat table all along:
 * - the kube-proxy-like chains carry a generation number that must never go back (one of our
 *   writes based on an older read would revert it);
 * - our DNAT chain's content must never return to a content it already left (every change uses
 *   an external IP never used before, so a content can only come back through a reverted write).
 * At the end both the kube-proxy-like rules and ours are exactly as desired; the controller's
 * periodic repair is off (`--sync-period=10m`), so a lost write of ours would stay lost.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { computeRuleset, type ServiceInput } from "@ipvs-node-controller/core";
import {
  bridgeIntoNamespace,
  createTopology,
  envtestTestsEnabled,
  eventually,
  kernelTestsEnabled,
  startTestApiServer,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ControllerProcess, startControllerProcess } from "../support/controller-process.js";
import { controllerKubeconfig } from "../support/node-fixture.js";

const NODE_NAME = "worker-1";
const POD_CIDR = "10.244.1.0/24";
const SERVICES = 1_000;
const LOOP_MS = 60_000;

const SUITE = "xtables lock contention tests";
const enabled =
  (await kernelTestsEnabled(SUITE)) && (await envtestTestsEnabled(SUITE)) !== undefined;

/**
 * The kube-proxy-like writer: every 100 ms one `iptables-legacy-restore --noflush -w` that
 * rewrites its chains (300 service rules and a generation marker), as kube-proxy's iptables mode
 * rewrites its own on every sync. Prints each generation with the restore's exit code; on SIGTERM
 * it finishes the write in progress and exits.
 */
const KUBE_PROXY_LIKE_PROGRAM = `
const { spawnSync } = require("node:child_process");
let generation = 0;
let stopping = false;
process.on("SIGTERM", () => { stopping = true; });
const services = [];
for (let i = 0; i < 300; i++) {
  services.push("-A KUBE-SERVICES -d 10.97." + (i >> 8) + "." + (i & 255) + "/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ");
}
const tick = () => {
  if (stopping) process.exit(0);
  generation += 1;
  const document = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-GEN - [0:0]",
    ...services, "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    '-A KUBE-GEN -m comment --comment "generation ' + generation + '" -j RETURN', "COMMIT", ""].join("\\n");
  const started = Date.now();
  const result = spawnSync("iptables-legacy-restore", ["--noflush", "-w"], { input: document });
  process.stdout.write(JSON.stringify({ generation, status: result.status, stderr: String(result.stderr) }) + "\\n");
  setTimeout(tick, Math.max(0, 100 - (Date.now() - started)));
};
tick();
`;

/** What the kube-proxy-like writer leaves behind after `generation`, as iptables-save prints it. */
function kubeProxyLikeLines(generation: number): string[] {
  const lines = [];
  for (let i = 0; i < 300; i++) {
    lines.push(
      `-A KUBE-SERVICES -d 10.97.${i >> 8}.${i & 255}/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ`,
    );
  }
  lines.push(
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    `-A KUBE-GEN -m comment --comment "generation ${generation}" -j RETURN`,
  );
  return lines.sort();
}

/** An external IP never used before in this run. */
let nextAddress = 0;
const freshAddress = () => {
  const i = nextAddress++;
  return `198.18.${i >> 8}.${i & 255}`;
};

const serviceBody = (name: string) => ({
  metadata: { name },
  spec: {
    type: "ClusterIP",
    externalIPs: [freshAddress()],
    ports: [{ port: 80, protocol: "TCP", targetPort: 8080 }],
    selector: { app: name },
  },
});

describe.skipIf(!enabled)("the controller and a kube-proxy-like writer on iptables-legacy", () => {
  let api: TestApiServer;
  let topology: Topology;
  let bridge: TcpBridge;
  let lockDir: string;
  let controller: ControllerProcess | undefined;
  let core: CoreV1Api;

  beforeAll(async () => {
    lockDir = mkdtempSync(join(tmpdir(), "xtables-lock-"));
    api = await startTestApiServer();
    topology = await createTopology({ prefix: "lock" });
    bridge = await bridgeIntoNamespace(topology.namespaces.node, {
      host: "127.0.0.1",
      port: Number(new URL(api.serverUrl).port),
    });
    await api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: NODE_NAME },
        spec: { podCIDR: POD_CIDR, podCIDRs: [POD_CIDR] },
      }),
    });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(api.kubeconfigPath);
    core = kubeConfig.makeApiClient(CoreV1Api);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < SERVICES) {
          const name = `svc-${next++}`;
          await core.createNamespacedService({ namespace: "default", body: serviceBody(name) });
        }
      }),
    );
  }, 300_000);

  afterAll(async () => {
    await controller?.kill();
    await bridge?.stop();
    await topology?.destroy();
    await api?.stop();
    if (lockDir !== undefined) rmSync(lockDir, { recursive: true, force: true });
  }, 60_000);

  it("loses no write of either side while both share the lock", async () => {
    const node = topology.runner("node");
    const lock = join(lockDir, "xtables.lock");
    // kube-proxy's jumps into its chains, made once as kube-proxy does outside its restores.
    const jumps = await node("iptables-legacy-restore", ["--noflush", "-w"], {
      input: [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "COMMIT",
        "",
      ].join("\n"),
    });
    expect(jumps.exitCode, jumps.stderr).toBe(0);

    const kubeconfig = await controllerKubeconfig(api);
    controller = startControllerProcess({
      namespace: topology.namespaces.node,
      args: [
        "--backend=iptables",
        "--iptables-mode=legacy",
        `--kubeconfig=${kubeconfig}`,
        `--node-name=${NODE_NAME}`,
        "--sync-period=10m",
        "--min-sync-period=100ms",
      ],
      env: { XTABLES_LOCKFILE: lock },
    });
    await controller.waitReady(60_000);

    // The monitor: reads the nat table again and again until told to stop.
    const monitor = { reads: 0, maxGeneration: 0, kubeReverts: 0, ourReverts: 0, stop: false };
    const seen = new Set<string>();
    let ours = "";
    const watching = (async () => {
      while (!monitor.stop) {
        const saved = await node("iptables-legacy-save", ["-t", "nat"]);
        monitor.reads += 1;
        const generation = Number(/"generation (\d+)"/.exec(saved.stdout)?.[1] ?? 0);
        if (generation < monitor.maxGeneration) monitor.kubeReverts += 1;
        monitor.maxGeneration = Math.max(monitor.maxGeneration, generation);
        const dnat = createHash("sha256")
          .update(
            saved.stdout
              .split("\n")
              // The jumps into the buckets and the buckets' translations.
              .filter((line) => line.startsWith("-A IPVSNC-DNAT"))
              .join("\n"),
          )
          .digest("hex");
        if (dnat !== ours) {
          if (seen.has(dnat)) monitor.ourReverts += 1;
          seen.add(ours);
          ours = dnat;
        }
      }
    })();

    const writer: ResultPromise = execa(
      "ip",
      ["netns", "exec", topology.namespaces.node, process.execPath, "-e", KUBE_PROXY_LIKE_PROGRAM],
      { env: { ...process.env, XTABLES_LOCKFILE: lock }, reject: false, stdin: "ignore" },
    );

    // Churn for as long as the writer runs: a fresh external IP for a random Service, and now
    // and then a Service replaced by a new one.
    const started = Date.now();
    let updates = 0;
    let replacements = 0;
    let serial = SERVICES;
    const names = Array.from({ length: SERVICES }, (_, i) => `svc-${i}`);
    while (Date.now() - started < LOOP_MS) {
      const index = Math.floor(Math.random() * names.length);
      const name = names[index] as string;
      if (updates % 10 === 9) {
        await core.deleteNamespacedService({ namespace: "default", name });
        const fresh = `svc-${serial++}`;
        await core.createNamespacedService({ namespace: "default", body: serviceBody(fresh) });
        names[index] = fresh;
        replacements += 1;
      } else {
        await core.patchNamespacedService({
          namespace: "default",
          name,
          body: [{ op: "replace", path: "/spec/externalIPs", value: [freshAddress()] }],
        });
      }
      updates += 1;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    writer.kill("SIGTERM");
    const written = String((await writer).stdout ?? "")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as { generation: number; status: number; stderr: string });

    // Both sides done: ours once the kernel holds the desired state for the final Services.
    const list = await core.listNamespacedService({ namespace: "default" });
    const desired = computeRuleset({
      services: list.items as ServiceInput[],
      node: { spec: { podCIDRs: [POD_CIDR] } },
    }).ruleset;
    expect(desired.families[0]?.mappings.length).toBe(SERVICES);
    const checker = createIptablesBackend({ mode: "legacy", runner: node });
    await eventually("our rules are the desired ones", () => checker.verify(desired), 30_000);
    monitor.stop = true;
    await watching;

    expect(written.filter((write) => write.status !== 0)).toEqual([]);
    const last = written.at(-1)?.generation as number;
    const saved = (await node("iptables-legacy-save", ["-t", "nat"])).stdout.split("\n");
    expect(saved.filter((line) => line.startsWith("-A KUBE-")).sort()).toEqual(
      kubeProxyLikeLines(last),
    );
    for (const chain of ["PREROUTING", "OUTPUT"]) {
      const rules = saved.filter((line) => line.startsWith(`-A ${chain} `));
      expect(
        rules.map((rule) => /-j (\S+)$/.exec(rule)?.[1]),
        chain,
      ).toEqual([`IPVSNC-${chain}`, "KUBE-SERVICES"]);
    }
    expect(monitor).toMatchObject({ kubeReverts: 0, ourReverts: 0 });
    expect(monitor.reads).toBeGreaterThan(10);
    const metrics = await (controller as ControllerProcess).metricsText();
    const syncs = [...metrics.matchAll(/^ipvs_node_controller_syncs_total\{mode="(\w+)"\} (\d+)/gm)]
      .map((match) => `${match[1]}=${match[2]}`)
      .join(" ");
    expect(metrics, controller?.tail()).toMatch(/^ipvs_node_controller_sync_failures_total 0$/m);
    console.log(
      `kube-proxy-like writes: ${written.length}; churn: ${updates} changes (${replacements} replacements); controller syncs: ${syncs}; monitor reads: ${monitor.reads}; reverted writes: 0`,
    );
  }, 300_000);
});
