/**
 * The DaemonSet run by a real kubelet on the one-node cluster of `scripts/cluster.sh`: from
 * `kubectl apply` and `helm install` to pod traffic, with containerd and runc starting the pods,
 * the kubelet probing them, and kube-proxy (nftables mode) serving ordinary Services.
 *
 * kube-proxy's nftables mode short-circuits LoadBalancer IPs by itself, so the node is made an IPVS
 * node for one Service, as kube-proxy's IPVS mode would make it: `ipvs-web` is a `Local`
 * LoadBalancer Service that kube-proxy ignores (label `service.kubernetes.io/service-proxy-name`),
 * its LB IP is bound on the node's `lo` (IPVS binds it on `kube-ipvs0`) with nothing answering
 * there, and a stand-in for IPVS's virtual server sends its cluster IP to a real endpoint pod
 * ({@link emulateIpvsVirtualServer}). `web` is an ordinary `Local` LoadBalancer Service that
 * kube-proxy serves.
 *
 * The Helm chart is installed as operators install a release: `helm install oci://…` from a
 * registry on the machine's loopback, with the image index of both architectures pushed there and
 * pinned by its digest, and the node's containerd pulling it (`cluster.sh registry add`) instead
 * of the imported copy that `kubectl apply` of the manifest runs.
 *
 * The tests run in order and share the cluster: one `cluster.sh up` for the whole file. Two client
 * pods, one on the pod network and one with hostNetwork, open a new connection to ipvs-web's LB IP
 * every 100 ms from the start, and count what fails.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  AddressPool,
  compareMappings,
  createHelm,
  createLoadBalancerServices,
  debianToolGate,
  differenceCount,
  emulateIpvsVirtualServer,
  eventually,
  expectedMappings,
  type Helm,
  helmTestsEnabled,
  httpGet,
  kernelMappings,
  kubeClient,
  type LocalCluster,
  listServices,
  localClusterEnabled,
  nftTableLines,
  type PushedChart,
  type PushedImageIndex,
  pushChart,
  pushImageIndex,
  RELEASE_PLATFORMS,
  startLocalCluster,
  startTestRegistry,
  type TestRegistry,
} from "@ipvs-node-controller/test-support";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

const SUITE = "real node tests";
const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const MANIFEST = `${REPO_ROOT}deploy/ipvs-node-controller.yaml`;
const CHART = `${REPO_ROOT}deploy/helm/ipvs-node-controller`;

const assetsDir = await localClusterEnabled(SUITE);
const helmBinary = assetsDir === undefined ? undefined : await helmTestsEnabled(SUITE);
/** The chart is installed as a release is: from an OCI registry, which the node pulls from. */
const registryBinary =
  helmBinary === undefined ? undefined : await debianToolGate(SUITE, "docker-registry");

const NAMESPACE = "node-tests";
const SCALE_NAMESPACE = "node-tests-scale";
const SERVICES_AT_SCALE = 1_000;
const SYSTEM = "kube-system";
const DAEMONSET = "ipvs-node-controller";
const SELECTOR = "app.kubernetes.io/name=ipvs-node-controller";
/** The emulated IPVS node's Service: LB IP local on the node, nothing listening there. */
const IPVS_WEB = { name: "ipvs-web", lbIP: "192.0.2.10", port: 8080 } as const;
/** kube-proxy's Service. */
const WEB = { name: "web", lbIP: "192.0.2.20", port: 80 } as const;
/** Where the two connection loops serve their counts, on their own loopback. */
const LOOPS = { client: 18_081, "host-client": 18_082 } as const;
type ClientPod = keyof typeof LOOPS;

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** What one connection gave: the reply, or the kind of failure (refused, timeout, ...). */
type Outcome = string;

interface LoopCounts {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  last: string;
}

