/**
 * A real kube-proxy inside a node network namespace, against a test API server, in its nftables or
 * iptables mode. IPVS mode needs the `ip_vs` kernel module, which test machines often lack.
 *
 * The binary is the kube-proxy that `scripts/envtest-build.sh` builds from the same
 * `k8s.io/kubernetes` release as the test API server. kube-proxy runs as root with the node
 * namespace as its host network: it programs that namespace's nftables or iptables rules, serves
 * `/proxyMode` and `/metrics` on the namespace's 127.0.0.1, and reaches the API server through
 * whatever the kubeconfig names (e.g. a {@link bridgeIntoNamespace} on 127.0.0.1).
 *
 * @example
 * ```ts
 * const kubeProxy = await startKubeProxy({
 *   namespace: topology.namespaces.node,
 *   mode: "nftables",
 *   kubeconfig,                    // reachable from inside the namespace
 *   nodeName: "worker-1",          // a Node whose status has InternalIP addresses
 *   clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"],
 * });
 * const before = await kubeProxyRules(topology.runner("node"), "nftables");
 * await kubeProxy.restart();
 * await kubeProxy.stop();
 * await cleanupKubeProxy(topology.namespaces.node, "nftables");
 * ```
 */
import { join } from "node:path";
import type { CommandResult, CommandRunner } from "@ipvs-node-controller/backend";
import { execa, type ResultPromise } from "execa";
import { locateEnvtestAssets } from "./envtest.js";
import { eventually } from "./eventually.js";
import { httpGet } from "./http.js";
import { runnerIn } from "./runner.js";
import { iptablesSaveLines, nftTableLines } from "./snapshot.js";

/** The kube-proxy modes that run without kernel modules beyond nftables / iptables. */
export type KubeProxyMode = "nftables" | "iptables";

/** Both modes, for `describe.each`. */
export const KUBE_PROXY_MODES: readonly KubeProxyMode[] = ["nftables", "iptables"];

/** An IP family as kube-proxy names it in its metrics. */
export type KubeProxyFamily = "IPv4" | "IPv6";

/** Options of {@link startKubeProxy}. */
export interface KubeProxyOptions {
  /** Network namespace that kube-proxy treats as its node's host network. */
  readonly namespace: string;
  readonly mode: KubeProxyMode;
  /** Kubeconfig whose server is reachable from inside the namespace. */
  readonly kubeconfig: string;
  /**
   * `--hostname-override`: a Node object whose `status.addresses` has an InternalIP of each family
   * kube-proxy should proxy (it waits for them at start).
   */
  readonly nodeName: string;
  /** `--cluster-cidr`: one CIDR per family; traffic from them counts as pod traffic. */
  readonly clusterCIDRs: readonly string[];
  /** Families whose first rule sync {@link startKubeProxy} waits for. Default both. */
  readonly families?: readonly KubeProxyFamily[];
  /** Port of `/metrics` and `/proxyMode` on the namespace's 127.0.0.1. Default 10249. */
  readonly metricsPort?: number;
  /** Port of `/healthz` on the namespace's 127.0.0.1. Default 10256. */
  readonly healthzPort?: number;
  /** The kube-proxy binary; default the one next to the test API server's binaries. */
  readonly binary?: string;
  /** More flags, appended last. */
  readonly extraArgs?: readonly string[];
  /** How long to wait for `/proxyMode` and the first sync of every family. Default 60 s. */
  readonly startTimeoutMs?: number;
}

/** A running kube-proxy. */
export interface KubeProxy {
  readonly mode: KubeProxyMode;
  /** Everything kube-proxy logged, over all restarts (each start begins with a marker line). */
  log(): string;
  /** The text of its `/metrics`. */
  metrics(): Promise<string>;
  /**
   * Resolves once kube-proxy has written every change it received to the kernel: for each family,
   * its last successful sync is not older than the last change it queued. Its rules are then
   * what the API server's Services and EndpointSlices say.
   */
  waitUntilSynced(timeoutMs?: number): Promise<void>;
  /**
   * Stops kube-proxy and starts it again with the same flags, as a DaemonSet rollout does; resolves
   * once the new process serves `/proxyMode` and has synced every family. Its rules stay in the
   * kernel meanwhile, as kube-proxy never removes them on exit.
   */
  restart(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); leaves its rules in the kernel. Idempotent. */
  stop(): Promise<void>;
}

