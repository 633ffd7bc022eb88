// `ipvs-node-controller run` against a real kube-apiserver: network programming latency, bursts
// and memory, for each backend, with 100, 1,000 and 10,000 LoadBalancer Services of 3 ports.
//
// The API server and etcd run in the `remote` namespace and the controller in the `node`
// namespace, which reaches the API server over its veth as a node reaches its control plane; this
// process runs in `remote` too, so that nothing of the benchmark sits in the path of the watch.
//
// Per backend and number of Services, one controller process:
// - started with the DaemonSet's NODE_OPTIONS; the time until every mapping is in the kernel;
// - memory: resident memory after it settled (steady), its high-water mark so far (the start-up
//   peak), then the high-water mark over the first `memoryChanges` changes (reset before them);
// - single changes: a status patch moving one Service to a new LB IP, timed from the patch
//   call's response to the new rule being visible in the kernel (kernel-watch.mjs), each change
//   after the previous one landed and `--min-sync-period` passed, so none waits for another;
// - a burst: `burst` such patches spread over `burstWindowMs`, each timed the same way, with the
//   controller's own syncs from its log (how many, how long);
// - with nft at the smallest and the largest size, a heap snapshot (heap per Service, and where
//   the heap goes).
//
//   node bench/controller.mjs [--quick] [--sizes 100,1000] [--backends nft] [--changes 50]

import { readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { RulesetEngine, trimNode } from "@ipvs-node-controller/core";
import { ADDRESS_PLAN, runnerIn } from "@ipvs-node-controller/test-support";
import { startProcess } from "./lib/cleanup.mjs";
import { measureInRemote, startApiServer } from "./lib/cluster.mjs";
import {
  CLI,
  daemonSetNodeOptions,
  durationMs,
  MiB,
  memoryOf,
  mib,
  within,
} from "./lib/controller-process.mjs";
import { topGroups } from "./lib/heap-snapshot.mjs";
import { nftMonitor, rulePoller, syncChecker } from "./lib/kernel-watch.mjs";
import { log, sleep } from "./lib/log.mjs";
import { benchmarkEntry, tempDir } from "./lib/namespace.mjs";
import { backendFlags } from "./lib/options.mjs";
import {
  apiService,
  changedIP,
  createServices,
  NAMESPACE,
  nodeObject,
  patchIngressIP,
  serviceName,
} from "./lib/services.mjs";
import { median, round, summarize } from "./lib/stats.mjs";

const HEAP_SUMMARY = fileURLToPath(new URL("lib/heap-snapshot.mjs", import.meta.url));
const METRICS = `${ADDRESS_PLAN.nodeRemoteSide.ipv4}:10266`;

export async function measureController(options) {
  return measureInRemote("bench-ctl", import.meta.url, { options });
}

/** A metric's value from the Prometheus text. */
function metric(text, series) {
  const escaped = series.replace(/[{}"=]/g, (c) => `\\${c}`);
  const match = new RegExp(`^${escaped} ([\\d.e+-]+)$`, "m").exec(text);
  return match ? Number(match[1]) : undefined;
}

async function metrics() {
  const response = await fetch(`http://${METRICS}/metrics`);
  return response.text();
}

/** The measuring half, inside the `remote` namespace. */
async function measure({ options, namespaces }) {
  const { api, kube, version } = await startApiServer();
  const clusterIPs = [];
  const patchIP = (i, ip) => patchIngressIP(kube, i, ip);
  const incremental = {};
  for (const variant of ["nft", "legacy"]) {
    incremental[variant] = await appliesIncrementally(variant, namespaces.pod);
  }
  const cluster = { api, namespaces, clusterIPs, patchIP, nextIP: 0, incremental };

  let present = 0;
  const created = {};
  const results = {};
  for (const n of options.sizes) {
    const started = performance.now();
    await createServices(kube, present, n, clusterIPs);
    created[n] = round((performance.now() - started) / 1000, 1);
    log(
      "controller",
      `${n} Services on the API server (${n - present} created in ${created[n]} s)`,
    );
    present = n;
    for (const backend of options.backends) {
      const snapshot = backend === "nft" && (n === options.sizes[0] || n === options.sizes.at(-1));
      results[backend] ??= {};
      results[backend][n] = await session(cluster, options, backend, n, snapshot);
    }
  }
  const heap = heapReport(results.nft, options.sizes);
  for (const sessions of Object.values(results)) {
    for (const result of Object.values(sessions)) delete result.heap;
  }
  return {
    kubeApiserver: version,
    nodeOptions: daemonSetNodeOptions(),
    iptablesAppliesIncrementally: incremental,
    created,
    results,
    heap,
  };
}

/** One controller process for `backend` with `n` Services; see the module comment. */
async function session(cluster, options, backend, n, snapshot) {
  const { api, namespaces, clusterIPs, patchIP } = cluster;
  const minSyncMs = durationMs(options.minSyncPeriod);
  const diagnostics = tempDir("heap");
  const label = `${backend} at ${n}`;
  const started = performance.now();
  const controller = startProcess(
    "ip",
    [
      "netns",
      "exec",
      namespaces.node,
      process.execPath,
      // Inert until the signal: V8 then collects garbage and writes a snapshot of the heap.
      "--heapsnapshot-signal=SIGUSR2",
      `--diagnostic-dir=${diagnostics}`,
      CLI,
      "run",
      ...backendFlags(backend).args,
      `--kubeconfig=${api.kubeconfigPath}`,
      "--node-name=bench",
      `--min-sync-period=${options.minSyncPeriod}`,
      `--metrics-bind-address=${METRICS}`,
      "--health-probe-bind-address=0",
      "--log-level=info",
    ],
    { env: { ...process.env, NODE_OPTIONS: daemonSetNodeOptions() } },
  );
  const pid = controller.pid;
  // The controller's own account of each sync: `rules applied` with its mode and duration.
  const applies = [];
  let watcher;
  const failures = [];
  createInterface({ input: controller.stdout }).on("line", (line) => {
    let entry;
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    if (entry.msg === "rules applied") {
      const at = performance.now();
      applies.push({ at, ...entry });
      watcher?.synced?.(at);
    }
    if (entry.level >= 50) failures.push(entry.msg);
  });
  let stderr = "";
  controller.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-2000);
  });
  let exited = false;
  void controller.exited.then(() => {
    exited = true;
  });

  // Every mapping in the kernel.
  const want = 3 * n;
  for (;;) {
    if (exited) throw new Error(`${label}: the controller exited: ${stderr}`);
    const text = await metrics().catch(() => "");
    if (metric(text, 'ipvs_node_controller_mappings{family="ipv4"}') === want) break;
    if (performance.now() - started > 600_000) throw new Error(`${label}: not ready in 10 min`);
    await sleep(100);
  }
  const readySeconds = round((performance.now() - started) / 1000, 2);

  // Steady memory: left alone for a while, the median of the second half of the samples.
  const samples = [];
  // Long enough for a few garbage collections; only the largest size's figures are the goal's.
  const settle =
    n === options.sizes.at(-1) ? options.settleSeconds : Math.min(3, options.settleSeconds);
  for (let t = 0; t < settle * 2; t++) {
    await sleep(500);
    samples.push(memoryOf(pid).rss);
  }
  const steady = median(samples.slice(samples.length >> 1));
  const startupPeak = memoryOf(pid).hwm;

  // How the rule is seen (see kernel-watch.mjs).
  const flags = backendFlags(backend);
  watcher =
    flags.backend === "nft" || (flags.mode === "nft" && cluster.incremental.nft)
      ? await nftMonitor(namespaces.node)
      : flags.mode === "nft"
        ? syncChecker(namespaces.node, flags.mode)
        : await rulePoller(namespaces.node, flags.mode);
  const mappingOf = (i, ip) => ({
    family: "ipv4",
    externalIP: ip,
    protocol: "tcp",
    port: 80,
    clusterIP: clusterIPs[i],
    service: { namespace: NAMESPACE, name: serviceName(i) },
  });
  /** Moves Service `i` to a new LB IP; resolves when the patch is accepted. */
  const patch = async (i) => {
    const ip = changedIP(++cluster.nextIP);
    const seen = watcher.expect(ip, mappingOf(i, ip));
    await patchIP(i, ip);
    return { accepted: performance.now(), seen };
  };
  /** One change, alone: milliseconds from the patch accepted to its rule in the kernel. */
  const single = async (i) => {
    const patched = await patch(i);
    const at = await within(patched.seen, 60_000);
    return at === undefined ? undefined : at - patched.accepted;
  };

  // Memory under change: the high-water mark is reset (clear_refs 5) before the first change.
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
  let sampledPeak = 0;
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, memoryOf(pid).rss);
  }, 100);
  let peakOverChanges;
  const latencies = [];
  let missed = 0;
  const firstSingle = applies.length;
  const total = options.warmup + options.changes;
  for (let k = 0; k < total; k++) {
    const ms = await single((k * 7919 + 1) % n);
    if (ms === undefined) missed++;
    else if (k >= options.warmup) latencies.push(ms);
    if (k + 1 === Math.min(options.memoryChanges, total)) {
      peakOverChanges = { hwm: memoryOf(pid).hwm, sampled: sampledPeak };
    }
    // Past the coalescing window, so that the next change waits for nothing but itself.
    await sleep(minSyncMs + 50 + Math.random() * 50);
  }
  clearInterval(sampler);
  const singleSyncs = applies.slice(firstSingle).map((entry) => entry.durationMs);
  log(
    "controller",
    `${label}: ready in ${readySeconds} s; one change p50 ${round(median(latencies))} ms` +
      `${missed > 0 ? `, ${missed} never seen` : ""}`,
  );

  // A burst: distinct Services, patched at an even pace over the window.
  const size = Math.min(options.burst, n);
  const stride = [97, 89, 83, 1].find((s) => n % s !== 0);
  const firstBurst = applies.length;
  const burstStart = performance.now();
  const patched = await Promise.all(
    Array.from({ length: size }, async (_, j) => {
      await sleep((j * options.burstWindowMs) / size);
      return patch((j * stride + 13) % n);
    }),
  );
  const seenAt = await Promise.all(patched.map((entry) => within(entry.seen, 60_000)));
  const burst = patched.map((entry, j) => ({
    accepted: entry.accepted,
    at: seenAt[j],
    ms: seenAt[j] === undefined ? undefined : seenAt[j] - entry.accepted,
  }));
  const landed = burst.filter((entry) => entry.at !== undefined);
  const lastSeen = Math.max(...landed.map((entry) => entry.at));
  const accepted = burst.map((entry) => entry.accepted);
  const burstSyncs = applies
    .slice(firstBurst)
    .filter((entry) => entry.at >= burstStart && entry.at <= lastSeen + 500);
  const longestSync = Math.max(0, ...burstSyncs.map((entry) => entry.durationMs));
  const burstLatency = summarize(landed.map((entry) => entry.ms));
  const burstResult = {
    changes: size,
    landed: landed.length,
    patchWindowMs: round(Math.max(...accepted) - Math.min(...accepted)),
    firstPatchToAllLandedMs: round(lastSeen - Math.min(...accepted)),
    lastPatchToAllLandedMs: round(lastSeen - Math.max(...accepted)),
    latencyMs: burstLatency,
    syncs: burstSyncs.length,
    syncMs: burstSyncs.map((entry) => entry.durationMs),
    // After the last change of the burst, the rest of the coalescing window and one sync at most.
    boundMs: minSyncMs + longestSync,
    withinBound:
      landed.length === size && lastSeen - Math.max(...accepted) <= minSyncMs + longestSync,
  };
  log(
    "controller",
    `${label}: burst of ${size}: ${burstResult.syncs} syncs, all landed ` +
      `${burstResult.lastPatchToAllLandedMs} ms after the last patch, max ${burstLatency.max} ms ` +
      `(bound ${burstResult.boundMs} ms)`,
  );
  await sleep(minSyncMs);

  let heap;
  if (snapshot) heap = await heapSnapshot(controller, diagnostics);
  const heapUsed = metric(await metrics(), "nodejs_heap_size_used_bytes");
  await watcher.stop();
  await controller.stop();
  await removeRules(namespaces.node, backend);

  return {
    readySeconds,
    latencyMs: { ...summarize(latencies), missed },
    controllerSyncMs: summarize(singleSyncs),
    burst: burstResult,
    watcher: watcher.kind,
    ...(watcher.checkMs ? { checkMs: summarize(watcher.checkMs()) } : {}),
    memory: {
      steadyMiB: mib(steady),
      startupPeakMiB: mib(startupPeak),
      changes: Math.min(options.memoryChanges, total),
      peakOverChangesMiB: mib(peakOverChanges.hwm),
      sampledPeakOverChangesMiB: mib(peakOverChanges.sampled),
      heapUsedMiB: mib(heapUsed),
    },
    failures: failures.length,
    ...(heap ? { heap } : {}),
  };
}

