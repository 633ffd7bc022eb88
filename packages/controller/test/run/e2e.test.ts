/**
 * End to end: a real kube-apiserver + etcd, the controller started as `ipvs-node-controller run`
 * inside a node network namespace with the ServiceAccount token of deploy/, and real traffic from a
 * pod namespace to LoadBalancer IPs. No HTTP mocks.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  type ControllerProcess,
  startControllerProcess,
} from "../support/controller-process.js";
import {
  controllerKubeconfig,
  loadBalancerService,
  setIngress as setIngressOf,
} from "../support/node-fixture.js";

const NODE_NAME = "worker-1";

const enabled =
  (await kernelTestsEnabled("controller e2e tests")) &&
  (await envtestTestsEnabled("controller e2e tests")) !== undefined;

describe.skipIf(!enabled).each(["nft", "iptables"] as const)(
  "controller end to end with --backend %s",
  (backend) => {
    let api: TestApiServer;
    let topology: Topology;
    let bridge: TcpBridge;
    let kubeconfig: string;
    /** Every controller process started, the running one last. */
    const runs: ControllerProcess[] = [];

    const kubectl = async (...args: string[]) => (await api.kubectl(args)).stdout;
    const apply = (object: unknown) =>
      api.kubectl(["apply", "-f", "-"], { input: JSON.stringify(object) });
    const setIngress = (name: string, ...ips: string[]) => setIngressOf(api, name, ...ips);
    const answers = async (ip: string, port: number, reply: string) => {
      const result = await topology.connect("pod", ip, port, "tcp", { timeoutMs: 1000 });
      return result.ok && result.reply === reply;
    };
    const refused = async (ip: string, port: number) => {
      const result = await topology.connect("pod", ip, port, "tcp", { timeoutMs: 1000 });
      return !result.ok && result.error === "refused";
    };

    function startController(): void {
      runs.push(
        startControllerProcess({
          namespace: topology.namespaces.node,
          args: [
            `--backend=${backend}`,
            `--kubeconfig=${kubeconfig}`,
            `--node-name=${NODE_NAME}`,
            // The Node has no IPv6 pod CIDR: a warning that must be logged once per start.
            "--net-stack=ipv4,ipv6",
            "--sync-period=2s",
            "--min-sync-period=100ms",
            "--log-level=debug",
          ],
        }),
      );
    }

    /** Stops the running controller; resolves with its exit code. */
    const stopController = async () => (await runs.at(-1)?.stop()) ?? null;
    /** The log lines of every run so far. */
    const logLines = () =>
      runs.flatMap((run) => run.entries().map((entry) => JSON.stringify(entry)));

    beforeAll(async () => {
      api = await startTestApiServer();
      topology = await createTopology({ prefix: `e2e${backend[0]}` });
      bridge = await bridgeIntoNamespace(topology.namespaces.node, {
        host: "127.0.0.1",
        port: Number(new URL(api.serverUrl).port),
      });
      kubeconfig = await controllerKubeconfig(api);
      await apply({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: NODE_NAME },
        spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] },
      });
      await topology.addNodeAddresses([
        "192.0.2.10",
        "192.0.2.11",
        "192.0.2.20",
        "10.96.0.10",
        "10.96.0.20",
        "10.96.0.30",
      ]);
      await topology.listen([
        { ip: "10.96.0.10", port: 80, protocol: "tcp", reply: "web" },
        { ip: "10.96.0.20", port: 80, protocol: "tcp", reply: "api" },
        { ip: "10.96.0.30", port: 80, protocol: "tcp", reply: "late" },
      ]);
    }, 180_000);

    afterAll(async () => {
      await stopController();
      await bridge?.stop();
      await topology?.destroy();
      await api?.stop();
    }, 60_000);

    it("does its job with the ServiceAccount token, which cannot write", async () => {
      const denied = await api.kubectl(["create", "service", "clusterip", "intruder", "--tcp=80"], {
        kubeconfig,
        reject: false,
      });
      expect(denied.exitCode).not.toBe(0);
      expect(denied.stderr).toMatch(/forbidden/i);

      await apply(loadBalancerService("web", "10.96.0.10"));
      await setIngress("web", "192.0.2.10");
      expect(await refused("192.0.2.10", 80)).toBe(true); // the bug, before the controller runs

      // Rules left behind by the other backend (an earlier --backend) are removed once ours are
      // in place.
      const services = await kubectl("get", "services", "-A", "-o", "json");
      const file = join(await mkdtemp(join(tmpdir(), "e2e-")), "services.json");
      await writeFile(file, services);
      const other = backend === "nft" ? "iptables" : "nft";
      const leftover = await topology.runner("node")(process.execPath, [
        CLI,
        "sync",
        "--once",
        `--backend=${other}`,
        `--services=${file}`,
      ]);
      expect(leftover.exitCode).toBe(0);
      const otherRules = async () =>
        other === "nft"
          ? (await topology.runner("node")("nft", ["list", "tables"])).stdout.includes(
              "ipvs-node-controller",
            )
          : (await topology.runner("node")("iptables-save", ["-t", "nat"])).stdout.includes(
              "IPVSNC",
            );
      expect(await otherRules()).toBe(true);

      startController();
      await eventually("the pod reaches web through its LB IP", () =>
        answers("192.0.2.10", 80, "web"),
      );
      await eventually("the other backend's rules are removed", async () => !(await otherRules()));
      const controller = runs.at(-1) as ControllerProcess;
      await controller.waitReady();
      expect((await controller.health("/healthz")).status).toBe(200);
      const text = await controller.metricsText();
      expect(text).toMatch(/ipvs_node_controller_mappings\{family="ipv4"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_last_successful_sync_timestamp_seconds \d/);
      expect(text).toMatch(/ipvs_node_controller_network_programming_duration_seconds_count \d/);
      // The node is an emulated IPVS node: its one LB IP is a local address, there is no kube-ipvs0.
      expect(text).toMatch(/ipvs_node_controller_local_external_ips\{family="ipv4"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_external_ips\{family="ipv4"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_kube_ipvs0_present 0/);
      expect(logLines().join("\n")).toContain(
        "1 of the 1 translated external IPs are local addresses of this node (no kube-ipvs0)",
      );
    }, 60_000);

    it("follows an LB IP change and a new Service", async () => {
      await setIngress("web", "192.0.2.11");
      await eventually("web moves to its new LB IP", () => answers("192.0.2.11", 80, "web"));
      await eventually("the old LB IP is no longer translated", () => refused("192.0.2.10", 80));
      await apply(loadBalancerService("api", "10.96.0.20"));
      await setIngress("api", "192.0.2.20");
      await eventually("api is reachable", () => answers("192.0.2.20", 80, "api"));
    }, 60_000);

    it("leaves the rules in place on SIGTERM and drops a Service deleted while it was down", async () => {
      expect(await stopController()).toBe(0);
      expect(await answers("192.0.2.11", 80, "web")).toBe(true);
      await kubectl("delete", "service", "api");
      startController();
      await eventually("the deleted Service's rules disappear", () => refused("192.0.2.20", 80));
      expect(await answers("192.0.2.11", 80, "web")).toBe(true);
    }, 60_000);

    it("keeps the rules through an API-server restart and converges afterwards", async () => {
      const restart = api.restartApiServer();
      expect(await answers("192.0.2.11", 80, "web")).toBe(true);
      await restart;
      await apply(loadBalancerService("late", "10.96.0.30"));
      await setIngress("late", "192.0.2.20");
      await eventually(
        "a Service created after the restart is programmed",
        () => answers("192.0.2.20", 80, "late"),
        40_000,
      );
      expect(await answers("192.0.2.11", 80, "web")).toBe(true);
    }, 120_000);

    it("repairs rules flushed by someone else within the sync period", async () => {
      const drifts = () => logLines().filter((line) => line.includes("drifted")).length;
      const before = drifts();
      // Traffic is not probed between the flush and the repair: the periodic verification may
      // already have repaired it. The controller's own report of the drift proves it saw it.
      if (backend === "nft") {
        await topology.runner("node")("nft", ["flush", "table", "inet", "ipvs-node-controller"]);
      } else {
        await topology.runner("node")("iptables", ["-t", "nat", "-F", "IPVSNC-DNAT"]);
      }
      await eventually("the controller notices the drift", async () => drifts() > before, 15_000);
      await eventually(
        "the flushed rules are repaired",
        () => answers("192.0.2.11", 80, "web"),
        15_000,
      );
    }, 30_000);

    it("logged the node warning once per start, through every sync since", () => {
      const warnings = logLines().filter((line) =>
        line.includes("no ipv6 pod CIDR is known for this node"),
      );
      expect(runs.length).toBeGreaterThan(1);
      expect(warnings).toHaveLength(runs.length);
      expect(
        logLines().filter((line) => line.includes('"msg":"rules applied"')).length,
      ).toBeGreaterThan(runs.length);
    });
  },
);
