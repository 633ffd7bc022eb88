// Each program started as its DaemonSet starts it, end to end: ours with each backend and, given
// `--original-binary PATH`, the original controller, one after the other in the same node
// namespace against the same real kube-apiserver, with the same LoadBalancer Services (one TCP
// port each, as the original translates whole IPs). Two parts of the report run here, in one
// cluster, and a session that both ask for (the same program and number of Services) runs once:
// - `footprint`: ours at `footprintSizes` (100, 1,000, 10,000) and the original at those it can
//   reach (up to 1,000: it needs about 40 s for 1,000 and would need hours for 10,000); then the
//   size of the bundle `run` loads and of the image (lib/artifacts.mjs);
// - `original`, with `--original-binary`: the original beside ours at `originalSizes`.
//
// The original is a binary you give with `--original-binary PATH`; nothing here builds it (see
// bench/README.md). It runs `iptables` and `iptables-save` from PATH: each session puts the
// variant under test (`--original-iptables nft,legacy`) first on its PATH, and creates
// kube-proxy's KUBE-MARK-MASQ chain, which its rules jump to, before it starts. Ours is the
// bundle, as the image runs it, with the DaemonSet's flags and NODE_OPTIONS.
//
// Per program and number of Services, one process, started in the node namespace:
// - from the process's start to the first rule and to every Service's rules in the kernel, seen
//   by listing the kernel (`iptables-save -t nat`, or our nft map) every 20 ms until the first
//   rule, then every 250 ms; a Service counts once its translation is complete: for the
//   original, its DNAT rules in both of its chains (prerouting for pods, output for the host);
//   for ours, its map element or DNAT rule;
// - resident memory: steady (the median of the second half of samples over `settleSeconds`)
//   and the peak (VmHWM at the end of the session);
// - `originalChanges` single changes, each moving one Service to a new LB IP: from the status
//   patch accepted to the new IP's translation in the kernel (`nft monitor` for nft and
//   iptables-nft, back-to-back listings for iptables-legacy), then, after `--min-sync-period`
//   and one more second, whether the old IP's translation is still in the kernel.
//
//   node bench/footprint.mjs [--quick] [--parts footprint] [--footprint-sizes 100,1000]
//     [--original-binary PATH] [--original-sizes 1000] [--no-image]

