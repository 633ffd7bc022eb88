/**
 * End to end: a real kube-apiserver + etcd, the controller started as `ipvs-node-controller run`
 * inside a node network namespace with the ServiceAccount token of deploy/, and real traffic from a
 * pod namespace to LoadBalancer IPs. No HTTP mocks.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  bridgeIntoNamespace,
  createTopology,
  envtestTestsEnabled,
  eventually,
  httpGet,
  kernelTestsEnabled,
  startTestApiServer,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
const DEPLOY_BASE = fileURLToPath(new URL("../../../deploy/base", import.meta.url));
const NODE_NAME = "worker-1";

const enabled =
  (await kernelTestsEnabled("controller e2e tests")) &&
  (await envtestTestsEnabled("controller e2e tests")) !== undefined;

const LB_SERVICE = (name: string, clusterIP: string, port = 80) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { namespace: "default", name },
  spec: {
    type: "LoadBalancer",
    externalTrafficPolicy: "Local",
    clusterIP,
    ports: [{ port, protocol: "TCP", targetPort: 8080 }],
    selector: { app: name },
  },
});

describe.skipIf(!enabled).each(["nft", "iptables"] as const)(
  "controller end to end with --backend %s",
  (backend) => {
    let api: TestApiServer;
    let topology: Topology;
    let bridge: TcpBridge;
    let kubeconfig: string;
    let controller: ChildProcess | undefined;
    let controllerLog = "";
    let starts = 0;

    const kubectl = async (...args: string[]) => (await api.kubectl(args)).stdout;
    const apply = (object: unknown) =>
      api.kubectl(["apply", "-f", "-"], { input: JSON.stringify(object) });
    const setIngress = (name: string, ...ips: string[]) =>
      kubectl(
        "patch",
        "service",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        JSON.stringify({ status: { loadBalancer: { ingress: ips.map((ip) => ({ ip })) } } }),
      );
    const answers = async (ip: string, port: number, reply: string) => {
      const result = await topology.connect("pod", ip, port, "tcp", { timeoutMs: 1000 });
      return result.ok && result.reply === reply;
    };
    const refused = async (ip: string, port: number) => {
      const result = await topology.connect("pod", ip, port, "tcp", { timeoutMs: 1000 });
      return !result.ok && result.error === "refused";
    };
    const health = (path: string) =>
      httpGet(topology.runner("node"), `http://127.0.0.1:10267${path}`);
    const metrics = async () =>
      (await httpGet(topology.runner("node"), "http://127.0.0.1:10266/metrics")).body;

    function startController(): void {
      const child = spawn(
        "ip",
        [
          "netns",
          "exec",
          topology.namespaces.node,
          process.execPath,
          CLI,
          "run",
          `--backend=${backend}`,
          `--kubeconfig=${kubeconfig}`,
          `--node-name=${NODE_NAME}`,
          // The Node has no IPv6 pod CIDR: a warning that must be logged once per start.
          "--net-stack=ipv4,ipv6",
          "--sync-period=2s",
          "--min-sync-period=100ms",
          "--log-level=debug",
          "--metrics-bind-address=127.0.0.1:10266",
          "--health-probe-bind-address=127.0.0.1:10267",
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      child.stdout?.on("data", (chunk) => {
        controllerLog += chunk;
      });
      child.stderr?.on("data", (chunk) => {
        controllerLog += chunk;
      });
      controller = child;
      starts += 1;
    }

    async function stopController(): Promise<number | null> {
      const child = controller;
      controller = undefined;
      if (child === undefined || child.exitCode !== null) return child?.exitCode ?? null;
      const exited = new Promise<number | null>((resolve) =>
        child.once("exit", (code) => resolve(code)),
      );
      child.kill("SIGTERM");
      return exited;
    }

    beforeAll(async () => {
      api = await startTestApiServer();
      topology = await createTopology({ prefix: `e2e${backend[0]}` });
      bridge = await bridgeIntoNamespace(topology.namespaces.node, {
        host: "127.0.0.1",
        port: Number(new URL(api.serverUrl).port),
      });
      await api.kubectl(["apply", "-k", DEPLOY_BASE]);
      kubeconfig = await api.writeKubeconfig(
        await api.serviceAccountToken("kube-system", "ipvs-node-controller"),
      );
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

      await apply(LB_SERVICE("web", "10.96.0.10"));
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
      await eventually(
        "the controller is ready",
        async () => (await health("/readyz")).status === 200,
      );
      expect((await health("/healthz")).status).toBe(200);
      const text = await metrics();
      expect(text).toMatch(/ipvs_node_controller_mappings\{family="ipv4"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_last_successful_sync_timestamp_seconds \d/);
      expect(text).toMatch(/ipvs_node_controller_network_programming_duration_seconds_count \d/);
      // The node is an emulated IPVS node: its one LB IP is a local address, there is no kube-ipvs0.
      expect(text).toMatch(/ipvs_node_controller_local_external_ips\{family="ipv4"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_external_ips\{family="ipv4"\} 1/);
      expect(text).toMatch(/ipvs_node_controller_kube_ipvs0_present 0/);
      expect(controllerLog).toContain(
        "1 of the 1 translated external IPs are local addresses of this node (no kube-ipvs0)",
      );
    }, 60_000);

    it("follows an LB IP change and a new Service", async () => {
      await setIngress("web", "192.0.2.11");
      await eventually("web moves to its new LB IP", () => answers("192.0.2.11", 80, "web"));
      await eventually("the old LB IP is no longer translated", () => refused("192.0.2.10", 80));
      await apply(LB_SERVICE("api", "10.96.0.20"));
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
      await apply(LB_SERVICE("late", "10.96.0.30"));
      await setIngress("late", "192.0.2.20");
      await eventually(
        "a Service created after the restart is programmed",
        () => answers("192.0.2.20", 80, "late"),
        40_000,
      );
      expect(await answers("192.0.2.11", 80, "web")).toBe(true);
    }, 120_000);

    it("repairs rules flushed by someone else within the sync period", async () => {
      const drifts = () => controllerLog.match(/drifted/g)?.length ?? 0;
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
      const warnings = controllerLog
        .split("\n")
        .filter((line) => line.includes("no ipv6 pod CIDR is known for this node"));
      expect(starts).toBeGreaterThan(1);
      expect(warnings).toHaveLength(starts);
      expect(controllerLog.match(/"msg":"rules applied"/g)?.length ?? 0).toBeGreaterThan(starts);
    });
  },
);
