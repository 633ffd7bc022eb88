/**
 * `doctor` reading the cluster the way `run` does: a real kube-apiserver + etcd, the ServiceAccount
 * token of deploy/ (read-only), the Node's pod CIDRs, LoadBalancer status patched as MetalLB would,
 * and the node namespace of an emulated IPVS node, before and after `sync --once`.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  bridgeIntoNamespace,
  createTopology,
  envtestTestsEnabled,
  kernelTestsEnabled,
  startTestApiServer,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DoctorReport } from "../../src/index.js";
import { CLI } from "../support/controller-process.js";
import { controllerKubeconfig, loadBalancerService, setIngress } from "../support/node-fixture.js";

const NODE_NAME = "worker-1";

const enabled =
  (await kernelTestsEnabled("doctor API tests")) &&
  (await envtestTestsEnabled("doctor API tests")) !== undefined;

describe.skipIf(!enabled)("doctor against a real API server", () => {
  let api: TestApiServer;
  let topology: Topology;
  let bridge: TcpBridge;
  let kubeconfig: string;

  const cli = (...args: string[]) => topology.runner("node")(process.execPath, [CLI, ...args]);
  const doctor = async (...args: string[]) => {
    const result = await cli(
      "doctor",
      `--kubeconfig=${kubeconfig}`,
      "--probe",
      "--output=json",
      ...args,
    );
    expect(result.stderr).toBe("");
    return { code: result.exitCode, report: JSON.parse(result.stdout) as DoctorReport };
  };

  beforeAll(async () => {
    api = await startTestApiServer();
    topology = await createTopology({ prefix: "docapi" });
    bridge = await bridgeIntoNamespace(topology.namespaces.node, {
      host: "127.0.0.1",
      port: Number(new URL(api.serverUrl).port),
    });
    kubeconfig = await controllerKubeconfig(api);
    const apply = (object: unknown) =>
      api.kubectl(["apply", "-f", "-"], { input: JSON.stringify(object) });
    await apply({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: NODE_NAME },
      spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] },
    });
    await apply(loadBalancerService("web", "10.96.0.10"));
    await setIngress(api, "web", "192.0.2.10");
    await topology.addNodeAddresses(["192.0.2.10", "10.96.0.10"]);
    await topology.listen([{ ip: "10.96.0.10", port: 80, protocol: "tcp", reply: "web" }]);
  }, 180_000);

  afterAll(async () => {
    await bridge?.stop();
    await topology?.destroy();
    await api?.stop();
  }, 60_000);

  it("lists Services and the Node with the read-only token, and judges before and after sync --once", async () => {
    const before = await doctor(`--node-name=${NODE_NAME}`);
    expect(before.code).toBe(1);
    expect(before.report.source).toEqual({ kind: "api", server: api.serverUrl, nodeFound: true });
    expect(before.report.node.name).toBe(NODE_NAME);
    expect(before.report.podTraffic.families).toEqual([
      {
        family: "ipv4",
        match: "sourceCIDRs",
        cidrs: [{ cidr: "10.244.1.0/24", sources: ["Node spec.podCIDRs"] }],
      },
    ]);
    expect(before.report.services).toEqual([
      {
        service: "default/web",
        mappings: [
          expect.objectContaining({
            externalIP: "192.0.2.10",
            clusterIP: "10.96.0.10",
            local: true,
            rule: "missing",
            probe: { result: "refused", clusterIP: { result: "ok" } },
          }),
        ],
      },
    ]);
    // The default Service `kubernetes` has no external IP: it needs nothing and is not skipped.
    expect(before.report.skipped).toEqual([]);

    const services = (await api.kubectl(["get", "services", "-A", "-o", "json"])).stdout;
    const file = join(await mkdtemp(join(tmpdir(), "doctor-api-")), "services.json");
    await writeFile(file, services);
    const synced = await cli("sync", "--once", `--services=${file}`, "--pod-cidr=10.244.1.0/24");
    expect(synced.exitCode, synced.stderr).toBe(0);

    const after = await doctor(`--node-name=${NODE_NAME}`);
    expect(after.code).toBe(0);
    expect(after.report.verdict).toBe("working");
    expect(after.report.services[0]?.mappings[0]).toMatchObject({
      rule: "present",
      probe: { result: "ok" },
    });
  }, 120_000);

  it("notes a Node it cannot find, whose pod CIDRs it then does not know", async () => {
    const { report } = await doctor("--node-name=no-such-node");
    expect(report.source).toMatchObject({ kind: "api", nodeFound: false });
    expect(report.notes).toContainEqual({
      code: "NodeNotFound",
      message: "the Node no-such-node does not exist: its pod CIDRs are unknown",
    });
    expect(report.warnings).toContain(
      "no ipv4 pod CIDR is known for this node: only host-network traffic is translated for ipv4",
    );
  }, 60_000);

  it("exits 1 with one line when the API refuses the token", async () => {
    const forged = await api.writeKubeconfig("not-a-token");
    const result = await cli("doctor", `--kubeconfig=${forged}`, `--node-name=${NODE_NAME}`);
    expect(result.exitCode).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/^error: .*401/);
  }, 60_000);
});
