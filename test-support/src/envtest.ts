/**
 * A real kube-apiserver backed by a real etcd, for tests ("envtest").
 *
 * Both run as child processes on random free ports with their state in a temporary directory.
 * The binaries come from `scripts/envtest-build.sh` (or a directory named by `ENVTEST_ASSETS`),
 * which also holds the kube-proxy of the same release.
 *
 * @example
 * ```ts
 * const api = await startTestApiServer();
 * try {
 *   await api.kubectl(["create", "namespace", "demo"]);
 *   const { stdout } = await api.kubectl(["get", "namespace", "demo", "-o", "name"]);
 * } finally {
 *   await api.stop();
 * }
 * ```
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { createServer, isIPv6 } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { builtBinaryGate, repositoryScript, runBuildScript } from "./built-binary.js";

/**
 * The binaries of the API-server tests, all in one directory: what a test API server needs, and
 * the kube-proxy of the same Kubernetes release that runs beside the controller.
 */
export const ENVTEST_BINARIES = ["kube-apiserver", "etcd", "kubectl", "kube-proxy"] as const;

const BUILD_SCRIPT = repositoryScript("envtest-build.sh");

/** Thrown when the envtest binaries cannot be found or built. */
export class EnvtestUnavailableError extends Error {
  override readonly name = "EnvtestUnavailableError";
}

/** Thrown when etcd or kube-apiserver does not come up; the message carries the log's tail. */
export class EnvtestStartError extends Error {
  override readonly name = "EnvtestStartError";
}

/**
 * Finds the directory holding kube-apiserver, etcd, kubectl and kube-proxy.
 *
 * Order: `ENVTEST_ASSETS` (checked, never built), then the version cache of
 * `scripts/envtest-build.sh`. With `build: false` nothing is compiled and `undefined` means
 * "not built yet"; with `build: true` (the default) a missing cache entry is built, which takes
 * many minutes the first time.
 *
 * @throws EnvtestUnavailableError when `ENVTEST_ASSETS` is incomplete or the build fails.
 */
export async function locateEnvtestAssets(
  options: { build?: boolean } = {},
): Promise<string | undefined> {
  const build = options.build ?? true;
  const fromEnv = process.env.ENVTEST_ASSETS;
  if (fromEnv) {
    const missing = ENVTEST_BINARIES.filter((bin) => !existsSync(join(fromEnv, bin)));
    if (missing.length > 0) {
      throw new EnvtestUnavailableError(
        `ENVTEST_ASSETS=${fromEnv} lacks ${missing.join(", ")}; unset it to use scripts/envtest-build.sh`,
      );
    }
    return fromEnv;
  }
  return runBuildScript(BUILD_SCRIPT, { build }, (message) => new EnvtestUnavailableError(message));
}

/** Options of {@link startTestApiServer}. */
export interface TestApiServerOptions {
  /**
   * Address kube-apiserver binds to and advertises (it is also in the serving certificate).
   * Use an address of a veth when a controller inside a network namespace must reach it.
   * Default `127.0.0.1`. etcd always stays on 127.0.0.1.
   */
  listenAddress?: string;
  /** `--service-cluster-ip-range`; default dual-stack `10.96.0.0/16,fd00:10:96::/112`. */
  serviceClusterIpRange?: string;
  /** Directory with the binaries; default {@link locateEnvtestAssets}. */
  assetsDir?: string;
  /** How long to wait for etcd and for `/readyz`; default 120 s (2 cores, cold start). */
  startTimeoutMs?: number;
  /** More kube-apiserver flags, e.g. `--etcd-compaction-interval=1s` to provoke 410 Gone. */
  extraApiServerArgs?: readonly string[];
}

/** Outcome of a {@link TestApiServer.kubectl} call. */
export interface KubectlResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Options of {@link TestApiServer.kubectl}. */
export interface KubectlOptions {
  /** Sent to kubectl's stdin (for `-f -`). */
  input?: string;
  /** Kubeconfig to use instead of the admin one, e.g. from {@link TestApiServer.writeKubeconfig}. */
  kubeconfig?: string;
  /** When false, a non-zero exit resolves instead of throwing. Default true. */
  reject?: boolean;
}