import { createHash } from "node:crypto";
import { accessSync, constants, createReadStream, mkdirSync, symlinkSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { runTool } from "@ipvs-node-controller/backend";
import { runnerIn } from "@ipvs-node-controller/test-support";
import { bundleSizes, imageSizes } from "./lib/artifacts.mjs";
import { startProcess } from "./lib/cleanup.mjs";
import { measureInRemote, startApiServer } from "./lib/cluster.mjs";
import {
  CLI,
  daemonSetNodeOptions,
  durationMs,
  memoryOf,
  mib,
  within,
} from "./lib/controller-process.mjs";
import { nftMonitor } from "./lib/kernel-watch.mjs";
import { log, sleep } from "./lib/log.mjs";
import { benchmarkEntry, tempDir } from "./lib/namespace.mjs";
import { backendFlags } from "./lib/options.mjs";
import { changedIP, createServices, lbIP, PORTS, patchIngressIP } from "./lib/services.mjs";
import { median, round, summarize } from "./lib/stats.mjs";

const ONE_PORT = [PORTS[0]];
const NODE_NAME = "bench";
/** Every LB IP the benchmark hands out: lbIP (172.16.0.0/12) and changedIP (198.18.0.0/15). */
const LB_IPS = /(?:172\.(?:1[6-9]|2\d|3[01])|198\.1[89])\.\d{1,3}\.\d{1,3}/g;
/**
 * The most Services the footprint runs the original with: one `iptables` process per rule, each
 * reading the whole table, takes it about 40 s to 1,000 Services and hours to 10,000.
 */
export const ORIGINAL_REACH = 1000;

const originalName = (variant) => `original-iptables-${variant}`;

/**
 * The sessions each part asks for: for `footprint` and `original`, when among `parts` (the
 * latter only with `--original-binary`), a Map of number of Services → program names, the
 * original's first.
 */
export function sessionPlan(options, parts) {
  const originals = options.originalBinary ? options.originalIptables.map(originalName) : [];
  const plan = {};
  if (parts.includes("footprint")) {
    plan.footprint = new Map(
      options.footprintSizes.map((n) => [
        n,
        [...(n <= ORIGINAL_REACH ? originals : []), ...options.backends],
      ]),
    );
  }
  if (parts.includes("original") && options.originalBinary) {
    plan.original = new Map(
      options.originalSizes.map((n) => [n, [...originals, ...options.backends]]),
    );
  }
  return plan;
}

/** Every session of the plan once: `[n, names]` by growing `n`. */
function sessionsOf(plan) {
  const merged = new Map();
  for (const bySize of Object.values(plan)) {
    for (const [n, names] of bySize)
      merged.set(n, [...new Set([...(merged.get(n) ?? []), ...names])]);
  }
  for (const [n, names] of merged) {
    // The original's programs first, then ours, whichever part asked for them first.
    merged.set(n, [
      ...names.filter((name) => name.startsWith("original-")),
      ...names.filter((name) => !name.startsWith("original-")),
    ]);
  }
  return [...merged].sort(([a], [b]) => a - b);
}

/**
 * Runs the sessions of the `footprint` and `original` parts among `parts` and returns the report's
 * sections: `footprint` and `originalController` (the latter only with `--original-binary`).
 */
export async function measureSessions(options, parts) {
  const plan = sessionPlan(options, parts);
  if (Object.keys(plan).length === 0) return {};
  let binary;
  if (options.originalBinary) {
    binary = resolve(options.originalBinary);
    accessSync(binary, constants.X_OK);
  }
  // The bundle as the sessions run it (it may be rebuilt while they run).
  const bundle = plan.footprint ? bundleSizes() : undefined;
  const result = await measureInRemote("bench-e2e", import.meta.url, {
    options,
    binary,
    sessions: sessionsOf(plan),
  });
  let original;
  if (binary) {
    original = { ...(await describeBinary(binary)), iptables: result.iptables };
    // What the binary was built from, as whoever built it says (Go records "(devel)" for a checkout).
    if (options.originalVersion) original.version = options.originalVersion;
  }
  /** The sessions of one part's plan, by number of Services and program. */
  const bySize = (sizes) =>
    Object.fromEntries(
      [...sizes].map(([n, names]) => [
        n,
        Object.fromEntries(names.map((name) => [name, result.bySize[n][name]])),
      ]),
    );
  const common = {
    kubeApiserver: result.kubeApiserver,
    nodeOptions: result.nodeOptions,
    changes: options.originalChanges,
  };
  const sections = {};
  if (plan.original) {
    sections.originalController = {
      ...common,
      original,
      services: [...plan.original.keys()],
      bySize: bySize(plan.original),
    };
  }
  if (plan.footprint) {
    const withOriginal = [...plan.footprint.values()].some((names) =>
      names.some((name) => name.startsWith("original-")),
    );
    sections.footprint = {
      ...common,
      ...(withOriginal ? { original } : {}),
      services: [...plan.footprint.keys()],
      settleSeconds: options.settleSeconds,
      bySize: bySize(plan.footprint),
      bundle,
      image: options.image ? await imageSizes(options) : { notMeasured: "--no-image" },
    };
  }
  return sections;
}

/** What can be told about the binary: its name, digest and Go build information. */
async function describeBinary(binary) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(binary)) hash.update(chunk);
  const info = await runTool("go", ["version", "-m", binary]).catch(() => undefined);
  const field = (name) => new RegExp(`^\\s*${name}\\s+(\\S+)`, "m").exec(info?.stdout ?? "")?.[1];
  return {
    binary: basename(binary),
    sha256: hash.digest("hex"),
    module: field("path"),
    goVersion: /: (go\S+)/.exec(info?.stdout ?? "")?.[1],
  };
}

