/**
 * The one-node Kubernetes cluster of `scripts/cluster.sh` (kubelet, containerd, kube-proxy in
 * nftables mode, the control plane), for tests that need pods started by a real kubelet.
 *
 * `startLocalCluster` runs `cluster.sh up`: it starts what is not running and returns the admin
 * identity, a kubectl, and runners for the node's and the LAN's network namespaces. A cluster that
 * was already up is used as it is and left up by `stop()`; one this process brought up is brought
 * down again (also when the process exits without `stop()`).
 *
 * @example
 * ```ts
 * const assets = await localClusterEnabled("real node tests");
 * const cluster = await startLocalCluster({ assetsDir: assets as string });
 * try {
 *   await cluster.kubectl(["apply", "-f", "deploy/ipvs-node-controller.yaml"]);
 *   const rules = await cluster.node("nft", ["list", "ruleset"]);
 *   await cluster.restart("kube-proxy");
 * } finally {
 *   await cluster.stop();
 * }
 * ```
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { type CommandRunner, runTool } from "@ipvs-node-controller/backend";
import { execa } from "execa";
import { builtBinaryGate, repositoryScript, runBuildScript } from "./built-binary.js";
import {
  EnvtestUnavailableError,
  type KubectlOptions,
  type KubectlResult,
  kubectlWith,
} from "./envtest.js";
import { runnerIn } from "./runner.js";
import type { ApiEndpoint } from "./service-churn.js";

const CLUSTER_SCRIPT = repositoryScript("cluster.sh");
const BUILD_SCRIPT = repositoryScript("envtest-build.sh");

/** Thrown when the cluster cannot be brought up; carries the script's output. */
export class LocalClusterError extends Error {
  override readonly name = "LocalClusterError";
}

/** What `cluster.sh up` records about the cluster (`cluster.json` next to the kubeconfig). */
export interface LocalClusterFacts {
  readonly nodeName: string;
  /** The node's InternalIP, on its uplink to the LAN. */
  readonly nodeIP: string;
  readonly nodeNetworkNamespace: string;
  /** The network outside the node: one namespace on the other end of the node's uplink. */
  readonly lanNetworkNamespace: string;
  readonly clusterCIDR: string;
  readonly serviceCIDR: string;
  /** The kubelet's `kubepods` cgroup in the memory hierarchy (cgroup v1). */
  readonly podsMemoryCgroup: string;
  readonly images: {
    readonly pause: string;
    readonly workload: string;
    readonly controller: string;
  };
}

/** A kubectl started by {@link LocalCluster.spawnKubectl}. */
export interface KubectlProcess {
  /** Settles when kubectl exits by itself. */
  readonly done: Promise<KubectlResult>;
  /** Ends kubectl (SIGTERM) and returns what it printed. */
  stop(): Promise<KubectlResult>;
}

/** A running local cluster. */
export interface LocalCluster extends ApiEndpoint {
  readonly kubeconfigPath: string;
  readonly facts: LocalClusterFacts;
  /** Whether this process brought the cluster up (and `stop()` will bring it down). */
  readonly startedHere: boolean;
  /** Runs the kubectl of the cluster's release with the admin kubeconfig. */
  kubectl(args: readonly string[], options?: KubectlOptions): Promise<KubectlResult>;
  /**
   * Starts the same kubectl without waiting for it, for commands that run until they end or are
   * stopped (`--watch`, `logs --follow`); its output is kept.
   */
  spawnKubectl(args: readonly string[]): KubectlProcess;
  /** Runs a program in the node's network namespace (`ip netns exec`), e.g. nft, ip, curl. */
  readonly node: CommandRunner;
  /**
   * Runs a program as the node's own programs run (`cluster.sh exec`: its network and mount
   * namespaces), e.g. to see its /run, where hostPath volumes of its pods live.
   */
  readonly onNode: CommandRunner;
  /** Runs a program in the LAN's network namespace: traffic from outside the node. */
  readonly lan: CommandRunner;
  /**
   * Lets the node's containerd pull from a registry on the machine's loopback, `127.0.0.1:PORT`
   * (`cluster.sh registry add`), until the returned function is called (`registry remove`).
   */
  pullFrom(registryAddress: string): Promise<() => Promise<void>>;
  /** Restarts one component (`cluster.sh restart`), e.g. `kube-proxy`. */
  restart(component: string): Promise<void>;
  /** Brings the cluster down if this process brought it up. Idempotent. */
  stop(): Promise<void>;
}