/** A running kube-apiserver + etcd. */
export interface TestApiServer {
  /** Admin kubeconfig (static token in group system:masters). */
  readonly kubeconfigPath: string;
  /** `https://<listenAddress>:<port>`. */
  readonly serverUrl: string;
  /** PEM file that verifies the API server's serving certificate. */
  readonly caFile: string;
  /** Bearer token of the admin identity. */
  readonly adminToken: string;
  /** Directory of the binaries in use. */
  readonly assetsDir: string;
  /** Runs the envtest kubectl with the admin kubeconfig (or `options.kubeconfig`). */
  kubectl(args: readonly string[], options?: KubectlOptions): Promise<KubectlResult>;
  /** A real ServiceAccount token from the TokenRequest API (`kubectl create token`). */
  serviceAccountToken(namespace: string, name: string): Promise<string>;
  /** Writes a kubeconfig that authenticates with `token` and returns its path. */
  writeKubeconfig(token: string): Promise<string>;
  /**
   * Stops kube-apiserver and starts it again on the same address and port with the same etcd,
   * so clients see a real outage. Resolves once `/readyz` answers again.
   */
  restartApiServer(): Promise<void>;
  /**
   * Stops kube-apiserver and leaves it stopped (etcd keeps running): clients see connection
   * refused, as during a control-plane outage, until {@link TestApiServer.startApiServer}.
   */
  stopApiServer(): Promise<void>;
  /** Starts a stopped kube-apiserver on the same address and port; resolves once `/readyz` answers. */
  startApiServer(): Promise<void>;
  /** Kills both processes and removes the temporary directory. Safe to call more than once. */
  stop(): Promise<void>;
}

const DEFAULT_SERVICE_RANGE = "10.96.0.0/16,fd00:10:96::/112";
const STOP_GRACE_MS = 5_000;

/** Servers still running, killed synchronously if the test process exits without stop(). */
const liveServers = new Set<{ pids: () => number[]; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const server of liveServers) {
      for (const pid of server.pids()) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
      rmSync(server.dir, { recursive: true, force: true });
    }
  });
}

/**
 * Starts etcd and kube-apiserver and waits until `/readyz` answers.
 *
 * @throws EnvtestUnavailableError when the binaries are missing.
 * @throws EnvtestStartError when a process exits or does not become ready in time.
 */