/** The measuring half, inside the `remote` namespace. */
async function measure({ options, binary, sessions, namespaces }) {
  const { api, kube, version } = await startApiServer();
  const cluster = {
    api,
    kube,
    node: namespaces.node,
    clusterIPs: [],
    // Each Service's LB IP now; a change moves one.
    current: [],
    nextIP: 0,
  };
  const iptables = {};
  if (binary) {
    for (const variant of options.originalIptables) {
      iptables[variant] = (await runTool(`iptables-${variant}`, ["--version"])).stdout.trim();
    }
  }

  const bySize = {};
  let present = 0;
  for (const [n, names] of sessions) {
    const started = performance.now();
    await createServices(kube, present, n, cluster.clusterIPs, ONE_PORT);
    for (let i = present; i < n; i++) cluster.current[i] = lbIP(i);
    log(
      "sessions",
      `${n} Services of 1 port on the API server (${n - present} created in ` +
        `${round((performance.now() - started) / 1000, 1)} s)`,
    );
    present = n;
    bySize[n] = {};
    for (const name of names) {
      const program = name.startsWith("original-")
        ? originalProgram(binary, name.slice("original-iptables-".length))
        : ourProgram(name, options);
      bySize[n][name] = await session(cluster, options, program, n);
    }
  }
  return {
    kubeApiserver: version,
    nodeOptions: daemonSetNodeOptions(),
    iptables,
    bySize,
  };
}

/**
 * The original controller with iptables-`variant` as its `iptables`, started as its DaemonSet
 * starts it (`--metrics-addr=0`, NODE_NAME; NET_STACK unset means IPv4).
 */
function originalProgram(binary, variant) {
  return {
    name: originalName(variant),
    label: `the original with iptables-${variant}`,
    variant,
    // Its rules for one IP: a mark and a DNAT rule in each of its two chains, the DNAT last.
    dnatRulesPerIP: 2,
    list: (node) => iptablesTranslations(node, variant, 2),
    async prepare(node) {
      // Its rules jump to kube-proxy's chain, which kube-proxy creates on a real node.
      const run = runnerIn(node);
      for (const args of [
        ["-N", "KUBE-MARK-MASQ"],
        ["-A", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", "0x4000"],
      ]) {
        const result = await run(`iptables-${variant}`, ["-w", "-t", "nat", ...args]);
        if (result.exitCode !== 0) throw new Error(`iptables ${args.join(" ")}: ${result.stderr}`);
      }
    },
    start(cluster) {
      return startInNode(
        cluster,
        [binary, "--metrics-addr=0", `--kubeconfig=${cluster.api.kubeconfigPath}`],
        { NODE_NAME, PATH: `${toolsDir(variant)}:${process.env.PATH}` },
      );
    },
  };
}

/** Our controller with `backend`, started as the DaemonSet starts it. */
function ourProgram(backend, options) {
  const flags = backendFlags(backend);
  return {
    name: backend,
    label: `ours with ${backend}`,
    variant: flags.backend === "nft" ? "nft" : flags.mode,
    dnatRulesPerIP: 1,
    list: (node) =>
      flags.backend === "nft" ? nftTranslations(node) : iptablesTranslations(node, flags.mode, 1),
    async prepare() {},
    start(cluster) {
      return startInNode(
        cluster,
        [
          process.execPath,
          CLI,
          "run",
          ...flags.args,
          `--kubeconfig=${cluster.api.kubeconfigPath}`,
          `--min-sync-period=${options.minSyncPeriod}`,
          "--health-probe-bind-address=0.0.0.0:10267",
          "--metrics-bind-address=127.0.0.1:10266",
          "--log-level=info",
        ],
        { NODE_NAME, NODE_OPTIONS: daemonSetNodeOptions() },
      );
    },
  };
}

/** Starts `command` in the node namespace, with `env` added to this process's environment. */
function startInNode(cluster, command, env) {
  return startProcess("ip", ["netns", "exec", cluster.node, ...command], {
    env: { ...process.env, ...env },
  });
}

const toolDirs = new Map();

/** A directory whose `iptables`, `iptables-save`, `ip6tables`… are iptables-`variant`'s. */
function toolsDir(variant) {
  let dir = toolDirs.get(variant);
  if (dir !== undefined) return dir;
  dir = join(tempDir(`iptables-${variant}`), "bin");
  mkdirSync(dir);
  for (const tool of [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
  ]) {
    const [name, ...rest] = tool.split("-");
    const target = onPath([`${name}-${variant}`, ...rest].join("-"));
    // xtables-*-multi picks the tool by the name it is called by, as Debian's alternatives do.
    symlinkSync(target, join(dir, tool));
  }
  toolDirs.set(variant, dir);
  return dir;
}

function onPath(file) {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    try {
      accessSync(join(dir, file), constants.X_OK);
      return join(dir, file);
    } catch {
      // Not here.
    }
  }
  throw new Error(`${file} is not on PATH`);
}

