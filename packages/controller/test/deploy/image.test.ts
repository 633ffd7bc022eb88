/**
 * The image, run the way the kubelet runs it. `scripts/image.sh` builds deploy/Dockerfile (and
 * installs and starts Docker Engine, and builds a base image, where they are missing). Each
 * container's settings come from a rendered manifest (the committed one, i.e. the nft overlay,
 * and the iptables overlay) through docker-run-args.ts. Its network namespace is a "node": a
 * long-lived `--network none` container around which the pod and remote namespaces are built,
 * with LoadBalancer and cluster IPs bound on its `lo` as kube-proxy's IPVS mode binds them and a
 * listener on the cluster IP standing in for IPVS. The real API server is reached from the node on
 * 127.0.0.1 with a real ServiceAccount token, mounted where the kubelet mounts it.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ADDRESS_PLAN,
  bridgeIntoNamespace,
  createTopology,
  eventually,
  type Host,
  httpGet,
  type ProbeResult,
  startTestApiServer,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { CoreV1Api, KubeConfig, type V1Container } from "@kubernetes/client-node";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildImage,
  docker,
  imageTestsEnabled,
  mib,
  containerName as name,
  PACKAGE_VERSION,
  removeStaleContainers,
  startNodeContainer,
  tail,
} from "./docker.js";
import {
  daemonSetOf,
  dockerRunArgs,
  type PodContext,
  podOf,
  quantityBytes,
  SERVICE_ACCOUNT_DIR,
} from "./docker-run-args.js";

const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const DEPLOY_DIR = `${REPO_ROOT}deploy`;
const COMMITTED_MANIFEST = readFileSync(`${DEPLOY_DIR}/ipvs-node-controller.yaml`, "utf8");

const NODE_NAME = "node-a";
const LB_IP = "192.0.2.10";
const CLUSTER_IP = "10.96.0.10";
const SECOND_LB_IP = "192.0.2.11";
/** The node's address, on which the kubelet probes a host-network pod. */
const NODE_IP = ADDRESS_PLAN.nodeRemoteSide.ipv4;
const SERVICES_AT_SCALE = 1_000;

const enabled = await imageTestsEnabled("image.test.ts", { envtest: true });