export async function startTestApiServer(
  options: TestApiServerOptions = {},
): Promise<TestApiServer> {
  const listenAddress = options.listenAddress ?? "127.0.0.1";
  const timeoutMs = options.startTimeoutMs ?? 120_000;
  const assetsDir = options.assetsDir ?? (await locateEnvtestAssets());
  if (!assetsDir) throw new EnvtestUnavailableError("envtest binaries not found");
  const bin = (name: (typeof ENVTEST_BINARIES)[number]) => join(assetsDir, name);

  const dir = mkdtempSync(join(tmpdir(), `envtest-${process.pid}-`));
  let etcd: ResultPromise | undefined;
  let apiServer: ResultPromise | undefined;
  const registration = {
    dir,
    pids: () => [apiServer?.pid, etcd?.pid].filter((pid): pid is number => pid !== undefined),
  };
  liveServers.add(registration);
  installExitHook();

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await terminate(apiServer);
    await terminate(etcd);
    liveServers.delete(registration);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const certDir = join(dir, "certs");
    await mkdir(certDir);
    const saKey = join(dir, "service-account.key");
    await execa("openssl", ["genrsa", "-out", saKey, "2048"], { stdin: "ignore" });

    const adminToken = randomBytes(24).toString("hex");
    const tokenFile = join(dir, "tokens.csv");
    // Format: token,user,uid,"group1,group2".
    await writeFile(tokenFile, `${adminToken},envtest-admin,envtest-admin,"system:masters"\n`, {
      mode: 0o600,
    });

    const etcdClientPort = await freePort("127.0.0.1");
    const etcdPeerPort = await freePort("127.0.0.1");
    const etcdClientUrl = `http://127.0.0.1:${etcdClientPort}`;
    const etcdPeerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    const etcdLog = join(dir, "etcd.log");
    etcd = execa(
      bin("etcd"),
      [
        "--name=envtest",
        `--data-dir=${join(dir, "etcd-data")}`,
        `--listen-client-urls=${etcdClientUrl}`,
        `--advertise-client-urls=${etcdClientUrl}`,
        `--listen-peer-urls=${etcdPeerUrl}`,
        `--initial-advertise-peer-urls=${etcdPeerUrl}`,
        `--initial-cluster=envtest=${etcdPeerUrl}`,
        // Test data is thrown away: skip fsync, which dominates etcd's latency on small disks.
        "--unsafe-no-fsync",
        "--log-level=warn",
      ],
      {
        reject: false,
        stdin: "ignore",
        stdout: { file: etcdLog, append: true },
        stderr: { file: etcdLog, append: true },
      },
    );
    await waitUntil(
      "etcd",
      etcd,
      etcdLog,
      timeoutMs,
      async () => (await fetch(`${etcdClientUrl}/health`)).ok,
    );

    const port = await freePort(listenAddress);
    const host = isIPv6(listenAddress) ? `[${listenAddress}]` : listenAddress;
    const serverUrl = `https://${host}:${port}`;
    const caFile = join(certDir, "apiserver.crt");
    const apiServerLog = join(dir, "kube-apiserver.log");
    const apiServerArgs = [
      `--etcd-servers=${etcdClientUrl}`,
      `--bind-address=${listenAddress}`,
      `--advertise-address=${listenAddress}`,
      `--secure-port=${port}`,
      // Self-signed serving certificate (with its CA in the same file) for the advertise address,
      // 127.0.0.1 and localhost; generated on the first start and reused on a restart.
      `--cert-dir=${certDir}`,
      `--service-account-key-file=${saKey}`,
      `--service-account-signing-key-file=${saKey}`,
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      "--authorization-mode=Node,RBAC",
      `--token-auth-file=${tokenFile}`,
      `--service-cluster-ip-range=${options.serviceClusterIpRange ?? DEFAULT_SERVICE_RANGE}`,
      // The "kubernetes" Service's endpoints would have to be a non-loopback address; nothing
      // in the tests uses them.
      "--endpoint-reconciler-type=none",
      "--allow-privileged=true",
      "--profiling=false",
      ...(options.extraApiServerArgs ?? []),
    ];
    const startApiServer = async (): Promise<void> => {
      apiServer = execa(bin("kube-apiserver"), apiServerArgs, {
        reject: false,
        stdin: "ignore",
        stdout: { file: apiServerLog, append: true },
        stderr: { file: apiServerLog, append: true },
      });
      await waitUntil("kube-apiserver", apiServer, apiServerLog, timeoutMs, () =>
        isReady(serverUrl, caFile, adminToken),
      );
    };
    await startApiServer();

    const kubeCacheDir = join(dir, "kube-cache");
    const writeConfig = async (path: string, token: string): Promise<string> => {
      // JSON is valid YAML, and JSON.stringify cannot be broken out of by odd token bytes.
      const config = {
        apiVersion: "v1",
        kind: "Config",
        clusters: [
          { name: "envtest", cluster: { server: serverUrl, "certificate-authority": caFile } },
        ],
        users: [{ name: "envtest-user", user: { token } }],
        contexts: [{ name: "envtest", context: { cluster: "envtest", user: "envtest-user" } }],
        "current-context": "envtest",
      };
      await writeFile(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
      return path;
    };
    const kubeconfigPath = await writeConfig(join(dir, "admin.kubeconfig"), adminToken);
    let kubeconfigCount = 0;

    const kubectl = kubectlWith(bin("kubectl"), kubeconfigPath, kubeCacheDir);

    return {
      kubeconfigPath,
      serverUrl,
      caFile,
      adminToken,
      assetsDir,
      kubectl,
      async serviceAccountToken(namespace, name) {
        const { stdout } = await kubectl(["create", "token", name, "--namespace", namespace]);
        return stdout.trim();
      },
      async writeKubeconfig(token) {
        kubeconfigCount += 1;
        return writeConfig(join(dir, `user-${kubeconfigCount}.kubeconfig`), token);
      },
      async restartApiServer() {
        if (stopped) throw new Error("restartApiServer() after stop()");
        await terminate(apiServer);
        await startApiServer();
      },
      async stopApiServer() {
        if (stopped) throw new Error("stopApiServer() after stop()");
        await terminate(apiServer);
      },
      async startApiServer() {
        if (stopped) throw new Error("startApiServer() after stop()");
        if (
          apiServer !== undefined &&
          apiServer.exitCode === null &&
          apiServer.signalCode === null
        ) {
          throw new Error("startApiServer(): kube-apiserver is running");
        }
        await startApiServer();
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * A kubectl call with `kubeconfig` (or `options.kubeconfig`) and a discovery cache in `cacheDir`
 * (never the user's): throws on a non-zero exit unless `options.reject` is false.
 */
export function kubectlWith(
  binary: string,
  kubeconfig: string,
  cacheDir: string,
): (args: readonly string[], options?: KubectlOptions) => Promise<KubectlResult> {
  return async (args, options = {}) => {
    const result = await execa(
      binary,
      [`--kubeconfig=${options.kubeconfig ?? kubeconfig}`, ...args],
      {
        reject: false,
        // Callers compare output byte for byte (rendered manifests).
        stripFinalNewline: false,
        env: { KUBECACHEDIR: cacheDir },
        ...(options.input === undefined ? { stdin: "ignore" as const } : { input: options.input }),
      },
    );
    const outcome = {
      stdout: result.stdout,
      stderr: result.stderr,
      exitCode: result.exitCode ?? -1,
    };
    if (outcome.exitCode !== 0 && options.reject !== false) {
      throw new Error(
        `kubectl ${args.join(" ")} failed (exit ${outcome.exitCode}): ${result.stderr}`,
      );
    }
    return outcome;
  };
}

/** Stops a child process: SIGTERM, then SIGKILL after a grace period; resolves once it is gone. */
export async function terminate(child: ResultPromise | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
  try {
    await child;
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` until it returns true; fails early with the log's tail if the process exits. */
async function waitUntil(
  what: string,
  child: ResultPromise,
  logFile: string,
  timeoutMs: number,
  probe: () => Promise<boolean>,
): Promise<void> {
  let exited = false;
  void child.then(() => {
    exited = true;
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) {
      throw new EnvtestStartError(
        `${what} exited during start-up (exit ${child.exitCode}): ${await logTail(logFile)}`,
      );
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new EnvtestStartError(
        `${what} not ready after ${timeoutMs} ms: ${await logTail(logFile)}`,
      );
    }
    await new Promise((done) => setTimeout(done, 200));
  }
}

/** GET /readyz over TLS verified against the self-signed certificate (once it exists). */
async function isReady(serverUrl: string, caFile: string, token: string): Promise<boolean> {
  if (!existsSync(caFile)) return false;
  const ca = readFileSync(caFile);
  return new Promise((done) => {
    const req = request(
      `${serverUrl}/readyz`,
      { ca, headers: { authorization: `Bearer ${token}` }, timeout: 5_000 },
      (res) => {
        res.resume();
        done(res.statusCode === 200);
      },
    );
    req.on("error", () => done(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/** A port that was free a moment ago on `host` (the kernel picks it). */
export async function freePort(host: string): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") done(address.port);
        else fail(new Error(`could not pick a free port on ${host}`));
      });
    });
  });
}

async function logTail(file: string): Promise<string> {
  try {
    return tail(await readFile(file, "utf8"), 30);
  } catch {
    return "(no log)";
  }
}

function tail(text: string, lines: number): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

/**
 * Decides whether a suite that needs a real API server runs. Under `CI=true` the binaries must be
 * there (they are built if need be, and a failure throws); elsewhere a missing build skips the
 * suite with a loud warning. Returns the binaries' directory, or undefined to skip.
 *
 * @example
 * const assets = await envtestTestsEnabled("controller e2e tests");
 * describe.skipIf(!assets)("against a real API server", () => { ... });
 */
export function envtestTestsEnabled(suite: string): Promise<string | undefined> {
  return builtBinaryGate(
    suite,
    (build) => locateEnvtestAssets({ build }),
    "no envtest binaries (run scripts/envtest-build.sh or set ENVTEST_ASSETS)",
    (message) => new EnvtestUnavailableError(message),
  );
}