/**
 * The LB IPs whose translation is complete in the nat table of iptables-`variant`: at least
 * `perIP` DNAT rules with that IP as their destination.
 */
async function iptablesTranslations(node, variant, perIP) {
  const saved = await runnerIn(node)(`iptables-${variant}-save`, ["-t", "nat"]);
  const counts = new Map();
  for (const line of saved.stdout.split("\n")) {
    if (!line.includes(" -j DNAT ")) continue;
    const ip = /-d (\S+)\/32 /.exec(line)?.[1];
    if (ip !== undefined) counts.set(ip, (counts.get(ip) ?? 0) + 1);
  }
  return new Set([...counts].filter(([, count]) => count >= perIP).map(([ip]) => ip));
}

/** The LB IPs in our nft map. */
async function nftTranslations(node) {
  const listed = await runnerIn(node)("nft", [
    "-j",
    "list",
    "map",
    "inet",
    "ipvs-node-controller",
    "mappings-ipv4",
  ]);
  if (listed.exitCode !== 0) return new Set();
  return new Set(listed.stdout.match(LB_IPS) ?? []);
}

/** Everything of every program out of the node's kernel: nft tables and the legacy nat table. */
async function flushRules(node, variant) {
  const run = runnerIn(node);
  await run("nft", ["flush", "ruleset"]);
  if (variant !== "legacy") return;
  for (const args of [["-F"], ["-X"]]) await run("iptables-legacy", ["-w", "-t", "nat", ...args]);
}

/** Lists `program`'s translations in a loop; resolves each wait with `performance.now()`. */
function kernelListing(cluster, program) {
  const durations = [];
  return {
    durations,
    async list() {
      const started = performance.now();
      const translated = await program.list(cluster.node);
      const at = performance.now();
      durations.push(at - started);
      return { translated, at };
    },
  };
}

/**
 * How a change's new translation is seen: `nft monitor` where the program writes through
 * nf_tables (its added lines, counted as {@link iptablesTranslations} counts rules), else
 * listings back to back (iptables-legacy has no notifications, and its lock is taken by `-C`).
 */
async function changeWatcher(cluster, program, listing) {
  if (program.variant !== "legacy") {
    const monitor = await nftMonitor(cluster.node, {
      lines: program.dnatRulesPerIP,
      matching:
        program.name === "nft"
          ? (line) => line.startsWith("add element") && line.includes("mappings-ipv4")
          : (line) => line.includes(" dnat to "),
    });
    return { kind: "nft monitor", expect: (ip) => monitor.expect(ip), stop: () => monitor.stop() };
  }
  return {
    kind: `iptables-legacy-save -t nat, back to back`,
    async expect(ip) {
      const deadline = performance.now() + 60_000;
      while (performance.now() < deadline) {
        const { translated, at } = await listing.list();
        if (translated.has(ip)) return at;
      }
      return undefined;
    },
    stop: async () => {},
  };
}

