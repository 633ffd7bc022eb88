/**
 * Two controllers on one node, each `ipvs-node-controller run` against a real API server inside
 * the same node network namespace, while a pod and the host keep connecting to an LB IP:
 *
 * 1. a rolling update whose old and new pods overlap (both `--backend nft`), with a change while
 *    both run, then the old one stopped with SIGTERM;
 * 2. an iptables instance started by mistake beside the nft one, a change while both run, then the
 *    nft one killed with SIGKILL;
 * 3. the reverse: an nft instance beside the iptables one, which is then stopped with SIGTERM.
 *
 * Traffic must never break, in any phase: an instance never removes the rules of another instance
 * that is alive, and it removes those of the other backend once that instance has gone, so each
 * phase ends with one clean ruleset, exactly the desired one.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import { computeRuleset, type ServiceInput } from "@ipvs-node-controller/core";
import {
  bridgeIntoNamespace,
  createTopology,
  envtestTestsEnabled,
  eventually,
  type Host,
  kernelTestsEnabled,
  startTestApiServer,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ControllerProcess, startControllerProcess } from "../support/controller-process.js";
import {
  controllerKubeconfig,
  loadBalancerService,
  setIngress as setIngressOf,
} from "../support/node-fixture.js";

const NODE_NAME = "worker-1";
const POD_CIDR = "10.244.1.0/24";

const SUITE = "two-controller tests";
const enabled =
  (await kernelTestsEnabled(SUITE)) && (await envtestTestsEnabled(SUITE)) !== undefined;

/** One `run` process, with health and metrics on ports of its own. */
interface Instance {
  readonly name: string;
  readonly backend: "nft" | "iptables";
  readonly controller: ControllerProcess;
}

/** One probe of the background traffic. */
interface Probe {
  readonly phase: string;
  readonly from: Host;
  readonly outcome: string;
}