/**
 * Whether the iptables backend applies one change without rewriting every rule (it is being made
 * to), tried in `namespace`, which the benchmark does not otherwise use.
 */
async function appliesIncrementally(variant, namespace) {
  const backend = createIptablesBackend({ mode: variant, runner: runnerIn(namespace) });
  const engine = new RulesetEngine();
  engine.setNode(trimNode(nodeObject(ADDRESS_PLAN.podCIDR.ipv4)));
  for (let i = 0; i < 3; i++) engine.setService(`${NAMESPACE}/${serviceName(i)}`, apiService(i));
  await backend.apply(engine.result().ruleset, { full: true });
  engine.takeChanges();
  engine.setService(`${NAMESPACE}/${serviceName(0)}`, apiService(0, { ip: changedIP(0) }));
  const { mode } = await backend.applyChanges(engine.takeChanges());
  await backend.cleanup();
  return mode === "incremental";
}

/** Has V8 write a heap snapshot, and summarises it (the snapshot is removed afterwards). */
async function heapSnapshot(controller, directory) {
  controller.kill("SIGUSR2");
  let file;
  while (file === undefined) {
    await sleep(250);
    file = readdirSync(directory).find((name) => name.endsWith(".heapsnapshot"));
  }
  // The snapshot is written on the main thread: once /metrics answers, the file is complete.
  await metrics();
  const path = join(directory, file);
  // Parsed in a process of its own: the snapshot is far larger than the heap it describes.
  const summary = startProcess(process.execPath, ["--max-old-space-size=4096", HEAP_SUMMARY, path]);
  let stdout = "";
  summary.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  const { code } = await summary.exited;
  rmSync(path, { force: true });
  if (code !== 0) throw new Error(`the heap snapshot summary failed (${code})`);
  return JSON.parse(stdout);
}