/** Thrown when kube-proxy exits during start-up or does not become ready; carries its log's tail. */
export class KubeProxyStartError extends Error {
  override readonly name = "KubeProxyStartError";
}

const STOP_GRACE_MS = 5_000;
const LOG_TAIL_LINES = 40;

/** kube-proxy processes still running, killed if the test process exits without stop(). */
const livePids = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const pid of livePids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  });
}

/** The kube-proxy built by `scripts/envtest-build.sh` (or found in `ENVTEST_ASSETS`). */
export async function kubeProxyBinary(): Promise<string> {
  const dir = await locateEnvtestAssets();
  if (!dir) throw new Error("no envtest binaries: run scripts/envtest-build.sh");
  return join(dir, "kube-proxy");
}

/**
 * Starts kube-proxy in `options.namespace` and resolves once `/proxyMode` answers the requested
 * mode and every family has completed a rule sync.
 *
 * Flags: `--conntrack-max-per-core=0` (the conntrack table size is not per namespace; kube-proxy
 * must not try to change it), `--oom-score-adj` is left at its default and fails harmlessly
 * without the privilege to lower it.
 *
 * @throws KubeProxyStartError when it exits or is not ready in time.
 */
export async function startKubeProxy(options: KubeProxyOptions): Promise<KubeProxy> {
  const binary = options.binary ?? (await kubeProxyBinary());
  const metricsPort = options.metricsPort ?? 10249;
  const healthzPort = options.healthzPort ?? 10256;
  const families = options.families ?? ["IPv4", "IPv6"];
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  const runner = runnerIn(options.namespace);
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const args = [
    `--kubeconfig=${options.kubeconfig}`,
    `--proxy-mode=${options.mode}`,
    `--hostname-override=${options.nodeName}`,
    `--cluster-cidr=${options.clusterCIDRs.join(",")}`,
    "--conntrack-max-per-core=0",
    `--metrics-bind-address=127.0.0.1:${metricsPort}`,
    `--healthz-bind-address=127.0.0.1:${healthzPort}`,
    // Level 2 logs each sync with its family and duration: enough to read a failure.
    "--v=2",
    ...(options.extraArgs ?? []),
  ];

  let log = "";
  let child: ResultPromise | undefined;
  let starts = 0;

  const metrics = async (): Promise<string> => {
    const answer = await httpGet(runner, `${metricsUrl}/metrics`);
    if (answer.status !== 200) throw new Error(`kube-proxy /metrics: ${answer.status}`);
    return answer.body;
  };

  const isSynced = async (): Promise<boolean> => {
    const text = await metrics().catch(() => "");
    return families.every((family) => {
      const synced = gauge(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", family);
      const queued = gauge(
        text,
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        family,
      );
      return synced !== undefined && synced > 0 && (queued === undefined || synced >= queued);
    });
  };

  /** Why start-up cannot succeed any more, if kube-proxy has exited. */
  const exitReason = (subprocess: ResultPromise): string | undefined =>
    subprocess.exitCode !== null || subprocess.signalCode !== null
      ? `kube-proxy exited during start-up (exit ${subprocess.exitCode ?? subprocess.signalCode})`
      : undefined;

  const start = async (): Promise<void> => {
    starts += 1;
    log += `--- kube-proxy start ${starts}: ${args.join(" ")}\n`;
    const subprocess = execa("ip", ["netns", "exec", options.namespace, binary, ...args], {
      reject: false,
      buffer: false,
      stdin: "ignore",
    });
    child = subprocess;
    const append = (chunk: Buffer) => {
      log += chunk.toString();
    };
    subprocess.stdout?.on("data", append);
    subprocess.stderr?.on("data", append);
    // `ip netns exec` execs the program, so this is kube-proxy's own pid.
    const pid = subprocess.pid;
    if (pid !== undefined) {
      livePids.add(pid);
      installExitHook();
      void subprocess.finally(() => livePids.delete(pid));
    }
    try {
      await eventually(
        `kube-proxy serves /proxyMode = ${options.mode}`,
        async () => {
          if (exitReason(subprocess)) return true;
          const answer = await httpGet(runner, `${metricsUrl}/proxyMode`);
          return answer.status === 200 && answer.body.trim() === options.mode;
        },
        startTimeoutMs,
        200,
      );
      await eventually(
        `kube-proxy has synced ${families.join(" and ")}`,
        async () => exitReason(subprocess) !== undefined || (await isSynced()),
        startTimeoutMs,
        200,
      );
    } catch (error) {
      // Not ready in time: do not leave it running.
      await stopProcess(subprocess);
      throw new KubeProxyStartError(`${(error as Error).message}:\n${tail(log)}`);
    }
    const exited = exitReason(subprocess);
    if (exited) throw new KubeProxyStartError(`${exited}:\n${tail(log)}`);
  };

  const stop = async (): Promise<void> => {
    const current = child;
    child = undefined;
    if (current) await stopProcess(current);
  };

  await start();
  return {
    mode: options.mode,
    log: () => log,
    metrics,
    async waitUntilSynced(timeoutMs = 30_000) {
      await eventually("kube-proxy has synced every change", isSynced, timeoutMs, 100);
    },
    async restart() {
      await stop();
      await start();
    },
    stop,
  };
}

/** Sends SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
async function stopProcess(subprocess: ResultPromise): Promise<void> {
  if (subprocess.exitCode !== null || subprocess.signalCode !== null) return;
  subprocess.kill("SIGTERM");
  const timer = setTimeout(() => subprocess.kill("SIGKILL"), STOP_GRACE_MS);
  try {
    await subprocess;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `kube-proxy --cleanup --proxy-mode MODE` in `namespace`: removes the rules of every mode
 * kube-proxy knows (nftables tables, iptables chains, IPVS state when the module exists) and exits.
 */
export async function cleanupKubeProxy(
  namespace: string,
  mode: KubeProxyMode,
  binary?: string,
): Promise<CommandResult> {
  return runnerIn(namespace)(binary ?? (await kubeProxyBinary()), [
    "--cleanup",
    `--proxy-mode=${mode}`,
  ]);
}

/**
 * kube-proxy's rules as a list of comparable lines, read with the tools kube-proxy itself uses.
 *
 * - nftables mode: the tables `ip kube-proxy` and `ip6 kube-proxy` ({@link nftTableLines}).
 * - iptables mode: `iptables-save` and `ip6tables-save` of every table ({@link iptablesSaveLines}).
 *   This is the whole iptables state, so rules of other programs are in it too: filter them out
 *   by name to compare kube-proxy's own.
 *
 * An empty list means kube-proxy has no rules there.
 */
export async function kubeProxyRules(
  runner: CommandRunner,
  mode: KubeProxyMode,
): Promise<string[]> {
  if (mode === "iptables") return iptablesSaveLines(runner);
  return [
    ...(await nftTableLines(runner, "ip", "kube-proxy")),
    ...(await nftTableLines(runner, "ip6", "kube-proxy")),
  ];
}

/** The value of a gauge with label `ip_family="FAMILY"` in Prometheus text, if present. */
function gauge(text: string, name: string, family: KubeProxyFamily): number | undefined {
  const prefix = `${name}{ip_family="${family}"} `;
  const line = text.split("\n").find((candidate) => candidate.startsWith(prefix));
  return line === undefined ? undefined : Number(line.slice(prefix.length));
}

function tail(text: string): string {
  return text.trim().split("\n").slice(-LOG_TAIL_LINES).join("\n");
}
