/**
 * The deploy/ manifests against a real kube-apiserver: schema validation by server-side dry
 * run, least-privilege RBAC proven with a real ServiceAccount token, and static checks of the
 * DaemonSet in every overlay.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  envtestTestsEnabled,
  httpGet,
  type KubectlResult,
  kernelTestsEnabled,
  runnerIn,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import type { V1DaemonSet, V1Service } from "@kubernetes/client-node";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtCli } from "../support/built-cli.js";
import {
  controllerContainer,
  expectHardenedDaemonSet,
  expectReadOnlyRbac,
  expectVariant,
  findObject,
  HEALTH_PORT,
  METRICS_ADDRESS,
  NAME,
  NAMESPACE,
  parseManifest,
  type Variant,
} from "./manifest-checks.js";

const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const DEPLOY_DIR = `${REPO_ROOT}deploy`;
const RENDERED_MANIFEST = `${DEPLOY_DIR}/ipvs-node-controller.yaml`;
const OVERLAYS = ["nft", "iptables", "dual-stack"] as const;
type Overlay = (typeof OVERLAYS)[number];

const assetsDir = await envtestTestsEnabled("deploy.test.ts: the API-server tests");
const describeWithApiServer = assetsDir ? describe : describe.skip;

// The controller as the image runs it: the built CLI, built from the current sources (a missing
// or stale build fails the test that runs it; see built-cli.ts).
const canRunController =
  Boolean(assetsDir) &&
  (await kernelTestsEnabled("deploy.test.ts: the DaemonSet's command line in a namespace"));

describe("the committed install manifest", () => {
  it("is a hardened host-network DaemonSet with read-only RBAC, without any cluster", async () => {
    const objects = parseManifest(await readFile(RENDERED_MANIFEST, "utf8"));
    expect(objects.map((o) => o.kind).sort()).toEqual([
      "ClusterRole",
      "ClusterRoleBinding",
      "DaemonSet",
      "ServiceAccount",
    ]);
    const daemonSet = findObject<V1DaemonSet>(objects, "DaemonSet");
    expectHardenedDaemonSet(daemonSet);
    expectVariant(daemonSet, { backend: "nft" });
    expectReadOnlyRbac(objects);
  });
});

describeWithApiServer("deploy/ against a real kube-apiserver", () => {
  let api: TestApiServer;

  beforeAll(async () => {
    api = await startTestApiServer({ assetsDir: assetsDir as string });
  }, 180_000);

  afterAll(async () => {
    await api?.stop();
  }, 30_000);

  const render = async (overlay: Overlay): Promise<string> =>
    (await api.kubectl(["kustomize", `${DEPLOY_DIR}/overlays/${overlay}`])).stdout;

  describe("the test API server itself", () => {
    it("stores a Service, its LoadBalancer status, and keeps both across a restart", async () => {
      const service: V1Service = {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "fixture-web", namespace: "default" },
        spec: {
          type: "LoadBalancer",
          externalTrafficPolicy: "Local",
          ipFamilyPolicy: "PreferDualStack",
          ipFamilies: ["IPv4", "IPv6"],
          ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }],
          selector: { app: "web" },
        },
      };
      await api.kubectl(["create", "-f", "-"], { input: JSON.stringify(service) });
      await api.kubectl([
        "patch",
        "service",
        "fixture-web",
        "--namespace=default",
        "--subresource=status",
        "--type=merge",
        "-p",
        JSON.stringify({ status: { loadBalancer: { ingress: [{ ip: "192.0.2.10" }] } } }),
      ]);

      const readBack = async (): Promise<V1Service> =>
        JSON.parse(
          (
            await api.kubectl([
              "get",
              "service",
              "fixture-web",
              "--namespace=default",
              "-o",
              "json",
            ])
          ).stdout,
        ) as V1Service;
      const stored = await readBack();
      expect(stored.spec?.clusterIPs).toHaveLength(2);
      expect(stored.spec?.clusterIPs?.[0]).toMatch(/^10\.96\.\d+\.\d+$/);
      expect(stored.spec?.clusterIPs?.[1]).toMatch(/^fd00:10:96::/);
      expect(stored.status?.loadBalancer?.ingress?.map((ingress) => ingress.ip)).toEqual([
        "192.0.2.10",
      ]);

      const urlBefore = api.serverUrl;
      await api.restartApiServer();
      expect(api.serverUrl).toBe(urlBefore);
      const afterRestart = await readBack();
      expect(afterRestart.metadata?.uid).toBe(stored.metadata?.uid);
      expect(afterRestart.status?.loadBalancer?.ingress).toEqual(
        stored.status?.loadBalancer?.ingress,
      );
    }, 120_000);
  });

  describe("manifests", () => {
    it("deploy/ipvs-node-controller.yaml is exactly the rendered nft overlay", async () => {
      const committed = await readFile(RENDERED_MANIFEST, "utf8");
      expect(committed, "run scripts/render-deploy.sh").toBe(await render("nft"));
    });

    it.each(OVERLAYS)("the %s overlay passes a server-side dry run", async (overlay) => {
      const { stdout } = await api.kubectl([
        "apply",
        "--dry-run=server",
        "-k",
        `${DEPLOY_DIR}/overlays/${overlay}`,
      ]);
      expect(stdout).toContain(`daemonset.apps/${NAME} created (server dry run)`);
      expect(stdout).toContain(`clusterrole.rbac.authorization.k8s.io/${NAME} created`);
    });

    it("the committed manifest passes a server-side dry run", async () => {
      const { stdout } = await api.kubectl(["apply", "--dry-run=server", "-f", RENDERED_MANIFEST]);
      expect(stdout).toContain(`daemonset.apps/${NAME} created (server dry run)`);
      expect(stdout).toContain(`serviceaccount/${NAME} created (server dry run)`);
    });

    it("a manifest the server rejects fails the dry run (the check can fail)", async () => {
      // Only the API server's validation knows that a rollout needs maxUnavailable or maxSurge.
      const broken = (await render("nft")).replace("maxUnavailable: 10%", "maxUnavailable: 0");
      expect(broken).toContain("maxUnavailable: 0");
      const result = await api.kubectl(["apply", "--dry-run=server", "-f", "-"], {
        input: broken,
        reject: false,
      });
      expect(result.exitCode).not.toBe(0);
      expect(result.stderr).toContain("maxUnavailable");
    });

    it.each(OVERLAYS)("the %s overlay keeps the DaemonSet hardened", async (overlay) => {
      const daemonSet = findObject<V1DaemonSet>(parseManifest(await render(overlay)), "DaemonSet");
      expectHardenedDaemonSet(daemonSet);
      const expected: Record<Overlay, Variant> = {
        nft: { backend: "nft" },
        "dual-stack": { backend: "nft", netStack: "ipv4,ipv6" },
        iptables: { backend: "iptables" },
      };
      expectVariant(daemonSet, expected[overlay]);
      expectReadOnlyRbac(parseManifest(await render(overlay)));
    });
  });

  describe("RBAC of the ServiceAccount", () => {
    let asController: (args: readonly string[], input?: string) => Promise<KubectlResult>;

    const expectForbidden = (result: KubectlResult): void => {
      expect(result.exitCode, result.stdout).not.toBe(0);
      expect(result.stderr).toContain("(Forbidden)");
    };

    beforeAll(async () => {
      await api.kubectl(["apply", "-k", `${DEPLOY_DIR}/base`]);
      // Objects to read or to try to change, created by the admin.
      await api.kubectl(["create", "namespace", "rbac-probe"]);
      await api.kubectl(["create", "-f", "-"], {
        input: JSON.stringify({
          apiVersion: "v1",
          kind: "List",
          items: [
            {
              apiVersion: "v1",
              kind: "Service",
              metadata: { name: "probe-web", namespace: "rbac-probe" },
              spec: { type: "ClusterIP", ports: [{ port: 80, protocol: "TCP" }] },
            },
            { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } },
            {
              apiVersion: "v1",
              kind: "Secret",
              metadata: { name: "probe-secret", namespace: "rbac-probe" },
              stringData: { password: "not-for-the-controller" },
            },
            {
              apiVersion: "v1",
              kind: "ConfigMap",
              metadata: { name: "probe-config", namespace: "rbac-probe" },
              data: { key: "value" },
            },
          ],
        }),
      });
      const token = await api.serviceAccountToken(NAMESPACE, NAME);
      expect(token.split(".")).toHaveLength(3);
      const kubeconfig = await api.writeKubeconfig(token);
      asController = (args, input) =>
        api.kubectl(args, { kubeconfig, reject: false, ...(input === undefined ? {} : { input }) });
    }, 60_000);

    it("authenticates as the ServiceAccount", async () => {
      const result = await asController([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
      ]);
      expect(result.stdout).toBe(`system:serviceaccount:${NAMESPACE}:${NAME}`);
    });

    it("lists and watches Services in every namespace", async () => {
      const list = await asController(["get", "services", "--all-namespaces", "-o", "name"]);
      expect(list.exitCode, list.stderr).toBe(0);
      expect(list.stdout.split("\n")).toContain("service/probe-web");

      const get = await asController([
        "get",
        "service",
        "probe-web",
        "-n",
        "rbac-probe",
        "-o",
        "name",
      ]);
      expect(get.stdout.trim()).toBe("service/probe-web");

      // A real watch request: the server streams ADDED events, then closes after a second.
      const watch = await asController([
        "get",
        "--raw",
        "/api/v1/services?watch=true&timeoutSeconds=1",
      ]);
      expect(watch.exitCode, watch.stderr).toBe(0);
      expect(watch.stdout).toContain('"type":"ADDED"');
      expect(watch.stdout).toContain('"name":"probe-web"');
    });

    it("gets, lists and watches Nodes", async () => {
      const get = await asController(["get", "node", "node-a", "-o", "name"]);
      expect(get.exitCode, get.stderr).toBe(0);
      expect(get.stdout.trim()).toBe("node/node-a");

      const list = await asController(["get", "nodes", "-o", "name"]);
      expect(list.stdout.split("\n")).toContain("node/node-a");

      const watch = await asController([
        "get",
        "--raw",
        "/api/v1/nodes?watch=true&timeoutSeconds=1",
      ]);
      expect(watch.exitCode, watch.stderr).toBe(0);
      expect(watch.stdout).toContain('"name":"node-a"');
    });

    it("is refused every write to Services, including their status", async () => {
      const newService = {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "intruder", namespace: "rbac-probe" },
        spec: { ports: [{ port: 81 }] },
      };
      expectForbidden(await asController(["create", "-f", "-"], JSON.stringify(newService)));
      expectForbidden(
        await asController([
          "patch",
          "service",
          "probe-web",
          "-n",
          "rbac-probe",
          "--type=merge",
          "-p",
          '{"metadata":{"labels":{"touched":"yes"}}}',
        ]),
      );
      expectForbidden(
        await asController([
          "patch",
          "service",
          "probe-web",
          "-n",
          "rbac-probe",
          "--subresource=status",
          "--type=merge",
          "-p",
          '{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.99"}]}}}',
        ]),
      );
      expectForbidden(await asController(["delete", "service", "probe-web", "-n", "rbac-probe"]));

      // The admin still sees the Service untouched.
      const { stdout } = await api.kubectl([
        "get",
        "service",
        "probe-web",
        "-n",
        "rbac-probe",
        "-o",
        "json",
      ]);
      const service = JSON.parse(stdout) as V1Service;
      expect(service.metadata?.labels?.touched).toBeUndefined();
      expect(service.status?.loadBalancer?.ingress).toBeUndefined();
    });

    it("is refused every write to Nodes", async () => {
      expectForbidden(
        await asController(["label", "node", "node-a", "ipvs-node-controller/touched=yes"]),
      );
      expectForbidden(
        await asController([
          "patch",
          "node",
          "node-a",
          "--subresource=status",
          "--type=merge",
          "-p",
          '{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.1"}]}}',
        ]),
      );
      expectForbidden(
        await asController(
          ["create", "-f", "-"],
          JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: "node-b" } }),
        ),
      );
      expectForbidden(await asController(["delete", "node", "node-a"]));
    });

    it("cannot read Secrets, ConfigMaps or Pods, nor write Events or Leases", async () => {
      expectForbidden(await asController(["get", "secret", "probe-secret", "-n", "rbac-probe"]));
      expectForbidden(await asController(["get", "secrets", "--all-namespaces"]));
      expectForbidden(await asController(["get", "configmap", "probe-config", "-n", "rbac-probe"]));
      expectForbidden(await asController(["get", "configmaps", "--all-namespaces"]));
      expectForbidden(await asController(["get", "pods", "--all-namespaces"]));
      expectForbidden(
        await asController(
          ["create", "-f", "-"],
          JSON.stringify({
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name: "probe-lease", namespace: NAMESPACE },
            spec: {},
          }),
        ),
      );
      expectForbidden(
        await asController(
          ["create", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Event",
            metadata: { name: "probe-event", namespace: "rbac-probe" },
            involvedObject: { kind: "Service", name: "probe-web", namespace: "rbac-probe" },
            reason: "Probe",
            message: "should be refused",
          }),
        ),
      );
    });

    it("the same requests succeed for the admin (the refusals are RBAC, not broken requests)", async () => {
      const read = await api.kubectl([
        "get",
        "secret",
        "probe-secret",
        "-n",
        "rbac-probe",
        "-o",
        "name",
      ]);
      expect(read.stdout.trim()).toBe("secret/probe-secret");
      const label = await api.kubectl([
        "label",
        "node",
        "node-a",
        "ipvs-node-controller/touched=yes",
      ]);
      expect(label.exitCode).toBe(0);
    });
  });
});

describe.skipIf(!canRunController)("the DaemonSet's command line, run in a node namespace", () => {
  // A "node": a network namespace joined to the host by a veth. The API server listens on the
  // host's end, the controller runs in the namespace with the manifest's exact command line,
  // environment and ServiceAccount token, and the host plays kubelet, probing the node IP.
  const suffix = process.pid % 63;
  const namespace = `dpl${process.pid}`;
  const hostLink = `dplh${process.pid}`;
  const nodeLink = `dpln${process.pid}`;
  const hostAddress = `203.0.113.${suffix * 4 + 1}`;
  const nodeAddress = `203.0.113.${suffix * 4 + 2}`;
  const nodeName = "node-a";
  let api: TestApiServer | undefined;
  let controller: ResultPromise | undefined;
  let controllerOutput = "";

  const ip = (args: readonly string[]) => execa("ip", args, { stdin: "ignore" });

  beforeAll(async () => {
    await ip(["netns", "add", namespace]);
    await ip(["link", "add", hostLink, "type", "veth", "peer", "name", nodeLink]);
    await ip(["link", "set", nodeLink, "netns", namespace]);
    await ip(["addr", "add", `${hostAddress}/30`, "dev", hostLink]);
    await ip(["link", "set", hostLink, "up"]);
    await ip(["-n", namespace, "addr", "add", `${nodeAddress}/30`, "dev", nodeLink]);
    await ip(["-n", namespace, "link", "set", nodeLink, "up"]);
    await ip(["-n", namespace, "link", "set", "lo", "up"]);

    api = await startTestApiServer({ assetsDir: assetsDir as string, listenAddress: hostAddress });
    await api.kubectl(["apply", "-k", `${DEPLOY_DIR}/base`]);
    await api.kubectl(["create", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: nodeName },
        spec: { podCIDRs: ["10.244.1.0/24"], podCIDR: "10.244.1.0/24" },
      }),
    });
    const kubeconfig = await api.writeKubeconfig(await api.serviceAccountToken(NAMESPACE, NAME));

    const daemonSet = findObject<V1DaemonSet>(
      parseManifest(await readFile(RENDERED_MANIFEST, "utf8")),
      "DaemonSet",
    );
    const container = controllerContainer(daemonSet);
    expect(container.command).toEqual(["ipvs-node-controller"]);
    // The downward API's part: NODE_NAME from spec.nodeName.
    const env: Record<string, string> = {};
    for (const variable of container.env ?? []) {
      env[variable.name] =
        variable.valueFrom?.fieldRef?.fieldPath === "spec.nodeName"
          ? nodeName
          : (variable.value ?? "");
    }
    controller = execa(
      "ip",
      [
        "netns",
        "exec",
        namespace,
        process.execPath,
        builtCli(),
        ...(container.args ?? []),
        `--kubeconfig=${kubeconfig}`,
      ],
      { env, stdin: "ignore", all: true, reject: false },
    );
    controller.all?.on("data", (chunk: Buffer) => {
      controllerOutput += chunk.toString();
    });
  }, 180_000);

  afterAll(async () => {
    controller?.kill("SIGTERM");
    await controller;
    await api?.stop();
    await execa("ip", ["netns", "delete", namespace], { reject: false });
    await execa("ip", ["link", "delete", hostLink], { reject: false });
  }, 60_000);

  it("becomes ready with only the manifest's RBAC, probed on the node IP like kubelet", async () => {
    const deadline = Date.now() + 60_000;
    let status = 0;
    while (Date.now() < deadline) {
      if (controller?.exitCode !== null) break;
      status = await fetch(`http://${nodeAddress}:${HEALTH_PORT}/readyz`, {
        signal: AbortSignal.timeout(2_000),
      })
        .then((response) => response.status)
        .catch(() => 0);
      if (status === 200) break;
      await new Promise((done) => setTimeout(done, 250));
    }
    const lastLines = controllerOutput.trim().split("\n").slice(-5).join("\n");
    expect(status, `last lines of the controller's log:\n${lastLines}`).toBe(200);

    const health = await fetch(`http://${nodeAddress}:${HEALTH_PORT}/healthz`);
    expect(health.status).toBe(200);
  }, 90_000);

  it("serves metrics on the node's loopback only", async () => {
    const inside = await httpGet(runnerIn(namespace), `http://${METRICS_ADDRESS}/metrics`);
    expect(inside.status).toBe(200);
    expect(inside.body).toMatch(/^# HELP /m);

    // Reachable from beyond the node only if it listened on the node IP; it must not.
    const metricsPort = METRICS_ADDRESS.split(":")[1];
    const outside = await fetch(`http://${nodeAddress}:${metricsPort}/metrics`, {
      signal: AbortSignal.timeout(2_000),
    }).then(
      (response) => `answered ${response.status}`,
      (error: Error) => `refused: ${(error.cause as Error | undefined)?.message ?? error.message}`,
    );
    expect(outside).toMatch(/^refused: .*ECONNREFUSED/);
  });
});