/** Clusters this process brought up and has not brought down yet. */
let upHere = false;
let exitHookInstalled = false;

/**
 * Decides whether a suite that needs the local cluster runs: root, cgroup v1 and the node's
 * binaries (`scripts/envtest-build.sh --node`, built here under `CI=true`). Under `CI=true` a
 * missing prerequisite throws; elsewhere the suite is skipped with a loud warning naming it.
 * Returns the binaries' directory, or undefined to skip.
 */
export async function localClusterEnabled(suite: string): Promise<string | undefined> {
  const missing =
    process.getuid?.() !== 0
      ? "needs root (network namespaces, cgroups, mounts)"
      : !(await hasCgroupV1())
        ? "needs cgroup v1 hierarchies, and this machine has none mounted"
        : undefined;
  if (missing !== undefined) {
    if (process.env.CI === "true") {
      throw new LocalClusterError(`${suite} cannot run and CI=true forbids skipping: ${missing}`);
    }
    console.warn(`\n!!! SKIPPING ${suite}: ${missing} !!!\n`);
    return undefined;
  }
  return builtBinaryGate(
    suite,
    (build) =>
      runBuildScript(
        BUILD_SCRIPT,
        { build, args: ["--node"] },
        (m) => new EnvtestUnavailableError(m),
      ),
    "no kubelet, kube-controller-manager or kube-scheduler (run scripts/envtest-build.sh --node)",
    (message) => new EnvtestUnavailableError(message),
  );
}

async function hasCgroupV1(): Promise<boolean> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  return mounts.split("\n").some((line) => line.split(" ")[2] === "cgroup");
}

/** Runs `cluster.sh` with `args`; rejects with its output's tail on a non-zero exit. */
async function clusterScript(args: readonly string[]): Promise<string> {
  const result = await execa("bash", [CLUSTER_SCRIPT, ...args], { reject: false, stdin: "ignore" });
  if (result.exitCode !== 0) {
    const tail = `${result.stdout}\n${result.stderr}`.trim().split("\n").slice(-40).join("\n");
    throw new LocalClusterError(`cluster.sh ${args.join(" ")} exited ${result.exitCode}:\n${tail}`);
  }
  return result.stdout;
}

/**
 * Brings the cluster up (`cluster.sh up`, minutes when images or binaries must be built) and
 * returns it.
 *
 * @throws LocalClusterError when `cluster.sh up` fails.
 */
export async function startLocalCluster(options: { assetsDir: string }): Promise<LocalCluster> {
  const before = await execa("bash", [CLUSTER_SCRIPT, "status"], {
    reject: false,
    stdin: "ignore",
  });
  const startedHere = before.exitCode !== 0;
  if (startedHere) {
    upHere = true;
    installExitHook();
  }
  const kubeconfigPath = (await clusterScript(["up"])).trim().split("\n").at(-1) ?? "";
  if (!existsSync(kubeconfigPath)) {
    throw new LocalClusterError(`cluster.sh up printed no kubeconfig path: ${kubeconfigPath}`);
  }
  const kubeconfig = JSON.parse(readFileSync(kubeconfigPath, "utf8")) as {
    clusters: { cluster: { server: string; "certificate-authority": string } }[];
    users: { user: { token: string } }[];
  };
  const facts = JSON.parse(
    readFileSync(join(dirname(kubeconfigPath), "cluster.json"), "utf8"),
  ) as LocalClusterFacts;
  const server = kubeconfig.clusters[0]?.cluster;
  const token = kubeconfig.users[0]?.user.token;
  if (!server || !token) throw new LocalClusterError(`unexpected kubeconfig ${kubeconfigPath}`);

  const kubectlBinary = join(options.assetsDir, "kubectl");
  const kubeCacheDir = join(dirname(kubeconfigPath), "kube-cache");
  let stopped = false;
  return {
    kubeconfigPath,
    facts,
    startedHere,
    serverUrl: server.server,
    caFile: server["certificate-authority"],
    adminToken: token,
    kubectl: kubectlWith(kubectlBinary, kubeconfigPath, kubeCacheDir),
    spawnKubectl(args) {
      const child = execa(kubectlBinary, [`--kubeconfig=${kubeconfigPath}`, ...args], {
        reject: false,
        stdin: "ignore",
        env: { KUBECACHEDIR: kubeCacheDir },
      });
      const done = child.then((result) => ({
        stdout: result.stdout,
        stderr: result.stderr,
        exitCode: result.exitCode ?? -1,
      }));
      return {
        done,
        stop() {
          child.kill();
          return done;
        },
      };
    },
    node: runnerIn(facts.nodeNetworkNamespace),
    onNode: (file, args, runOptions) =>
      runTool("bash", [CLUSTER_SCRIPT, "exec", file, ...args], runOptions),
    lan: runnerIn(facts.lanNetworkNamespace),
    async pullFrom(registryAddress) {
      await clusterScript(["registry", "add", registryAddress]);
      let removed = false;
      return async () => {
        if (removed) return;
        removed = true;
        await clusterScript(["registry", "remove", registryAddress]);
      };
    },
    async restart(component) {
      await clusterScript(["restart", component]);
    },
    async stop() {
      if (stopped || !startedHere) return;
      stopped = true;
      await clusterScript(["down"]);
      upHere = false;
    },
  };
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    if (upHere) spawnSync("bash", [CLUSTER_SCRIPT, "down"], { stdio: "ignore" });
  });
}