/** One process of `program` with `n` Services; see the module comment. */
async function session(cluster, options, program, n) {
  const label = `${program.label} at ${n}`;
  await flushRules(cluster.node, program.variant);
  await program.prepare(cluster.node);
  const listing = kernelListing(cluster, program);
  const want = new Set(cluster.current.slice(0, n));
  const started = performance.now();
  const child = program.start(cluster);
  const pid = child.pid;
  // Both programs log a line per change; read it all so that neither blocks on a full pipe.
  let tail = "";
  for (const stream of [child.stdout, child.stderr]) {
    stream.on("data", (chunk) => {
      tail = (tail + chunk).slice(-2000);
    });
  }
  let exited = false;
  void child.exited.then(() => {
    exited = true;
  });

  // Start → first rule → every Service's rules.
  let firstRule;
  let allRules;
  while (allRules === undefined) {
    if (exited) throw new Error(`${label}: the program exited: ${tail}`);
    const { translated, at } = await listing.list();
    let found = 0;
    for (const ip of want) if (translated.has(ip)) found++;
    if (found > 0 && firstRule === undefined) firstRule = at - started;
    if (found === want.size) allRules = at - started;
    if (at - started > 30 * 60_000) throw new Error(`${label}: ${found} of ${n} after 30 min`);
    await sleep(firstRule === undefined ? 20 : 250);
  }
  const startListings = summarize(listing.durations.splice(0));
  log(
    "sessions",
    `${label}: first rule ${round(firstRule / 1000)} s, all rules ${round(allRules / 1000)} s`,
  );

  // Steady memory: left alone, the median of the second half of the samples.
  const samples = [];
  for (let t = 0; t < options.settleSeconds * 2; t++) {
    await sleep(500);
    samples.push(memoryOf(pid).rss);
  }
  const steady = median(samples.slice(samples.length >> 1));

  // Changes: each alone, after the previous one was seen and the coalescing window passed.
  const settleMs = durationMs(options.minSyncPeriod) + 1000;
  const watcher = await changeWatcher(cluster, program, listing);
  const latencies = [];
  let missed = 0;
  let leftBehind = 0;
  for (let k = 0; k < options.originalChanges; k++) {
    const i = (k * 7919 + 1) % n;
    const old = cluster.current[i];
    const ip = changedIP(++cluster.nextIP);
    const seen = watcher.expect(ip);
    await patchIngressIP(cluster.kube, i, ip);
    const accepted = performance.now();
    cluster.current[i] = ip;
    const at = await within(seen, 60_000);
    if (at === undefined) missed++;
    else latencies.push(at - accepted);
    await sleep(settleMs);
    if ((await listing.list()).translated.has(old)) leftBehind++;
  }
  await watcher.stop();
  const peak = memoryOf(pid).hwm;
  const changeListings = summarize(listing.durations.splice(0));
  if (exited) throw new Error(`${label}: the program exited: ${tail}`);
  await child.stop();
  await flushRules(cluster.node, program.variant);
  const change = { ...summarize(latencies), missed };
  log(
    "sessions",
    `${label}: steady ${mib(steady)} MiB, peak ${mib(peak)} MiB; one change p50 ` +
      `${round(change.p50 ?? Number.NaN)} ms${missed > 0 ? ` (${missed} never seen)` : ""}; ` +
      `old IP's rules left behind after ${leftBehind} of ${options.originalChanges} changes`,
  );
  return {
    firstRuleSeconds: round(firstRule / 1000),
    allRulesSeconds: round(allRules / 1000),
    steadyMiB: mib(steady),
    peakMiB: mib(peak),
    changeMs: change,
    changes: options.originalChanges,
    oldRulesLeftBehind: leftBehind,
    watcher: watcher.kind,
    listingMs: { start: startListings, changes: changeListings },
  };
}

await benchmarkEntry(
  import.meta.url,
  (options) => measureSessions(options, options.parts),
  measure,
);