describe.skipIf(assetsDir === undefined)("a real node: the DaemonSet run by the kubelet", () => {
  let cluster: LocalCluster;
  let removeEmulation: (() => Promise<void>) | undefined;
  let helm: Helm | undefined;
  /** The pod of the DaemonSet, as last seen Ready. */
  let controllerPod: { name: string; uid: string };

  const kubectl = (args: readonly string[], input?: string) =>
    cluster.kubectl(args, input === undefined ? {} : { input });
  const apply = (objects: readonly unknown[]) =>
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }),
    );
  const jsonOf = async <T>(args: readonly string[]): Promise<T> =>
    JSON.parse((await kubectl([...args, "-o", "json"])).stdout) as T;

  /** One new connection from a client pod to `url`, with the workload's own client. */
  const get = async (from: ClientPod, url: string): Promise<Outcome> => {
    const result = await cluster.kubectl(
      ["exec", "-n", NAMESPACE, from, "--", "/workload", "get", url],
      { reject: false },
    );
    return result.exitCode === 0
      ? result.stdout.trim()
      : (result.stderr.trim().split("\n")[0] ?? "");
  };
  /** One connection from the LAN, outside the node (Node.js fetch in that namespace). */
  const fromOutside = async (url: string): Promise<Outcome> => {
    const answer = await httpGet(cluster.lan, url);
    if (answer.status === 200) return answer.body.trim();
    if (/ECONNREFUSED/.test(answer.body)) return "refused";
    return answer.status === 0 ? answer.body.trim() : `HTTP ${answer.status}`;
  };
  /** Waits until a connection from `from` to `url` gives `reply` (kube-proxy or the controller syncing). */
  const untilAnswers = (from: ClientPod, url: string, reply: Outcome) =>
    eventually(
      `${from} gets ${reply} from ${url}`,
      async () => (await get(from, url)) === reply,
      60_000,
      500,
    );
  const counts = async (from: ClientPod): Promise<LoopCounts> =>
    JSON.parse(await get(from, `http://127.0.0.1:${LOOPS[from]}/`)) as LoopCounts;

  const ipvsWebUrl = `http://${IPVS_WEB.lbIP}:${IPVS_WEB.port}/`;
  const webUrl = `http://${WEB.lbIP}:${WEB.port}/`;

  /** Every way the tests reach the two Services, and what each gave. */
  const reachability = async () => ({
    "pod -> ipvs-web LB IP": await get("client", ipvsWebUrl),
    "host -> ipvs-web LB IP": await get("host-client", ipvsWebUrl),
    "outside -> ipvs-web LB IP": await fromOutside(ipvsWebUrl),
    "pod -> web LB IP": await get("client", webUrl),
    "host -> web LB IP": await get("host-client", webUrl),
  });

  const clusterIPOf = async (service: string) =>
    (
      await kubectl([
        "get",
        "service",
        "-n",
        NAMESPACE,
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
      ])
    ).stdout;

  /**
   * What {@link reachability} gives when, from inside the node, ipvs-web's LB IP gives `inside`:
   * from outside it is always refused (never translated), and kube-proxy always serves web.
   */
  const expectedReachability = (inside: Outcome) => ({
    "pod -> ipvs-web LB IP": inside,
    "host -> ipvs-web LB IP": inside,
    "outside -> ipvs-web LB IP": "refused",
    "pod -> web LB IP": "web",
    "host -> web LB IP": "web",
  });

  const controllerRules = () => nftTableLines(cluster.node, "inet", "ipvs-node-controller");

  /** The DaemonSet's pods, newest first. */
  const controllerPods = async () =>
    (
      await jsonOf<{
        items: {
          metadata: {
            name: string;
            uid: string;
            creationTimestamp: string;
            deletionTimestamp?: string;
          };
          spec: { containers: { args?: string[]; image?: string }[] };
          status: {
            conditions?: { type: string; status: string }[];
            containerStatuses?: { containerID?: string; imageID?: string }[];
          };
        }[];
      }>(["get", "pods", "-n", SYSTEM, "-l", SELECTOR])
    ).items.sort((a, b) =>
      b.metadata.creationTimestamp.localeCompare(a.metadata.creationTimestamp),
    );

  /** Waits until the DaemonSet's pod, deleted, is gone. */
  const untilNoControllerPod = () =>
    eventually(
      "the controller's pod is gone",
      async () => (await controllerPods()).length === 0,
      120_000,
      500,
    );

  /** Waits for the DaemonSet to be rolled out (1/1 ready and up to date) and records its pod. */
  const waitRolledOut = async () => {
    await kubectl(["rollout", "status", "-n", SYSTEM, `daemonset/${DAEMONSET}`, "--timeout=180s"]);
    const ds = await jsonOf<{
      status: {
        desiredNumberScheduled: number;
        numberReady: number;
        updatedNumberScheduled: number;
      };
    }>(["get", "daemonset", "-n", SYSTEM, DAEMONSET]);
    expect(ds.status).toMatchObject({
      desiredNumberScheduled: 1,
      numberReady: 1,
      updatedNumberScheduled: 1,
    });
    const [pod] = (await controllerPods()).filter(
      (p) => p.metadata.deletionTimestamp === undefined,
    );
    if (!pod) throw new Error("no pod of the DaemonSet");
    expect(pod.status.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    controllerPod = { name: pod.metadata.name, uid: pod.metadata.uid };
    return pod;
  };

  /**
   * Runs `action` while both loops keep connecting, then waits for each to succeed 20 more times,
   * and returns how many connections failed meanwhile (and of which kind).
   */
  const failuresDuring = async (action: () => Promise<void>) => {
    const before = { client: await counts("client"), host: await counts("host-client") };
    await action();
    await eventually(
      "both loops have connected 20 more times",
      async () =>
        (await counts("client")).ok >= before.client.ok + 20 &&
        (await counts("host-client")).ok >= before.host.ok + 20,
      60_000,
      500,
    );
    const after = { client: await counts("client"), host: await counts("host-client") };
    return {
      client: after.client.failed - before.client.failed,
      host: after.host.failed - before.host.failed,
      errors: { client: after.client.errors, host: after.host.errors },
    };
  };

  /**
   * Runs `ipvs-node-controller cleanup --backend all` in a one-off host-network pod of our image,
   * the documented removal, and checks that it succeeded and left no rule of either backend.
   */
  const cleanupFromOneOffPod = async (name: string) => {
    await apply([
      {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { namespace: NAMESPACE, name },
        spec: {
          hostNetwork: true,
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          containers: [
            {
              name: "cleanup",
              image: cluster.facts.images.controller,
              command: ["ipvs-node-controller", "cleanup", "--backend", "all"],
              securityContext: { capabilities: { add: ["NET_ADMIN"] } },
            },
          ],
        },
      },
    ]);
    const phase = async () =>
      (await kubectl(["get", "pod", "-n", NAMESPACE, name, "-o", "jsonpath={.status.phase}"]))
        .stdout;
    await eventually(
      `the ${name} pod has finished`,
      async () => /^(Succeeded|Failed)$/.test(await phase()),
      120_000,
      500,
    );
    const log = await kubectl(["logs", "-n", NAMESPACE, name]);
    expect(await phase(), log.stdout + log.stderr).toBe("Succeeded");
    expect(await controllerRules()).toEqual([]);
    expect((await cluster.node("iptables-save", [])).stdout).not.toContain("IPVSNC");
  };

  /** Memory of the controller's container as the node's cgroup (v1) reports it. */
  const controllerMemory = async () => {
    const [pod] = await controllerPods();
    const id = pod?.status.containerStatuses?.[0]?.containerID?.replace(/^containerd:\/\//, "");
    if (!pod || !id) throw new Error("the controller's container has no ID");
    const dir = `${cluster.facts.podsMemoryCgroup}/burstable/pod${pod.metadata.uid}/${id}`;
    const usage = Number(await readFile(`${dir}/memory.usage_in_bytes`, "utf8"));
    const stat = Object.fromEntries(
      (await readFile(`${dir}/memory.stat`, "utf8"))
        .trim()
        .split("\n")
        .map((line) => line.split(" ") as [string, string])
        .map(([key, value]) => [key, Number(value)]),
    );
    // What the kubelet calls the working set, and what it compares with the limit.
    return { workingSet: usage - (stat.total_inactive_file ?? 0), rss: stat.total_rss ?? 0 };
  };

  beforeAll(async () => {
    cluster = await startLocalCluster({ assetsDir: assetsDir as string });
    if (helmBinary) helm = await createHelm(helmBinary);
    // Whatever an earlier run on a cluster that stayed up left behind.
    await kubectl([
      "delete",
      "namespace",
      NAMESPACE,
      SCALE_NAMESPACE,
      "--ignore-not-found",
      "--wait",
    ]);
    await helm?.run(["uninstall", DAEMONSET, "-n", SYSTEM, "--ignore-not-found"], {
      kubeconfig: cluster.kubeconfigPath,
      reject: false,
    });
    await kubectl(["delete", "-f", MANIFEST, "--ignore-not-found", "--wait"]);
    await cluster.node("nft", ["delete", "table", "inet", "ipvs-node-controller"]);

    const workload = cluster.facts.images.workload;
    const pod = (name: string, args: string[], extra: object = {}) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { namespace: NAMESPACE, name, labels: { app: name } },
      spec: {
        terminationGracePeriodSeconds: 1,
        containers: [{ name, image: workload, imagePullPolicy: "Never", args }],
        ...extra,
      },
    });
    const loadBalancer = (name: string, port: number, labels: object = {}) => ({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: NAMESPACE, name, labels },
      spec: {
        type: "LoadBalancer",
        externalTrafficPolicy: "Local",
        selector: { app: name === IPVS_WEB.name ? "backend" : "web" },
        ports: [{ port, targetPort: 8080, protocol: "TCP" }],
      },
    });
    const loop = (port: number) => [
      "loop",
      `--url=${ipvsWebUrl}`,
      `--status=127.0.0.1:${port}`,
      "--interval=100ms",
    ];
    await kubectl(["create", "namespace", NAMESPACE]);
    await apply([
      // ipvs-web's endpoint: no probe, nothing but the IPVS stand-in may connect to it.
      pod("backend", ["serve", "--listen=:8080", "--reply=ipvs"]),
      pod("web", ["serve", "--listen=:8080", "--reply=web"]),
      pod("client", loop(LOOPS.client)),
      pod("host-client", loop(LOOPS["host-client"]), { hostNetwork: true }),
      loadBalancer(IPVS_WEB.name, IPVS_WEB.port, {
        "service.kubernetes.io/service-proxy-name": "ipvs-emulation",
      }),
      loadBalancer(WEB.name, WEB.port),
    ]);
    // The LB IPs, set the way MetalLB would.
    for (const { name, lbIP } of [IPVS_WEB, WEB]) {
      await kubectl([
        "patch",
        "service",
        "-n",
        NAMESPACE,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        JSON.stringify({ status: { loadBalancer: { ingress: [{ ip: lbIP }] } } }),
      ]);
    }
    await kubectl([
      "wait",
      "-n",
      NAMESPACE,
      "pod",
      "--all",
      "--for=condition=Ready",
      "--timeout=120s",
    ]);

    // The IPVS node: ipvs-web's LB IP is an address of the node; its cluster IP is a virtual
    // server that sends connections to the backend pod.
    const clusterIP = await clusterIPOf(IPVS_WEB.name);
    const endpoint = (
      await kubectl(["get", "pod", "-n", NAMESPACE, "backend", "-o", "jsonpath={.status.podIP}"])
    ).stdout;
    await cluster.node("ip", ["address", "add", `${IPVS_WEB.lbIP}/32`, "dev", "lo"]);
    removeEmulation = (
      await emulateIpvsVirtualServer(cluster.node, { clusterIP, port: IPVS_WEB.port, endpoint })
    ).remove;
    // The network outside sends the LB IPs to this node, as a load balancer would.
    await cluster.lan("ip", ["route", "replace", "192.0.2.0/24", "via", cluster.facts.nodeIP]);
  }, 30 * 60_000);

  afterEach(async (context) => {
    if (context.task.result?.state !== "fail") return;
    const logs = await cluster.kubectl(["logs", "-n", SYSTEM, "-l", SELECTOR, "--tail=30"], {
      reject: false,
    });
    console.error(`controller log (tail):\n${logs.stdout}${logs.stderr}`);
  });

  afterAll(async () => {
    if (!cluster) return;
    await helm?.run(["uninstall", DAEMONSET, "-n", SYSTEM, "--ignore-not-found"], {
      kubeconfig: cluster.kubeconfigPath,
      reject: false,
    });
    await helm?.dispose();
    await cluster.kubectl(["delete", "-f", MANIFEST, "--ignore-not-found"], { reject: false });
    await cluster.kubectl(
      ["delete", "namespace", NAMESPACE, SCALE_NAMESPACE, "--ignore-not-found", "--wait=false"],
      { reject: false },
    );
    await removeEmulation?.();
    await cluster.node("ip", ["address", "del", `${IPVS_WEB.lbIP}/32`, "dev", "lo"]);
    await cluster.lan("ip", ["route", "del", "192.0.2.0/24"]);
    await cluster.node("nft", ["delete", "table", "inet", "ipvs-node-controller"]);
    await cluster.stop();
  }, 5 * 60_000);

  it("without the controller, pods and the host are refused at the IPVS node's LB IP; kube-proxy serves web", async () => {
    // The virtual server itself works: its cluster IP answers.
    const clusterIP = await clusterIPOf(IPVS_WEB.name);
    expect(await get("client", `http://${clusterIP}:${IPVS_WEB.port}/`)).toBe("ipvs");
    expect(await get("host-client", `http://${clusterIP}:${IPVS_WEB.port}/`)).toBe("ipvs");
    await untilAnswers("client", webUrl, "web");
    expect(await reachability()).toEqual(expectedReachability("refused"));
    expect((await counts("client")).last).toBe("refused");
    expect((await counts("host-client")).last).toBe("refused");
  }, 120_000);

  it("kubectl apply -f deploy/ipvs-node-controller.yaml: the kubelet reports it ready through its probes, its log says rules applied, /metrics answers", async () => {
    const started = performance.now();
    await kubectl(["apply", "-f", MANIFEST]);
    const pod = await waitRolledOut();
    console.log(`apply -> pod Ready: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    // Ready came from the kubelet running the manifest's readiness probe on the node IP.
    expect(pod.spec.containers[0]?.args).toContain("--backend=nft");
    const logs = await kubectl(["logs", "-n", SYSTEM, controllerPod.name]);
    expect(logs.stdout).toMatch(/"msg":"rules applied"/);
    const metrics = await httpGet(cluster.node, "http://127.0.0.1:10266/metrics");
    expect(metrics.status).toBe(200);
    // One external IP is a local address of this node: ipvs-web's.
    expect(metrics.body).toMatch(/^ipvs_node_controller_local_external_ips\{family="ipv4"\} 1$/m);
  }, 240_000);

  it("with the controller, a pod and a hostNetwork pod reach ipvs-web's LB IP; web is unchanged; traffic from outside is not translated", async () => {
    await untilAnswers("client", ipvsWebUrl, "ipvs");
    expect(await reachability()).toEqual(expectedReachability("ipvs"));
    // The mapping that does it: ipvs-web's LB IP to its cluster IP; web's is there too, inert
    // (its LB IP is not an address of this node).
    expect(Object.fromEntries(await kernelMappings(cluster.node))).toEqual({
      [`${IPVS_WEB.lbIP} tcp ${IPVS_WEB.port}`]: await clusterIPOf(IPVS_WEB.name),
      [`${WEB.lbIP} tcp ${WEB.port}`]: await clusterIPOf(WEB.name),
    });
  }, 120_000);

  it("ipvs-node-controller doctor --probe in the pod exits 0", async () => {
    const doctor = await cluster.kubectl(
      ["exec", "-n", SYSTEM, controllerPod.name, "--", "ipvs-node-controller", "doctor", "--probe"],
      { reject: false },
    );
    expect(doctor.exitCode, `${doctor.stdout}\n${doctor.stderr}`).toBe(0);
    expect(doctor.stdout).toMatch(/affected, and the fix works/);
    expect(doctor.stdout).toMatch(
      new RegExp(
        `${IPVS_WEB.lbIP.replaceAll(".", "\\.")} tcp/${IPVS_WEB.port} .* rule ok +probe ok`,
      ),
    );
  }, 60_000);

  it(`the pod's memory, from the node's cgroup, at idle and with ${SERVICES_AT_SCALE.toLocaleString("en")} Services`, async () => {
    const idle = await controllerMemory();
    await kubectl(["create", "namespace", SCALE_NAMESPACE]);
    const client = kubeClient(cluster);
    try {
      await createLoadBalancerServices(client, {
        count: SERVICES_AT_SCALE,
        pool: new AddressPool(),
        namespace: SCALE_NAMESPACE,
      });
      const expected = expectedMappings(await listServices(client));
      await eventually(
        `the controller has programmed the mappings of ${SERVICES_AT_SCALE} Services`,
        async () =>
          differenceCount(compareMappings(expected, await kernelMappings(cluster.node))) === 0,
        180_000,
        1_000,
      );
    } finally {
      client.close();
    }
    const loaded = await controllerMemory();
    console.log(
      `controller container memory (cgroup): idle working set ${mib(idle.workingSet)} (rss ${mib(idle.rss)}); ` +
        `with ${SERVICES_AT_SCALE} Services working set ${mib(loaded.workingSet)} (rss ${mib(loaded.rss)})`,
    );
    // Still the same pod, Ready: no OOM kill, no failed probe.
    expect((await waitRolledOut()).metadata.uid).toBe(controllerPod.uid);
    await kubectl(["delete", "namespace", SCALE_NAMESPACE, "--wait"]);
  }, 600_000);

  it("kubectl delete pod: the DaemonSet replaces it, and no connection fails", async () => {
    const old = controllerPod;
    const failed = await failuresDuring(async () => {
      await kubectl(["delete", "pod", "-n", SYSTEM, old.name, "--wait"]);
      await waitRolledOut();
    });
    expect(controllerPod.uid).not.toBe(old.uid);
    expect(failed).toEqual({ client: 0, host: 0, errors: expect.anything() });
  }, 240_000);

  it("a kube-proxy restart: no connection fails, and web is served again", async () => {
    const failed = await failuresDuring(async () => {
      await cluster.restart("kube-proxy");
    });
    expect(failed).toEqual({ client: 0, host: 0, errors: expect.anything() });
    await untilAnswers("client", webUrl, "web");
    expect(await reachability()).toMatchObject({
      "pod -> ipvs-web LB IP": "ipvs",
      "host -> ipvs-web LB IP": "ipvs",
    });
  }, 240_000);

  describe.skipIf(registryBinary === undefined)("the Helm chart, from a registry", () => {
    let registry: TestRegistry;
    let image: PushedImageIndex;
    let chart: PushedChart;
    let stopPulling: (() => Promise<void>) | undefined;

    const helmRun = (args: readonly string[], input?: string) =>
      (helm as Helm).run(args, {
        kubeconfig: cluster.kubeconfigPath,
        ...(input === undefined ? {} : { input }),
      });
    const fromRegistry = () => [chart.url, "--version", chart.version, "--plain-http"];

    beforeAll(async () => {
      registry = await startTestRegistry(registryBinary as string);
      image = await pushImageIndex(registry, RELEASE_PLATFORMS);
      chart = await pushChart(helm as Helm, registry, CHART);
      stopPulling = await cluster.pullFrom(registry.address);
    }, 3_600_000);

    afterAll(async () => {
      await stopPulling?.();
      await registry?.stop();
    }, 120_000);

    it("helm install from oci:// after the manifest is removed: the node pulls the image index from the registry; Ready, and no connection fails", async () => {
      const failed = await failuresDuring(async () => {
        await kubectl(["delete", "-f", MANIFEST, "--wait"]);
        await untilNoControllerPod();
        // Its rules stay in place by design.
        expect((await controllerRules()).join("\n")).toContain(IPVS_WEB.lbIP);
        await helmRun(
          ["install", DAEMONSET, ...fromRegistry(), "--namespace", SYSTEM, "--values", "-"],
          JSON.stringify({ image: { repository: image.repository, digest: image.digest } }),
        );
        await waitRolledOut();
      });
      expect(failed).toEqual({ client: 0, host: 0, errors: expect.anything() });

      const [pod] = await controllerPods();
      expect(pod?.spec.containers[0]?.image).toBe(image.reference);
      // The index by its digest, which only a pull from a registry gives the node (the imported
      // copy has its own manifest and no index), resolved by the node to its own architecture.
      // containerd names the image by the first registry it came from: an earlier run's port on
      // a cluster that stayed up.
      expect(pod?.status.containerStatuses?.[0]?.imageID).toMatch(
        new RegExp(`^127\\.0\\.0\\.1:\\d+/ipvs-node-controller@${image.digest}$`),
      );
      const pulled = await jsonOf<{ items: { reason: string; message: string }[] }>([
        "get",
        "events",
        "-n",
        SYSTEM,
        "--field-selector",
        `involvedObject.name=${controllerPod.name},reason=Pulled`,
      ]);
      const messages = pulled.items.map((event) => event.message);
      console.log(messages.join("\n"));
      expect(messages).toEqual([
        expect.stringMatching(/^Successfully pulled image "127\.0\.0\.1:\d+\/ipvs-node-controller/),
      ]);
    }, 600_000);

    it("helm upgrade with a changed value: a rolling update of the DaemonSet, and no connection fails", async () => {
      const old = controllerPod;
      const failed = await failuresDuring(async () => {
        await helmRun([
          "upgrade",
          DAEMONSET,
          ...fromRegistry(),
          "--namespace",
          SYSTEM,
          "--reuse-values",
          "--set",
          "logLevel=debug",
        ]);
        await eventually(
          "the DaemonSet has a new pod",
          async () => (await controllerPods())[0]?.metadata.uid !== old.uid,
          60_000,
          500,
        );
        await waitRolledOut();
      });
      const [pod] = await controllerPods();
      expect(pod?.metadata.uid).not.toBe(old.uid);
      expect(pod?.spec.containers[0]?.args).toContain("--log-level=debug");
      expect(pod?.spec.containers[0]?.image).toBe(image.reference);
      expect(failed).toEqual({ client: 0, host: 0, errors: expect.anything() });
    }, 300_000);
  });

  it("kubectl delete of the DaemonSet: the pod exits 0 within its grace period, its rules stay, and traffic keeps flowing", async () => {
    const rulesBefore = await controllerRules();
    // The pod's last states, as the kubelet reports them until the pod is gone.
    const watch = cluster.spawnKubectl([
      "get",
      "pod",
      "-n",
      SYSTEM,
      controllerPod.name,
      "--watch",
      "-o",
      "json",
    ]);
    // From the start of the log: complete even if kubectl connects late.
    const logs = cluster.spawnKubectl(["logs", "-n", SYSTEM, controllerPod.name, "--follow"]);
    const failed = await failuresDuring(async () => {
      await kubectl(["delete", "daemonset", "-n", SYSTEM, DAEMONSET]);
      await untilNoControllerPod();
    });
    const watched = await watch.stop();
    const terminated = [
      ...watched.stdout.matchAll(
        /"terminated":\s*\{[^}]*"exitCode":\s*(\d+)[^}]*"reason":\s*"([^"]+)"/g,
      ),
    ].map((match) => `${match[1]} ${match[2]}`);
    // Exit status 0: it stopped on SIGTERM by itself; the kubelet kills after the grace period
    // with SIGKILL (137).
    expect(terminated.at(-1)).toBe("0 Completed");
    expect((await logs.done).stdout).toMatch(/controller stopped; rules left in place/);
    expect(await controllerRules()).toEqual(rulesBefore);
    expect(failed).toEqual({ client: 0, host: 0, errors: expect.anything() });
  }, 240_000);

  it("cleanup --backend all from a one-off hostNetwork pod removes every rule; the LB IP is refused again", async () => {
    await cleanupFromOneOffPod("cleanup");
    expect(await controllerRules()).toEqual([]);
    expect(await reachability()).toEqual(expectedReachability("refused"));
  }, 240_000);

  it("the iptables overlay: the kubelet mounts the node's xtables lock, the rules are iptables', and cleanup removes them", async () => {
    const overlay = `${REPO_ROOT}deploy/overlays/iptables`;
    await kubectl(["apply", "-k", overlay]);
    const pod = await waitRolledOut();
    expect(pod.spec.containers[0]?.args).toContain("--backend=iptables");
    await untilAnswers("client", ipvsWebUrl, "ipvs");
    expect(await reachability()).toEqual(expectedReachability("ipvs"));
    expect((await cluster.node("iptables-save", ["-t", "nat"])).stdout).toContain("IPVSNC");
    expect(await controllerRules()).toEqual([]);
    // The hostPath volume is the file of the node's own /run (FileOrCreate made it there): the
    // same device and inode in the pod and on the node.
    const stat = ["-c", "%d:%i", "/run/xtables.lock"];
    const inPod = await kubectl(["exec", "-n", SYSTEM, controllerPod.name, "--", "stat", ...stat]);
    const onNode = await cluster.onNode("stat", stat);
    expect(onNode.exitCode, onNode.stderr).toBe(0);
    expect(inPod.stdout.trim()).toBe(onNode.stdout.trim());

    await kubectl(["delete", "-k", overlay, "--wait"]);
    await untilNoControllerPod();
    expect((await cluster.node("iptables-save", ["-t", "nat"])).stdout).toContain("IPVSNC");
    await cleanupFromOneOffPod("cleanup-iptables");
    expect(await reachability()).toEqual(expectedReachability("refused"));
  }, 240_000);
});