/** Where the IPVS stand-in sends a cluster IP's port: one endpoint pod, on the same port. */
export interface VirtualServer {
  readonly clusterIP: string;
  readonly port: number;
  /** The endpoint pod's IP. Only the stand-in may connect to it on `port` (see below). */
  readonly endpoint: string;
}

const EMULATION_TABLE = "ipvs-emulation";

/**
 * Stands in for IPVS's virtual server of a cluster IP on the node, for a Service that kube-proxy
 * ignores (label `service.kubernetes.io/service-proxy-name`): TCP to `clusterIP:port` goes to
 * `endpoint:port`, and the endpoint's replies come back from `clusterIP:port`.
 *
 * IPVS translates at the local-in and local-out hooks, before the filter hook. Plain routing to
 * the endpoint (the cluster IP local in the endpoint's namespace) cannot stand in for it beside
 * kube-proxy in nftables mode: kube-proxy drops new connections to a cluster IP of its Service
 * CIDR that it does not serve ("Drop traffic to unallocated ClusterIPs", filter forward and
 * output), and a second DNAT would never run (the first DNAT of a connection ends the nat chains
 * of its hook). So the stand-in rewrites addresses without conntrack's NAT, in a table of its own:
 * the destination after every DNAT at prerouting (pods) and in a route chain at output (the
 * host, re-routed), the source of replies before conntrack sees them, so that conntrack's own
 * translations (ours, kube-proxy's masquerade) find their connection. Replies are told by source
 * alone: nothing but the stand-in may reach `endpoint:port` (no kubelet probe on that port).
 */
export async function emulateIpvsVirtualServer(
  node: CommandRunner,
  server: VirtualServer,
): Promise<{ remove(): Promise<void> }> {
  const { clusterIP, port, endpoint } = server;
  // Numeric priorities: nft 1.0.6 rejects symbolic ones at the output hook. dstnat is -100,
  // conntrack -200.
  const document = `
table ip ${EMULATION_TABLE} {
  chain to-endpoint {
    type filter hook prerouting priority -90; policy accept;
    ip daddr ${clusterIP} tcp dport ${port} ip daddr set ${endpoint}
  }
  chain to-endpoint-from-host {
    type route hook output priority -90; policy accept;
    ip daddr ${clusterIP} tcp dport ${port} ip daddr set ${endpoint}
  }
  chain from-endpoint {
    type filter hook prerouting priority -310; policy accept;
    ip saddr ${endpoint} tcp sport ${port} ip saddr set ${clusterIP}
  }
}
`;
  const remove = async () => {
    await node("nft", ["delete", "table", "ip", EMULATION_TABLE]);
  };
  await remove();
  const applied = await node("nft", ["-f", "-"], { input: document });
  if (applied.exitCode !== 0) throw new Error(`nft: ${applied.stderr.trim()}`);
  return { remove };
}
