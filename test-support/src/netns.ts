/**
 * A throwaway three-host network built from Linux network namespaces, reproducing the IPVS
 * `externalTrafficPolicy: Local` hole on the real kernel:
 *
 * ```text
 *   pod (10.244.1.2, fd00:10:244:1::2)                 remote (198.51.100.2, 2001:db8:100::2)
 *      eth0                                                eth0
 *       |  pod CIDR 10.244.1.0/24, fd00:10:244:1::/64        |  outside the pod CIDR
 *   veth-pod (10.244.1.1, fd00:10:244:1::1)   eth-remote (198.51.100.1, 2001:db8:100::1)
 *                         \                  /
 *                          node  (lo: LB IPs + cluster IPs, like kube-ipvs0)
 * ```
 *
 * The node binds LoadBalancer IPs and cluster IPs on `lo`, as kube-proxy binds them on its dummy
 * `kube-ipvs0`. Listeners on cluster IP:port stand in for IPVS virtual servers; nothing listens on
 * the LB IPs, so without a fix a connection to an LB IP is refused: that is the bug.
 *
 * Everything needs root (`ip netns add`). Names are unique per process and per call, so test files
 * running in parallel never collide. {@link Topology.destroy} is idempotent and safe in `afterAll`;
 * namespaces still alive when the process exits are removed by an exit hook.
 */
import { spawnSync } from "node:child_process";
import type { CommandRunner } from "@ipvs-node-controller/backend";
import { execa, type ResultPromise } from "execa";
import { hostRunner, runnerIn } from "./runner.js";

/** The three hosts of the topology. */
export type Host = "node" | "pod" | "remote";

/** Transport protocols the listeners and probes speak. */
export type ProbeProtocol = "tcp" | "udp";

/** The fixed address plan. Only ever configured inside the throwaway namespaces. */
export const ADDRESS_PLAN = {
  podCIDR: { ipv4: "10.244.1.0/24", ipv6: "fd00:10:244:1::/64" },
  /** The node's end of the pod link: the pod's default gateway. */
  nodePodSide: { ipv4: "10.244.1.1", ipv6: "fd00:10:244:1::1" },
  pod: { ipv4: "10.244.1.2", ipv6: "fd00:10:244:1::2" },
  /** The node's end of the remote link: the remote host's default gateway. */
  nodeRemoteSide: { ipv4: "198.51.100.1", ipv6: "2001:db8:100::1" },
  remote: { ipv4: "198.51.100.2", ipv6: "2001:db8:100::2" },
  /** Interface names in the node namespace. */
  podInterface: "veth-pod",
  remoteInterface: "eth-remote",
} as const;

/** What a listener answers on one address. */
export interface ListenerSpec {
  readonly ip: string;
  readonly port: number;
  readonly protocol: ProbeProtocol;
  /** Sent back to every TCP connection / UDP datagram, e.g. the Service's name. */
  readonly reply: string;
  /** Append ` from <peer address>` to the reply: what the endpoint sees as its client. */
  readonly echoPeer?: boolean;
}

/** A running listener process; stop it early with {@link Listeners.stop} or let `destroy` do it. */
export interface Listeners {
  stop(): Promise<void>;
}

/** The outcome of one connection attempt. */
export type ProbeResult =
  | { readonly ok: true; readonly reply: string }
  | {
      readonly ok: false;
      /** `refused` (RST / ICMP port unreachable), `timeout`, `unreachable`, or another errno code. */
      readonly error: "refused" | "timeout" | "unreachable" | (string & {});
    };

/** Counts packets carrying a mark when they are delivered locally on the node. */
export interface MarkCounter {
  /** Packets seen so far with `meta mark & mark == mark` in the node's input hook. */
  read(): Promise<number>;
}