describe.skipIf(!enabled)("two controllers on one node", () => {
  let api: TestApiServer;
  let topology: Topology;
  let bridge: TcpBridge;
  let kubeconfig: string;
  let lockDir: string;
  const instances: Instance[] = [];
  const probes: Probe[] = [];
  let phase = "setup";
  let probing: Promise<void> | undefined;
  let stopProbing = false;

  const kubectl = async (...args: string[]) => (await api.kubectl(args)).stdout;
  const setIngress = (name: string, ip: string) => setIngressOf(api, name, ip);
  const answers = async (from: Host, ip: string, reply: string) => {
    const result = await topology.connect(from, ip, 80, "tcp", { timeoutMs: 1000 });
    return result.ok && result.reply === reply;
  };

  function start(name: string, backend: "nft" | "iptables", port: number): Instance {
    const controller = startControllerProcess({
      namespace: topology.namespaces.node,
      args: [
        `--backend=${backend}`,
        `--kubeconfig=${kubeconfig}`,
        `--node-name=${NODE_NAME}`,
        "--sync-period=5s",
        "--min-sync-period=100ms",
        "--log-level=debug",
        `--metrics-bind-address=127.0.0.1:${port}`,
        `--health-probe-bind-address=127.0.0.1:${port + 1}`,
      ],
      env: { XTABLES_LOCKFILE: join(lockDir, "lock") },
    });
    const instance: Instance = { name, backend, controller };
    instances.push(instance);
    return instance;
  }

  /** Whether one of the instance's log lines says `message`. */
  const logged = (instance: Instance, message: string) =>
    instance.controller.entries().some((entry) => JSON.stringify(entry).includes(message));

  /** Whether any rules of each backend are in the node's kernel. */
  async function present(): Promise<{ nft: boolean; iptables: boolean }> {
    const run = topology.runner("node");
    const tables = (await run("nft", ["list", "tables"])).stdout;
    let iptables = false;
    for (const save of ["iptables-legacy-save", "iptables-nft-save"]) {
      iptables ||= (await run(save, ["-t", "nat"])).stdout.includes("IPVSNC-");
    }
    return { nft: tables.includes("inet ipvs-node-controller"), iptables };
  }

  /** The desired ruleset, computed from the API server's Services as the controller does. */
  async function desired() {
    const list = JSON.parse(await kubectl("get", "services", "-A", "-o", "json")) as {
      items: ServiceInput[];
    };
    return computeRuleset({
      services: list.items,
      node: { spec: { podCIDRs: [POD_CIDR] } },
    }).ruleset;
  }

  /** Exactly one backend's rules, and exactly the desired ones. */
  async function expectOnly(backend: "nft" | "iptables"): Promise<void> {
    const other = backend === "nft" ? "iptables" : "nft";
    await eventually(`only the ${backend} rules are left`, async () => {
      const now = await present();
      return now[backend] && !now[other];
    });
    const runner = topology.runner("node");
    const checker =
      backend === "nft" ? createNftBackend({ runner }) : createIptablesBackend({ runner });
    const ruleset = await desired();
    await eventually(`the ${backend} rules are the desired ones`, () => checker.verify(ruleset));
  }

  /** Probes the LB IP from the pod and from the host, one after the other, until stopped. */
  async function probeForever(): Promise<void> {
    let from: Host = "pod";
    while (!stopProbing) {
      // A break is refused at once; the long timeout only keeps a busy machine from looking like one.
      const result = await topology.connect(from, "192.0.2.10", 80, "tcp", { timeoutMs: 3000 });
      probes.push({ phase, from, outcome: result.ok ? result.reply : result.error });
      from = from === "pod" ? "node" : "pod";
    }
  }

  /** Lets the current phase go on until it has had `count` probes. */
  async function probesOf(count: number): Promise<void> {
    const name = phase;
    await eventually(
      `${count} probes during ${name}`,
      () => probes.filter((probe) => probe.phase === name).length >= count,
    );
  }

  /** Every probe of `name` reached web. */
  function expectUnbroken(name: string): void {
    const mine = probes.filter((probe) => probe.phase === name);
    expect(mine.length, `probes during ${name}`).toBeGreaterThan(0);
    expect(
      mine.filter((probe) => probe.outcome !== "web"),
      `failed probes during ${name}`,
    ).toEqual([]);
  }

  beforeAll(async () => {
    lockDir = mkdtempSync(join(tmpdir(), "two-controllers-"));
    api = await startTestApiServer();
    topology = await createTopology({ prefix: "two" });
    bridge = await bridgeIntoNamespace(topology.namespaces.node, {
      host: "127.0.0.1",
      port: Number(new URL(api.serverUrl).port),
    });
    kubeconfig = await controllerKubeconfig(api);
    await api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: NODE_NAME },
        spec: { podCIDR: POD_CIDR, podCIDRs: [POD_CIDR] },
      }),
    });
    await topology.addNodeAddresses([
      "192.0.2.10",
      "192.0.2.20",
      "192.0.2.21",
      "192.0.2.22",
      "10.96.0.10",
      "10.96.0.20",
    ]);
    await topology.listen([
      { ip: "10.96.0.10", port: 80, protocol: "tcp", reply: "web" },
      { ip: "10.96.0.20", port: 80, protocol: "tcp", reply: "api" },
    ]);
    for (const [name, clusterIP, ip] of [
      ["web", "10.96.0.10", "192.0.2.10"],
      ["api", "10.96.0.20", "192.0.2.20"],
    ] as const) {
      await api.kubectl(["apply", "-f", "-"], {
        input: JSON.stringify(loadBalancerService(name, clusterIP)),
      });
      await setIngress(name, ip);
    }
  }, 180_000);

  afterAll(async () => {
    stopProbing = true;
    await probing;
    for (const instance of instances) await instance.controller.kill();
    await bridge?.stop();
    await topology?.destroy();
    await api?.stop();
    rmSync(lockDir, { recursive: true, force: true });
  }, 60_000);

  it("a rolling update whose pods overlap keeps traffic and ends with one ruleset", async () => {
    const old = start("old", "nft", 10300);
    await old.controller.waitReady();
    await eventually("web answers", () => answers("pod", "192.0.2.10", "web"));
    probing = probeForever();

    phase = "rolling update: both run";
    const next = start("new", "nft", 10400);
    await next.controller.waitReady();
    await setIngress("api", "192.0.2.21");
    await eventually("api moved while both run", () => answers("pod", "192.0.2.21", "api"));

    phase = "rolling update: old stopped";
    expect(await old.controller.stop()).toBe(0);
    await setIngress("api", "192.0.2.22");
    await eventually("api moved after the old one stopped", () =>
      answers("node", "192.0.2.22", "api"),
    );
    await probesOf(6);
    expectUnbroken("rolling update: both run");
    await expectOnly("nft");
    expectUnbroken("rolling update: old stopped");
    expect(logged(next, "another instance with this backend runs on this node")).toBe(true);
  }, 120_000);

  it("an iptables instance beside the nft one leaves its rules alone, and removes them once it is killed", async () => {
    const nft = instances.find((instance) => instance.name === "new") as Instance;
    phase = "nft + iptables";
    const iptables = start("iptables", "iptables", 10500);
    await iptables.controller.waitReady();
    await setIngress("api", "192.0.2.20");
    await eventually("api moved while both run", () => answers("pod", "192.0.2.20", "api"));
    expectUnbroken("nft + iptables");
    // Both rulesets stay while both instances run.
    expect(await present()).toEqual({ nft: true, iptables: true });

    phase = "nft killed";
    await nft.controller.kill();
    await expectOnly("iptables");
    await probesOf(6);
    expectUnbroken("nft killed");
    expect(logged(iptables, "an instance with the other backend runs on this node")).toBe(true);
  }, 120_000);

  it("an nft instance beside the iptables one leaves its rules alone, and removes them once it stops", async () => {
    const iptables = instances.find((instance) => instance.name === "iptables") as Instance;
    phase = "iptables + nft";
    const nft = start("nft-again", "nft", 10600);
    await nft.controller.waitReady();
    await setIngress("api", "192.0.2.21");
    await eventually("api moved while both run", () => answers("node", "192.0.2.21", "api"));
    expectUnbroken("iptables + nft");
    expect(await present()).toEqual({ nft: true, iptables: true });

    phase = "iptables stopped";
    expect(await iptables.controller.stop()).toBe(0);
    await expectOnly("nft");
    await eventually("api still answers", () => answers("pod", "192.0.2.21", "api"));
    await probesOf(6);
    stopProbing = true;
    await probing;
    expectUnbroken("iptables stopped");
    const counts = Object.fromEntries(
      [...new Set(probes.map((probe) => probe.phase))].map((name) => [
        name,
        probes.filter((probe) => probe.phase === name).length,
      ]),
    );
    console.log(`probes per phase, all answered by web: ${JSON.stringify(counts)}`);
  }, 120_000);
});