describe("docker-run-args: the kubelet's part, translated for Docker", () => {
  const context: PodContext = {
    nodeName: NODE_NAME,
    nodeContainer: "the-node",
    nodeRoot: "/node-root",
    serviceAccountDir: "/sa",
    apiServer: { host: "127.0.0.1", port: 6443 },
  };

  it("runs the committed manifest's container with its command, security context, volumes and env", () => {
    const { pod, container } = podOf(daemonSetOf(COMMITTED_MANIFEST));
    const { args, hostFiles, graceSeconds } = dockerRunArgs(pod, container, "IMAGE", context);
    expect(args.slice(args.indexOf("IMAGE"))).toEqual(["IMAGE", ...(container.args ?? [])]);
    expect(args).toEqual(
      expect.arrayContaining([
        "--network=container:the-node",
        "--user=0",
        "--read-only",
        "--security-opt=no-new-privileges",
        "--cap-drop=ALL",
        "--cap-add=NET_ADMIN",
        `--mount=type=tmpfs,destination=/tmp,tmpfs-size=${16 * 2 ** 20}`,
        `--mount=type=bind,source=/sa,destination=${SERVICE_ACCOUNT_DIR},readonly`,
        "--env=KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env=KUBERNETES_SERVICE_PORT=6443",
        `--env=NODE_NAME=${NODE_NAME}`,
        "--env=NODE_OPTIONS=--max-semi-space-size=2",
        `--memory=${192 * 2 ** 20}`,
        "--entrypoint=ipvs-node-controller",
      ]),
    );
    expect(args).not.toContain("--privileged");
    expect(hostFiles).toEqual([]);
    expect(graceSeconds).toBe(30);
  });

  it("follows a change of the manifest: a writable root, a hostPath, another grace period", () => {
    const { pod, container } = podOf(daemonSetOf(COMMITTED_MANIFEST));
    const changed: V1Container = {
      ...container,
      securityContext: { ...container.securityContext, readOnlyRootFilesystem: false },
      volumeMounts: [
        ...(container.volumeMounts ?? []),
        { name: "lock", mountPath: "/run/xtables.lock" },
      ],
    };
    const { args, hostFiles, graceSeconds } = dockerRunArgs(
      {
        ...pod,
        terminationGracePeriodSeconds: 5,
        volumes: [
          ...(pod.volumes ?? []),
          { name: "lock", hostPath: { path: "/run/xtables.lock", type: "FileOrCreate" } },
        ],
      },
      changed,
      "IMAGE",
      context,
    );
    expect(args).not.toContain("--read-only");
    expect(args).toContain(
      "--mount=type=bind,source=/node-root/run/xtables.lock,destination=/run/xtables.lock",
    );
    expect(hostFiles).toEqual(["/run/xtables.lock"]);
    expect(graceSeconds).toBe(5);
  });

  it("refuses what it cannot translate rather than leave it out", () => {
    const { pod, container } = podOf(daemonSetOf(COMMITTED_MANIFEST));
    const run = (podChange: object, containerChange: object) =>
      dockerRunArgs({ ...pod, ...podChange }, { ...container, ...containerChange }, "I", context);
    expect(() => run({ hostNetwork: false }, {})).toThrow(/hostNetwork/);
    expect(() =>
      run({}, { env: [{ name: "X", valueFrom: { secretKeyRef: { name: "s", key: "k" } } }] }),
    ).toThrow(/env X/);
    expect(() => run({ volumes: [{ name: "tmp", configMap: { name: "c" } }] }, {})).toThrow(
      /only emptyDir and hostPath/,
    );
    expect(() => run({}, { resources: { limits: { cpu: "1" } } })).toThrow(/cpu/);
    expect(() => run({}, { lifecycle: { preStop: { exec: { command: ["x"] } } } })).toThrow(
      /lifecycle/,
    );
    expect(() => run({}, { securityContext: { seccompProfile: { type: "Unconfined" } } })).toThrow(
      /seccomp/,
    );
    expect(quantityBytes("16Mi")).toBe(16 * 2 ** 20);
    expect(quantityBytes("1G")).toBe(1e9);
    expect(() => quantityBytes("1.5Gi")).toThrow(/quantity/);
  });
});

/** A "node": a container holding a network namespace, with the topology built around it. */
interface Node {
  readonly container: string;
  readonly topology: Topology;
  readonly bridge: TcpBridge;
  /** Stands for the node's root file system (hostPath volumes). */
  readonly root: string;
}

/** A controller container started from a manifest. */
interface Controller {
  readonly container: string;
  readonly graceSeconds: number;
  /** Where the manifest's readiness and liveness probes point, on the node IP. */
  readonly readyz: string;
  readonly healthz: string;
  /** `--metrics-bind-address`, on the node's loopback. */
  readonly metrics: string;
}