/** Removes the session's rules with the CLI's own cleanup, so the next backend starts clean. */
async function removeRules(node, backend) {
  const cleanup = startProcess("ip", [
    "netns",
    "exec",
    node,
    process.execPath,
    CLI,
    "cleanup",
    ...backendFlags(backend).args,
  ]);
  const { code } = await cleanup.exited;
  if (code !== 0) throw new Error(`cleanup --backend ${backend} failed (${code})`);
}

/** Heap per Service and where the heap goes, from the snapshots at the smallest and largest size. */
function heapReport(sessions, sizes) {
  const small = sessions?.[sizes[0]]?.heap;
  const large = sessions?.[sizes.at(-1)]?.heap;
  if (!small || !large || sizes.length < 2) return undefined;
  const services = sizes.at(-1) - sizes[0];
  const asGroups = (heap) =>
    new Map(Object.entries(heap.groups).map(([name, [count, bytes]]) => [name, { count, bytes }]));
  const before = asGroups(small);
  const growth = new Map();
  for (const [name, group] of asGroups(large)) {
    const was = before.get(name) ?? { count: 0, bytes: 0 };
    growth.set(name, { count: group.count - was.count, bytes: group.bytes - was.bytes });
  }
  return {
    heapMiB: {
      [sizes[0]]: round(small.totalBytes / MiB, 1),
      [sizes.at(-1)]: round(large.totalBytes / MiB, 1),
    },
    perServiceKiB: round((large.totalBytes - small.totalBytes) / services / 1024, 2),
    top: topGroups(asGroups(large)),
    topGrowth: topGroups(growth).map((group) => ({
      ...group,
      perServiceBytes: Math.round((group.kib * 1024) / services),
    })),
  };
}

await benchmarkEntry(import.meta.url, measureController, measure);