/** A live topology. */
export interface Topology {
  /** Namespace name of each host (unique per call). */
  readonly namespaces: Readonly<Record<Host, string>>;
  /** Runs a program inside `host`'s namespace; a `CommandRunner` for backends. */
  runner(host: Host): CommandRunner;
  /** Binds addresses on the node's `lo` (IPv4 as /32, IPv6 as /128 without DAD); duplicates once. */
  addNodeAddresses(ips: readonly string[]): Promise<void>;
  /**
   * Binds addresses on the remote host's `lo`, routes them there from the node and lets the node
   * forward between the pod and the remote host: addresses the node does not own, like LoadBalancer IPs under kube-proxy's iptables or nftables mode, which
   * are served by a load balancer elsewhere.
   */
  addRemoteAddresses(ips: readonly string[]): Promise<void>;
  /**
   * Binds addresses on the pod's `lo` and routes them there from the node: the pod serves them,
   * as an endpoint serves a Service's cluster IP once IPVS forwarded a connection to it.
   */
  addPodAddresses(ips: readonly string[]): Promise<void>;
  /** Starts one listener process in `host` (default `node`) and waits until every socket is bound. */
  listen(specs: readonly ListenerSpec[], host?: Host): Promise<Listeners>;
  /** Opens one connection from `from` and returns what came back. Default timeout 1500 ms. */
  connect(
    from: Host,
    ip: string,
    port: number,
    protocol: ProbeProtocol,
    options?: { readonly timeoutMs?: number },
  ): Promise<ProbeResult>;
  /**
   * Installs a separate probe table in the node namespace (not the product's table) counting packets
   * that carry `mark` (default kube-proxy's 0x4000) at the input hook, i.e. after NAT.
   */
  markCounter(mark?: number): Promise<MarkCounter>;
  /** Kills every process this topology started and deletes its namespaces. Idempotent. */
  destroy(): Promise<void>;
}

/** Whether namespace tests can run here, and if not, why. */
export type NetnsSupport = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** Checks for root, `ip` and `nft`. Never throws. */
export async function netnsSupport(): Promise<NetnsSupport> {
  const uid = process.getuid?.();
  if (uid !== 0) {
    return { ok: false, reason: `network namespace tests need root (running as uid ${uid})` };
  }
  for (const [program, args] of [
    ["ip", ["-V"]],
    ["nft", ["--version"]],
  ] as const) {
    try {
      const result = await hostRunner(program, args);
      if (result.exitCode !== 0) {
        return {
          ok: false,
          reason: `${program} ${args.join(" ")} failed: ${result.stderr.trim()}`,
        };
      }
    } catch {
      return { ok: false, reason: `${program} is not installed (not found on PATH)` };
    }
  }
  return { ok: true };
}

/**
 * Decides whether a kernel test suite runs. When namespaces are unavailable it warns loudly and
 * returns false, except with `CI=true`, where it throws: CI must never skip kernel tests silently.
 *
 * @example
 * const kernel = await kernelTestsEnabled("nft backend kernel tests");
 * describe.skipIf(!kernel)("nft backend on the kernel", () => { ... });
 */
export async function kernelTestsEnabled(suite: string): Promise<boolean> {
  const support = await netnsSupport();
  if (support.ok) return true;
  if (process.env.CI === "true") {
    throw new Error(`${suite} cannot run and CI=true forbids skipping: ${support.reason}`);
  }
  console.warn(`\n!!! SKIPPING ${suite}: ${support.reason} !!!\n`);
  return false;
}

let topologyCounter = 0;
const liveTopologies = new Set<{ namespaces: string[]; pids: Set<number> }>();
let exitHookInstalled = false;