describe.skipIf(!enabled)("the image, run as the DaemonSet says", () => {
  let scratch = "";
  const containers: string[] = [];
  const nodes: Node[] = [];
  let image = "";
  let api: TestApiServer;
  let apiPort = 0;
  let serviceAccountDir = "";

  async function logsOf(container: string): Promise<string> {
    const result = await execa("docker", ["logs", container], { reject: false, all: true });
    return result.all ?? "";
  }

  /** Runs `probe` until it holds; on time-out the error carries the controller's last lines. */
  async function eventuallyIn(
    container: string,
    what: string,
    probe: () => Promise<boolean>,
    timeoutMs = 120_000,
  ): Promise<void> {
    try {
      await eventually(what, probe, timeoutMs, 250);
    } catch (error) {
      throw new Error(
        `${(error as Error).message}\nlast lines of ${container}:\n${tail(await logsOf(container), 15)}`,
      );
    }
  }

  async function startNode(label: string): Promise<Node> {
    const container = name(`${label}-node`);
    containers.push(container);
    const pid = await startNodeContainer(image, container);
    const topology = await createTopology({ prefix: `img${label}`, nodePid: pid });
    const bridge = await bridgeIntoNamespace(topology.namespaces.node, {
      host: "127.0.0.1",
      port: apiPort,
    });
    const node = { container, topology, bridge, root: join(scratch, `${label}-root`) };
    nodes.push(node);
    await topology.addNodeAddresses([LB_IP, CLUSTER_IP]);
    await topology.listen([{ ip: CLUSTER_IP, port: 80, protocol: "tcp", reply: "web" }]);
    return node;
  }

  async function startController(
    node: Node,
    label: string,
    manifest: string,
    overrides: { readonly readOnlyRootFilesystem?: boolean } = {},
  ): Promise<Controller> {
    const { pod, container } = podOf(daemonSetOf(manifest));
    // The manifest names the image that scripts/image.sh builds.
    expect(container.image).toBe(image);
    const run = dockerRunArgs(
      pod,
      container,
      container.image as string,
      {
        nodeName: NODE_NAME,
        nodeContainer: node.container,
        nodeRoot: node.root,
        serviceAccountDir,
        apiServer: { host: "127.0.0.1", port: apiPort },
      },
      overrides,
    );
    // The kubelet's part of hostPath type FileOrCreate.
    for (const file of run.hostFiles) {
      mkdirSync(dirname(join(node.root, file)), { recursive: true });
      writeFileSync(join(node.root, file), "", { flag: "a" });
    }
    const probePort = (probeName: string | number | undefined) =>
      typeof probeName === "number"
        ? probeName
        : container.ports?.find((port) => port.name === probeName)?.containerPort;
    const readiness = container.readinessProbe?.httpGet;
    const liveness = container.livenessProbe?.httpGet;
    if (!readiness || !liveness) throw new Error("the manifest has no HTTP probes");
    const metrics = container.args
      ?.find((arg) => arg.startsWith("--metrics-bind-address="))
      ?.split("=")[1];
    if (!metrics) throw new Error("the manifest sets no --metrics-bind-address");

    const controller = name(label);
    containers.push(controller);
    await docker(["run", "--detach", `--name=${controller}`, ...run.args]);
    return {
      container: controller,
      graceSeconds: run.graceSeconds,
      readyz: `http://${NODE_IP}:${probePort(readiness.port)}${readiness.path}`,
      healthz: `http://${NODE_IP}:${probePort(liveness.port)}${liveness.path}`,
      metrics: `http://${metrics}/metrics`,
    };
  }

  const connect = (node: Node, from: Host): Promise<ProbeResult> =>
    node.topology.connect(from, LB_IP, 80, "tcp", { timeoutMs: 1000 });

  async function stopWithin(controller: Controller): Promise<number> {
    const started = performance.now();
    await docker(["stop", `--time=${controller.graceSeconds}`, controller.container]);
    const elapsed = performance.now() - started;
    const state = JSON.parse(
      await docker(["inspect", "--format={{json .State}}", controller.container]),
    ) as { ExitCode: number; OOMKilled: boolean; Running: boolean };
    expect(state.Running).toBe(false);
    expect(state.OOMKilled).toBe(false);
    // 137 would mean the grace period ran out and the runtime killed it.
    expect(state.ExitCode, tail(await logsOf(controller.container), 10)).toBe(0);
    return elapsed;
  }

  /** What `docker diff` lists, less the mount points the runtime itself created. */
  async function writtenOutsideMounts(container: string): Promise<string[]> {
    const mounts = JSON.parse(
      await docker(["inspect", "--format={{json .Mounts}}", container]),
    ) as { Destination: string }[];
    const destinations = mounts.map((mount) => mount.Destination.replace(/^\/var\/run\//, "/run/"));
    const isMountPointOrParent = (path: string) =>
      destinations.some(
        (destination) => destination === path || destination.startsWith(`${path}/`),
      );
    return (await docker(["diff", container]))
      .split("\n")
      .filter(Boolean)
      .filter((line) => !isMountPointOrParent(line.slice(2).replace(/^\/var\/run\//, "/run/")));
  }

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), "image-test-"));
    image = await buildImage();
    await removeStaleContainers();

    api = await startTestApiServer();
    apiPort = Number(new URL(api.serverUrl).port);
    await api.kubectl(["apply", "-k", `${DEPLOY_DIR}/base`]);
    // The kubelet mounts a ServiceAccount token, the cluster's CA and the namespace.
    serviceAccountDir = join(scratch, "serviceaccount");
    mkdirSync(serviceAccountDir);
    writeFileSync(
      join(serviceAccountDir, "token"),
      await api.serviceAccountToken("kube-system", "ipvs-node-controller"),
    );
    writeFileSync(join(serviceAccountDir, "ca.crt"), readFileSync(api.caFile));
    writeFileSync(join(serviceAccountDir, "namespace"), "kube-system");
    await api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          {
            apiVersion: "v1",
            kind: "Node",
            metadata: { name: NODE_NAME },
            spec: { podCIDR: ADDRESS_PLAN.podCIDR.ipv4, podCIDRs: [ADDRESS_PLAN.podCIDR.ipv4] },
          },
          {
            apiVersion: "v1",
            kind: "Service",
            metadata: { namespace: "default", name: "web" },
            spec: {
              type: "LoadBalancer",
              externalTrafficPolicy: "Local",
              clusterIP: CLUSTER_IP,
              ports: [{ port: 80, protocol: "TCP", targetPort: 8080 }],
              selector: { app: "web" },
            },
          },
        ],
      }),
    });
    await api.kubectl([
      "patch",
      "service",
      "web",
      "--namespace=default",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { loadBalancer: { ingress: [{ ip: LB_IP }] } } }),
    ]);
  }, 1_800_000);

  afterAll(async () => {
    for (const node of nodes) {
      await node.bridge.stop();
      await node.topology.destroy();
    }
    if (containers.length > 0) {
      await execa("docker", ["rm", "--force", "--volumes", ...containers], { reject: false });
    }
    await api?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  it("--version prints the package's version", async () => {
    const { container } = podOf(daemonSetOf(COMMITTED_MANIFEST));
    const [command] = container.command ?? [];
    const version = await docker([
      "run",
      "--rm",
      "--network=none",
      "--read-only",
      "--cap-drop=ALL",
      `--entrypoint=${command}`,
      image,
      "--version",
    ]);
    expect(version.trim()).toBe(PACKAGE_VERSION);
    expect(image).toBe(`ipvs-node-controller:${PACKAGE_VERSION}`);
  }, 180_000);

  it("carries the programs it runs and the bundle, and no package manager, shell of Debian's, compiler or cache", async () => {
    const wanted = [
      "node",
      "nft",
      "iptables-legacy-save",
      "iptables-legacy-restore",
      "iptables-nft-save",
      "iptables-nft-restore",
      "ip6tables-legacy-save",
      "ip6tables-legacy-restore",
      "ip6tables-nft-save",
      "ip6tables-nft-restore",
      "ip",
      "conntrack",
      "ipvs-node-controller",
      "sh",
    ];
    // Debian's base system stays out: the image is the programs above, their libraries and BusyBox.
    const unwanted = [
      ...["npm", "npx", "pnpm", "corepack", "yarn", "gcc", "cc", "c++", "make", "tsc"],
      ...["apt", "apt-get", "dpkg", "dpkg-query", "perl", "bash", "debconf-show", "ldconfig"],
    ];
    // One shell in the image answers everything, so that the list is cheap to extend.
    const script = `
      for program in "$@"; do printf 'path %s %s\\n' "$program" "$(command -v "$program" || echo -)"; done
      for tool in "nft --version" "iptables-legacy-restore --version" "iptables-nft-restore --version" \\
          "ip -V" "conntrack --version" "node --version"; do
        $tool >/dev/null 2>&1 && echo "runs $tool" || echo "fails $tool"
      done
      readlink -f "$(command -v ip)" | sed 's/^/ip-is /'
      find / -xdev \\( -path /proc -o -path /sys \\) -prune -o \\( -name '*.deb' \\
        -o -path '/var/lib/apt/*' -o -path '/var/cache/apt/*' -o -path '/root/.npm' \\
        -o -path '/root/.cache' -o -path '/root/.local' -o -path '/usr/local/lib/node_modules' \\
        -o -path '/usr/share/man/*' -o -name node_modules \\
        -o -path '/usr/lib/*/gconv/*' -o -path '/usr/share/locale/*' -o -path '/opt/*' -name '*.d.ts' \\
        -o -path '/opt/*' -name '*.ts' -o -path '/opt/*' -name 'package.json' \\) -print \\
        | sed 's/^/leftover /'
      find /opt -name '*.node' | sed 's/^/native /'
      ls /opt/ipvs-node-controller | sed 's/^/bundle /'
      for entry in /var/lib/dpkg/status.d/*; do sed -n 's/^Package: /deb /p' "$entry"; done
      du -sk /opt/ipvs-node-controller | sed 's/^/opt-kib /'
    `;
    const output = await docker([
      "run",
      "--rm",
      "--network=none",
      "--read-only",
      "--entrypoint=/bin/sh",
      image,
      "-c",
      script,
      "sh",
      ...wanted,
      ...unwanted,
    ]);
    const lines = output.split("\n");
    const field = (kind: string) =>
      lines
        .filter((line) => line.startsWith(`${kind} `))
        .map((line) => line.slice(kind.length + 1));
    const paths = new Map(field("path").map((line) => line.split(" ") as [string, string]));
    for (const program of wanted) expect(paths.get(program), program).not.toBe("-");
    for (const program of unwanted) expect(paths.get(program), program).toBe("-");
    expect(field("fails")).toEqual([]);
    expect(field("runs")).toHaveLength(6);
    // iproute2's ip, not BusyBox's applet of the same name.
    expect(field("ip-is")).toEqual([expect.not.stringContaining("busybox")]);
    expect(field("leftover")).toEqual([]);
    // The build stage runs on the builder's platform: native code would be built for the wrong
    // architecture in another platform's image.
    expect(field("native")).toEqual([]);
    // The bundle: one entry, the chunks it loads on demand, their source maps and the licences
    // of the npm packages in it; no node_modules, so no build tools or test frameworks either.
    const bundle = field("bundle");
    expect(bundle).toContain("ipvs-node-controller.mjs");
    expect(bundle.filter((file) => !/\.mjs(\.map)?$/.test(file))).toEqual([
      "THIRD-PARTY-LICENSES.txt",
    ]);
    // Each Debian package a file came from is recorded, and only those.
    const debs = field("deb");
    for (const deb of ["nodejs", "nftables", "iptables", "iproute2", "conntrack", "busybox"]) {
      expect(debs).toContain(deb);
    }
    for (const deb of ["npm", "gcc", "cpp", "make", "build-essential", "ca-certificates"]) {
      expect(debs).not.toContain(deb);
    }
    for (const deb of ["apt", "dpkg", "perl-base", "bash", "coreutils", "debconf"]) {
      expect(debs).not.toContain(deb);
    }
    const size = Number(await docker(["image", "inspect", "--format={{.Size}}", image]));
    console.log(
      `image ${image}: ${mib(size)}; ${debs.length} Debian packages; ` +
        `/opt/ipvs-node-controller ${mib(Number(field("opt-kib")[0]?.split(/\s/)[0]) * 1024)} ` +
        `(${bundle.length} files)`,
    );
  }, 180_000);

  describe.each([
    { overlay: "nft (deploy/ipvs-node-controller.yaml)", label: "nft" },
    { overlay: "iptables", label: "ipt" },
  ])("the $overlay manifest", ({ overlay, label }) => {
    let manifest = "";
    let node: Node;
    let controller: Controller;

    beforeAll(async () => {
      manifest =
        label === "nft"
          ? COMMITTED_MANIFEST
          : (await api.kubectl(["kustomize", `${DEPLOY_DIR}/overlays/${overlay}`])).stdout;
      node = await startNode(label);
      if (label === "ipt") {
        // A node whose kubelet uses iptables-legacy leaves this chain; the controller then uses
        // iptables-legacy too, which needs the overlay's xtables lock and NET_RAW.
        const hinted = await node.topology.runner("node")("iptables-legacy", [
          "-w",
          "-t",
          "mangle",
          "-N",
          "KUBE-IPTABLES-HINT",
        ]);
        expect(hinted.exitCode, hinted.stderr).toBe(0);
      }
    }, 300_000);

    it("without the controller, the LB IP is refused on the node (the bug)", async () => {
      expect(await connect(node, "pod")).toEqual({ ok: false, error: "refused" });
      expect(await connect(node, "node")).toEqual({ ok: false, error: "refused" });
    });

    it("starts with the manifest's settings; /readyz and /healthz answer on the probe port", async () => {
      controller = await startController(node, label, manifest);
      const settings = JSON.parse(
        await docker(["inspect", "--format={{json .HostConfig}}", controller.container]),
      ) as { ReadonlyRootfs: boolean; CapAdd: string[] | null; NetworkMode: string };
      expect(settings.ReadonlyRootfs).toBe(true);
      const nodeId = await docker(["inspect", "--format={{.Id}}", node.container]);
      expect(settings.NetworkMode).toBe(`container:${nodeId.trim()}`);
      const { container } = podOf(daemonSetOf(manifest));
      expect(settings.CapAdd?.map((cap) => cap.replace(/^CAP_/, "")).sort()).toEqual(
        [...(container.securityContext?.capabilities?.add ?? [])].sort(),
      );

      const runner = node.topology.runner("node");
      await eventuallyIn(
        controller.container,
        "/readyz answers 200 on the node IP",
        async () => (await httpGet(runner, controller.readyz)).status === 200,
      );
      expect((await httpGet(runner, controller.healthz)).status).toBe(200);
    }, 240_000);

    it("fixes pod and host traffic to the LB IP, and leaves traffic from elsewhere alone", async () => {
      await eventuallyIn(controller.container, "a pod reaches web through its LB IP", async () => {
        const result = await connect(node, "pod");
        return result.ok && result.reply === "web";
      });
      expect(await connect(node, "node")).toEqual({ ok: true, reply: "web" });
      // Traffic from beyond the node keeps the Local policy's behaviour.
      expect(await connect(node, "remote")).toEqual({ ok: false, error: "refused" });

      // Listed with the image's own tools, and with this host's nft (1.0.6, Debian 12's), which
      // crashes on sets written by nft 1.1.2 or later: the image's nft must write sets every nft
      // on the node can read (see deploy/README.md).
      const list = (...command: string[]) => docker(["exec", controller.container, ...command]);
      if (label === "nft") {
        expect(await list("nft", "list", "table", "inet", "ipvs-node-controller")).toContain(
          `${LB_IP} . tcp . 80`,
        );
        const host = await node.topology.runner("node")("nft", ["list", "ruleset"]);
        expect({ exitCode: host.exitCode, stderr: host.stderr }).toEqual({
          exitCode: 0,
          stderr: "",
        });
        expect(host.stdout).toContain(`${LB_IP} . tcp . 80`);
      } else {
        expect(await logsOf(controller.container)).toContain("using iptables-legacy");
        expect(await list("iptables-legacy-save", "-t", "nat")).toContain(
          `-A IPVSNC-DNAT-0A -d ${LB_IP}/32 -p tcp -m tcp --dport 80`,
        );
      }
    }, 180_000);

    it("writes nothing outside /tmp, and logs no warning", async () => {
      expect(await writtenOutsideMounts(controller.container)).toEqual([]);
      const logs = await logsOf(controller.container);
      expect(logs).not.toMatch(/read-only file system|EROFS/i);
      // Anything but pino's JSON lines (e.g. a warning of Node.js itself), and pino's levels 40
      // (warn), 50 (error) and 60 (fatal).
      const warnings = logs
        .split("\n")
        .filter(Boolean)
        .filter(
          (line) => !line.startsWith("{") || (JSON.parse(line) as { level: number }).level >= 40,
        );
      expect(warnings).toEqual([]);
    });

    if (label === "ipt") {
      it("waits for the node's xtables lock, as every iptables user on the node does", async () => {
        // The overlay mounts the node's /run/xtables.lock: while another program holds it (as
        // kube-proxy does while it restores), the controller's iptables-legacy-restore -w waits.
        const lock = join(node.root, "run/xtables.lock");
        // --no-fork: the process holding the lock is the one killed to release it.
        const holder = execa("flock", ["--exclusive", "--no-fork", lock, "sleep", "120"], {
          reject: false,
          stdin: "ignore",
        });
        const setIngress = (...ips: string[]) =>
          api.kubectl([
            "patch",
            "service",
            "web",
            "--namespace=default",
            "--subresource=status",
            "--type=merge",
            "-p",
            JSON.stringify({ status: { loadBalancer: { ingress: ips.map((ip) => ({ ip })) } } }),
          ]);
        const reachesSecondIp = async () => {
          const result = await node.topology.connect("pod", SECOND_LB_IP, 80, "tcp", {
            timeoutMs: 1000,
          });
          return result.ok && result.reply === "web";
        };
        try {
          await eventually(
            "the lock is held",
            async () =>
              (await execa("flock", ["--nonblock", lock, "true"], { reject: false })).exitCode !==
              0,
          );
          await node.topology.addNodeAddresses([SECOND_LB_IP]);
          await setIngress(LB_IP, SECOND_LB_IP);
          // Several sync attempts' worth of time; none may get through.
          await new Promise((resolve) => setTimeout(resolve, 3_000));
          expect(await reachesSecondIp()).toBe(false);
          holder.kill("SIGTERM");
          await holder;
          await eventuallyIn(
            controller.container,
            "the new LB IP is translated once the lock is free",
            reachesSecondIp,
          );
        } finally {
          holder.kill("SIGTERM");
          await setIngress(LB_IP);
        }
      }, 240_000);
    }

    it("on SIGTERM (docker stop) exits 0 within the grace period and leaves the rules", async () => {
      const elapsed = await stopWithin(controller);
      console.log(
        `${overlay}: stopped ${(elapsed / 1000).toFixed(1)} s after SIGTERM (grace ${controller.graceSeconds} s)`,
      );
      expect(await connect(node, "pod")).toEqual({ ok: true, reply: "web" });
      expect(await connect(node, "node")).toEqual({ ok: true, reply: "web" });
    }, 120_000);
  });

  describe(`at ${SERVICES_AT_SCALE.toLocaleString("en")} Services`, () => {
    let node: Node;
    let controller: Controller;
    const want = `ipvs_node_controller_mappings{family="ipv4"} ${SERVICES_AT_SCALE + 1}`;

    beforeAll(async () => {
      const kubeConfig = new KubeConfig();
      kubeConfig.loadFromFile(api.kubeconfigPath);
      const core = kubeConfig.makeApiClient(CoreV1Api);
      let next = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < SERVICES_AT_SCALE) {
            const i = next++;
            const service = `scale-${i}`;
            await core.createNamespacedService({
              namespace: "default",
              body: {
                metadata: { name: service },
                spec: {
                  type: "LoadBalancer",
                  allocateLoadBalancerNodePorts: false,
                  externalTrafficPolicy: "Local",
                  selector: { app: service },
                  ports: [{ port: 443, protocol: "TCP", targetPort: 8443 }],
                },
              },
            });
            // Benchmarking addresses (198.18.0.0/15): they only ever appear in rules.
            await core.patchNamespacedServiceStatus({
              namespace: "default",
              name: service,
              body: [
                {
                  op: "add",
                  path: "/status/loadBalancer",
                  value: { ingress: [{ ip: `198.18.${i >> 8}.${i & 255}` }] },
                },
              ],
            });
          }
        }),
      );
      console.log(
        `created ${SERVICES_AT_SCALE} LoadBalancer Services in ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
      node = await startNode("scale");
    }, 300_000);

    const mappingsProgrammed = async () =>
      (await httpGet(node.topology.runner("node"), controller.metrics)).body.includes(want);

    it("reports the image size and the controller's resident memory", async () => {
      const started = performance.now();
      controller = await startController(node, "scale", COMMITTED_MANIFEST);
      await eventuallyIn(
        controller.container,
        `${SERVICES_AT_SCALE + 1} mappings are in the kernel`,
        mappingsProgrammed,
        180_000,
      );
      const programmed = (performance.now() - started) / 1000;
      // Let a few syncs and garbage collections pass before reading the steady state.
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      const pid = Number(
        await docker(["inspect", "--format={{.State.Pid}}", controller.container]),
      );
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]);
      const usage = await docker([
        "stats",
        "--no-stream",
        "--format={{.MemUsage}}",
        controller.container,
      ]);
      const size = Number(await docker(["image", "inspect", "--format={{.Size}}", image]));
      const { container } = podOf(daemonSetOf(COMMITTED_MANIFEST));
      const limit = quantityBytes(String(container.resources?.limits?.memory));
      console.log(
        `image ${mib(size)}; ${SERVICES_AT_SCALE + 1} Services programmed ${programmed.toFixed(1)} s ` +
          `after docker run; controller RSS ${mib(kib("VmRSS") * 1024)} ` +
          `(peak ${mib(kib("VmHWM") * 1024)}), container memory ${usage.trim()}, ` +
          `limit ${mib(limit)}`,
      );
      expect(kib("VmRSS")).toBeGreaterThan(0);
      expect(kib("VmHWM") * 1024).toBeLessThan(limit);
      expect(await stopWithin(controller)).toBeGreaterThan(0);
    }, 300_000);

    it("even with a writable root file system, writes nothing outside /tmp", async () => {
      // The check sees a write where there is one.
      const control = name("control");
      containers.push(control);
      await docker([
        "run",
        `--name=${control}`,
        "--network=none",
        "--entrypoint=sh",
        image,
        "-c",
        ": >/etc/written",
      ]);
      expect(await writtenOutsideMounts(control)).toContain("A /etc/written");

      // The same container with readOnlyRootFilesystem false: whatever it wrote would show in
      // `docker diff` instead of failing. It adopts the rules of 1,001 Services, then stops.
      controller = await startController(node, "scale-writable", COMMITTED_MANIFEST, {
        readOnlyRootFilesystem: false,
      });
      await eventuallyIn(
        controller.container,
        "the controller is ready",
        async () => (await httpGet(node.topology.runner("node"), controller.readyz)).status === 200,
      );
      expect(await mappingsProgrammed()).toBe(true);
      await stopWithin(controller);
      expect(await writtenOutsideMounts(controller.container)).toEqual([]);
    }, 180_000);
  });
});