/** Kills what live topologies started and deletes their namespaces. Synchronous by necessity. */
function destroyAllNow(): void {
  for (const topology of liveTopologies) {
    for (const pid of topology.pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    for (const namespace of topology.namespaces) {
      spawnSync("ip", ["netns", "del", namespace], { stdio: "ignore" });
    }
  }
  liveTopologies.clear();
}

/**
 * Last-resort cleanup when a test process ends without calling destroy(): on exit, and on the
 * signals a test runner or a user sends to stop it. A signal is raised again afterwards when
 * nobody else listens for it, so that it still ends the process.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", destroyAllNow);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      destroyAllNow();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

async function ip(args: readonly string[], input?: string): Promise<void> {
  const result = await hostRunner("ip", args, input === undefined ? undefined : { input });
  if (result.exitCode !== 0) {
    throw new Error(`ip ${args.join(" ")} failed: ${result.stderr.trim()}`);
  }
}

/** Runs `ip -batch -` inside a namespace: one process for many commands. */
async function ipBatch(namespace: string, commands: readonly string[]): Promise<void> {
  await ip(["-n", namespace, "-batch", "-"], `${commands.join("\n")}\n`);
}

/** The `ip -batch` line that binds one host address on `lo` (IPv6 without duplicate detection). */
function bindOnLoopback(address: string): string {
  return address.includes(":")
    ? `addr add ${address}/128 dev lo nodad`
    : `addr add ${address}/32 dev lo`;
}

// Small Node programs run inside a namespace. Plain CommonJS so that `node -e` runs them as is.
const LISTENER_PROGRAM = `
const net = require("node:net");
const dgram = require("node:dgram");
const specs = JSON.parse(process.argv[1]);
let pending = specs.length;
const bound = () => { if (--pending === 0) process.stdout.write("ready\\n"); };
const fail = (s, e) => { process.stderr.write(s.ip + " " + s.port + "/" + s.protocol + ": " + e.message + "\\n"); process.exit(1); };
for (const s of specs) {
  if (s.protocol === "tcp") {
    const server = net.createServer((socket) => {
      socket.on("error", () => {});
      socket.end(s.echoPeer ? s.reply + " from " + socket.remoteAddress : s.reply);
    });
    server.on("error", (e) => fail(s, e));
    server.listen({ host: s.ip, port: s.port }, bound);
  } else {
    const socket = dgram.createSocket(s.ip.includes(":") ? "udp6" : "udp4");
    socket.on("error", (e) => fail(s, e));
    socket.on("message", (_msg, peer) =>
      socket.send(s.echoPeer ? s.reply + " from " + peer.address : s.reply, peer.port, peer.address));
    socket.bind(s.port, s.ip, bound);
  }
}
`;

const PROBE_PROGRAM = `
const net = require("node:net");
const dgram = require("node:dgram");
const [ip, port, protocol, timeoutMs] = JSON.parse(process.argv[1]);
const done = (result) => { process.stdout.write(JSON.stringify(result)); process.exit(0); };
const classify = (e) =>
  e.code === "ECONNREFUSED" ? "refused"
  : e.code === "EHOSTUNREACH" || e.code === "ENETUNREACH" ? "unreachable"
  : e.code || e.message;
setTimeout(() => done({ ok: false, error: "timeout" }), timeoutMs);
if (protocol === "tcp") {
  const socket = net.connect({ host: ip, port });
  let reply = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk) => { reply += chunk; });
  socket.on("end", () => done({ ok: true, reply }));
  socket.on("error", (e) => done({ ok: false, error: classify(e) }));
} else {
  const socket = dgram.createSocket(ip.includes(":") ? "udp6" : "udp4");
  socket.on("error", (e) => done({ ok: false, error: classify(e) }));
  socket.on("message", (msg) => done({ ok: true, reply: msg.toString("utf8") }));
  // A connected socket receives ICMP port unreachable as ECONNREFUSED.
  socket.connect(port, ip, () => socket.send("probe"));
}
`;

/** Options of {@link createTopology}. */
export interface TopologyOptions {
  /** Start of the namespaces' names; default `inc`. */
  readonly prefix?: string;
  /**
   * A process whose network namespace becomes the node, e.g. a container's first process
   * (`docker inspect -f '{{.State.Pid}}'`), instead of a new namespace. It is given a name
   * (`ip netns attach`), so that runners and `ip -n` reach it; {@link Topology.destroy} removes
   * that name and the pod and remote namespaces, while the node's namespace lives on with the
   * process.
   */
  readonly nodePid?: number;
}

/** Builds the topology. Throws with a clear reason when it cannot (not root, no `ip`). */
export async function createTopology(options: TopologyOptions = {}): Promise<Topology> {
  const support = await netnsSupport();
  if (!support.ok) throw new Error(`cannot create network namespaces: ${support.reason}`);

  const base = `${options.prefix ?? "inc"}-${process.pid}-${++topologyCounter}`;
  const namespaces: Record<Host, string> = {
    node: `${base}-node`,
    pod: `${base}-pod`,
    remote: `${base}-remote`,
  };
  const tracked = { namespaces: [] as string[], pids: new Set<number>() };
  const processes = new Set<ResultPromise>();
  liveTopologies.add(tracked);
  installExitHook();
  let destroyed = false;
  let probeTables = 0;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    for (const subprocess of processes) subprocess.kill("SIGKILL");
    await Promise.allSettled([...processes]);
    processes.clear();
    for (const namespace of tracked.namespaces) {
      // Absent already (e.g. a half-built topology) is fine: destroy must never fail.
      await hostRunner("ip", ["netns", "del", namespace]).catch(() => undefined);
    }
    liveTopologies.delete(tracked);
  };

  const P = ADDRESS_PLAN;
  try {
    for (const [host, namespace] of Object.entries(namespaces)) {
      if (host === "node" && options.nodePid !== undefined) {
        await ip(["netns", "attach", namespace, String(options.nodePid)]);
      } else {
        await ip(["netns", "add", namespace]);
      }
      tracked.namespaces.push(namespace);
    }
    await ipBatch(namespaces.node, [
      "link set lo up",
      `link add ${P.podInterface} type veth peer name eth0 netns ${namespaces.pod}`,
      `link add ${P.remoteInterface} type veth peer name eth0 netns ${namespaces.remote}`,
      `addr add ${P.nodePodSide.ipv4}/24 dev ${P.podInterface}`,
      `addr add ${P.nodePodSide.ipv6}/64 dev ${P.podInterface} nodad`,
      `addr add ${P.nodeRemoteSide.ipv4}/24 dev ${P.remoteInterface}`,
      `addr add ${P.nodeRemoteSide.ipv6}/64 dev ${P.remoteInterface} nodad`,
      `link set ${P.podInterface} up`,
      `link set ${P.remoteInterface} up`,
    ]);
    for (const [host, self, gateway] of [
      ["pod", P.pod, P.nodePodSide],
      ["remote", P.remote, P.nodeRemoteSide],
    ] as const) {
      await ipBatch(namespaces[host], [
        "link set lo up",
        `addr add ${self.ipv4}/24 dev eth0`,
        `addr add ${self.ipv6}/64 dev eth0 nodad`,
        "link set eth0 up",
        `route add 0.0.0.0/0 via ${gateway.ipv4}`,
        `route add ::/0 via ${gateway.ipv6}`,
      ]);
    }
  } catch (error) {
    await destroy();
    throw error;
  }

  const startProcess = (host: Host, program: string, argument: string): ResultPromise => {
    const subprocess = execa(
      "ip",
      ["netns", "exec", namespaces[host], process.execPath, "-e", program, argument],
      { reject: false, buffer: false, stdin: "ignore" },
    );
    processes.add(subprocess);
    if (subprocess.pid !== undefined) tracked.pids.add(subprocess.pid);
    void subprocess.finally(() => {
      processes.delete(subprocess);
      if (subprocess.pid !== undefined) tracked.pids.delete(subprocess.pid);
    });
    return subprocess;
  };

  /** Binds `ips` on a host's lo, and routes them there from the node, which forwards. */
  const hostAddresses = async (host: "pod" | "remote", ips: readonly string[]) => {
    const unique = [...new Set(ips)];
    if (unique.length === 0) return;
    await ipBatch(namespaces[host], unique.map(bindOnLoopback));
    // The node now routes between the pod and the remote host, as a real node routes pods' traffic.
    for (const key of ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]) {
      const result = await runnerIn(namespaces.node)("sysctl", ["-qw", `${key}=1`]);
      if (result.exitCode !== 0) throw new Error(`sysctl ${key}=1: ${result.stderr.trim()}`);
    }
    const via = host === "pod" ? P.pod : P.remote;
    await ipBatch(
      namespaces.node,
      unique.map((address) =>
        address.includes(":")
          ? `route add ${address}/128 via ${via.ipv6}`
          : `route add ${address}/32 via ${via.ipv4}`,
      ),
    );
  };

  return {
    namespaces,
    runner: (host) => runnerIn(namespaces[host]),

    async addNodeAddresses(ips) {
      // The same address twice (e.g. an LB IP shared by two Services) is bound once.
      const unique = [...new Set(ips)];
      if (unique.length > 0) await ipBatch(namespaces.node, unique.map(bindOnLoopback));
    },

    addRemoteAddresses: (ips) => hostAddresses("remote", ips),
    addPodAddresses: (ips) => hostAddresses("pod", ips),

    async listen(specs, host = "node") {
      if (specs.length === 0) throw new Error("listen() needs at least one ListenerSpec");
      const subprocess = startProcess(host, LISTENER_PROGRAM, JSON.stringify(specs));
      let stderr = "";
      subprocess.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      await new Promise<void>((resolve, reject) => {
        let stdout = "";
        const timer = setTimeout(
          () => reject(new Error("listener did not start within 10 s")),
          10_000,
        );
        subprocess.stdout?.on("data", (chunk: Buffer) => {
          stdout += chunk.toString();
          if (stdout.includes("ready\n")) {
            clearTimeout(timer);
            resolve();
          }
        });
        void subprocess.then(() => {
          clearTimeout(timer);
          reject(new Error(`listener exited before it was ready: ${stderr.trim()}`));
        });
      });
      return {
        async stop() {
          subprocess.kill("SIGKILL");
          await subprocess;
        },
      };
    },

    async connect(from, address, port, protocol, probeOptions = {}) {
      const timeoutMs = probeOptions.timeoutMs ?? 1500;
      const result = await runnerIn(namespaces[from])(process.execPath, [
        "-e",
        PROBE_PROGRAM,
        JSON.stringify([address, port, protocol, timeoutMs]),
      ]);
      if (result.exitCode !== 0) {
        throw new Error(`probe from ${from} failed to run: ${result.stderr.trim()}`);
      }
      return JSON.parse(result.stdout) as ProbeResult;
    },

    async markCounter(mark = 0x4000) {
      if (!Number.isInteger(mark) || mark <= 0 || mark > 0xffffffff) {
        throw new Error(
          `markCounter: mark must be a non-zero unsigned 32-bit integer, got ${mark}`,
        );
      }
      const table = `probe-mark-${++probeTables}`;
      const hex = `0x${mark.toString(16)}`;
      const run = runnerIn(namespaces.node);
      const created = await run("nft", ["-f", "-"], {
        input: `table inet ${table} {
  chain input {
    type filter hook input priority 0; policy accept;
    meta mark & ${hex} == ${hex} counter
  }
}
`,
      });
      if (created.exitCode !== 0) throw new Error(`nft probe table: ${created.stderr.trim()}`);
      return {
        async read() {
          const listed = await run("nft", ["-j", "list", "table", "inet", table]);
          if (listed.exitCode !== 0)
            throw new Error(`nft list probe table: ${listed.stderr.trim()}`);
          const document = JSON.parse(listed.stdout) as {
            nftables: { rule?: { expr: { counter?: { packets: number } }[] } }[];
          };
          for (const item of document.nftables) {
            const counter = item.rule?.expr.find((expression) => expression.counter)?.counter;
            if (counter) return counter.packets;
          }
          throw new Error(`probe table ${table} has no counter`);
        },
      };
    },

    destroy,
  };
}
