// Churn soak of `ipvs-node-controller run`: thousands of LoadBalancer Services on a real
// kube-apiserver, a steady stream of changes to them for minutes, the controller in a throwaway
// network namespace with the nft backend and the DaemonSet's defaults. Reports resident memory
// (start of the measured period, end, peak), the live heap after a full collection at both ends,
// the event-loop lag p99 (prom-client's nodejs_eventloop_lag_p99_seconds, one value per scrape),
// and whether any change was lost: at the end the nft map must hold exactly what the Services ask
// for. Exits 1 when a change was lost or resident memory moved more than 5 % after warm-up.
//
//   pnpm bench:soak [--services N] [--rate PER_SECOND] [--duration SECONDS] [--warmup SECONDS]
//   (root; after scripts/setup.sh; env SOAK_SERVICES, SOAK_RATE, SOAK_DURATION, SOAK_WARMUP too)
//
// Defaults: 10,000 Services, 20 changes per second, 600 s of churn of which the first 120 s are
// warm-up. The mix of changes is CHURN_MIX in test-support/src/service-churn.ts.

import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  AddressPool,
  bridgeIntoNamespace,
  CHURN_MIX,
  compareMappings,
  createLoadBalancerServices,
  createTopology,
  differenceCount,
  expectedMappings,
  httpGet,
  kernelMappings,
  kubeClient,
  listServices,
  measureLiveHeap,
  runAtRate,
  ServiceChurn,
  startTestApiServer,
} from "@ipvs-node-controller/test-support";

const { values: flags } = parseArgs({
  options: {
    services: { type: "string", default: process.env.SOAK_SERVICES ?? "10000" },
    rate: { type: "string", default: process.env.SOAK_RATE ?? "20" },
    duration: { type: "string", default: process.env.SOAK_DURATION ?? "600" },
    warmup: { type: "string", default: process.env.SOAK_WARMUP ?? "120" },
    seed: { type: "string", default: process.env.SOAK_SEED ?? "1" },
  },
});
const count = Number(flags.services);
const rate = Number(flags.rate);
const durationS = Number(flags.duration);
const warmupS = Number(flags.warmup);
for (const [name, value] of Object.entries({ count, rate, durationS, warmupS })) {
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name}: not a number`);
}
if (warmupS >= durationS) throw new Error("--warmup must be shorter than --duration");

const cli = fileURLToPath(new URL("../bundle/ipvs-node-controller.mjs", import.meta.url));
const INSPECTOR_PORT = 9229;
const SAMPLE_MS = 5000;
const mib = (bytes) => (bytes / 1024 / 1024).toFixed(1);
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
};
const load = () =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(" ");
const log = (text) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${text}`);

const api = await startTestApiServer({
  extraApiServerArgs: ["--service-node-port-range=20000-65000"],
});
const topology = await createTopology({ prefix: "soak" });
const client = kubeClient(api);
let controller;
let bridge;
let exitCode = 0;
try {
  const pool = new AddressPool();
  const created = performance.now();
  const names = await createLoadBalancerServices(client, { count, pool, concurrency: 16 });
  log(
    `created ${count} Services with LB status in ${((performance.now() - created) / 1000).toFixed(1)} s`,
  );

  bridge = await bridgeIntoNamespace(topology.namespaces.node, {
    host: "127.0.0.1",
    port: Number(new URL(api.serverUrl).port),
  });
  const node = topology.runner("node");
  const metricsText = async () => (await httpGet(node, "http://127.0.0.1:10266/metrics")).body;
  const metric = (text, name) =>
    Number(new RegExp(`^${name} ([\\d.e+-]+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  const logCounts = { drifted: 0, syncFailed: 0, errors: 0 };
  const started = performance.now();
  controller = spawn(
    "ip",
    [
      "netns",
      "exec",
      topology.namespaces.node,
      process.execPath,
      "--max-semi-space-size=2", // the DaemonSet's NODE_OPTIONS
      `--inspect=127.0.0.1:${INSPECTOR_PORT}`,
      cli,
      "run",
      "--backend=nft",
      `--kubeconfig=${api.kubeconfigPath}`,
      "--node-name=soak",
      "--metrics-bind-address=127.0.0.1:10266",
      "--health-probe-bind-address=127.0.0.1:10267",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let pending = "";
  controller.stdout.on("data", (chunk) => {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) {
      if (line.includes("drifted")) logCounts.drifted += 1;
      if (line.includes("sync failed")) logCounts.syncFailed += 1;
      if (line.includes('"level":50')) logCounts.errors += 1;
    }
  });
  controller.stderr.on("data", () => {}); // the inspector's banner

  const rssOf = async () => {
    const status = await readFile(`/proc/${controller.pid}/status`, "utf8");
    const kib = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024;
    return { rss: kib("VmRSS"), peak: kib("VmHWM") };
  };
  const initialMappings = expectedMappings(await listServices(client)).size;
  while ((await kernelMappings(node)).size !== initialMappings) {
    if (performance.now() - started > 600_000) throw new Error("initial sync took over 10 min");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  log(
    `${initialMappings} mappings in the kernel ${((performance.now() - started) / 1000).toFixed(1)} s after start; ` +
      `RSS ${mib((await rssOf()).rss)} MiB; load ${load()}`,
  );

  // The churn, with samples every SAMPLE_MS: RSS, heap, event-loop lag.
  const churn = new ServiceChurn(client, names, { pool, seed: Number(flags.seed) });
  const samples = [];
  const churnStarted = performance.now();
  let sampling = true;
  let heapAfterWarmup;
  let heapMeasuredAt = -1;
  const sampler = (async () => {
    while (sampling) {
      await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
      const at = (performance.now() - churnStarted) / 1000;
      const text = await metricsText();
      const { rss } = await rssOf();
      samples.push({
        at,
        rss,
        heapUsed: metric(text, "nodejs_heap_size_used_bytes"),
        // The full collection forced to measure the heap shows as lag in the next scrape.
        lagP99:
          heapMeasuredAt === samples.length - 1
            ? Number.NaN
            : metric(text, "nodejs_eventloop_lag_p99_seconds"),
      });
      if (heapAfterWarmup === undefined && at >= warmupS) {
        heapAfterWarmup = await measureLiveHeap(node, INSPECTOR_PORT);
        heapMeasuredAt = samples.length;
        log(`warm-up over: RSS ${mib(rss)} MiB, live heap ${mib(heapAfterWarmup.usedBytes)} MiB`);
      }
      if (samples.length % 12 === 0) {
        log(
          `t=${at.toFixed(0)} s: ${Object.entries(churn.counts)
            .map(([k, v]) => `${k} ${v}`)
            .join(
              ", ",
            )}; RSS ${mib(rss)} MiB; lag p99 ${(samples.at(-1).lagP99 * 1000).toFixed(1)} ms; load ${load()}`,
        );
      }
    }
  })();
  const total = Math.round(rate * durationS);
  const pace = await runAtRate(total, rate, () => churn.step());
  sampling = false;
  await sampler;
  const lastWrite = performance.now();
  log(
    `churn done: ${total} changes in ${(pace.elapsedMs / 1000).toFixed(1)} s (${pace.achievedPerSecond.toFixed(1)}/s); ${JSON.stringify(churn.counts)}`,
  );

  // No lost change: the kernel must come to equal what the Services ask for.
  let diff;
  let converged = false;
  const deadline = performance.now() + 120_000;
  while (performance.now() < deadline) {
    const expected = expectedMappings(await listServices(client));
    diff = compareMappings(expected, await kernelMappings(node));
    if (differenceCount(diff) === 0) {
      converged = true;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const convergedAfter = (performance.now() - lastWrite) / 1000;
  const heapAtEnd = await measureLiveHeap(node, INSPECTOR_PORT);
  const { peak } = await rssOf();
  const text = await metricsText();

  const measured = samples.filter((s) => s.at >= warmupS);
  const firstMinute = measured.filter((s) => s.at < warmupS + 60).map((s) => s.rss);
  const lastMinute = measured.filter((s) => s.at >= samples.at(-1).at - 60).map((s) => s.rss);
  const rssStart = median(firstMinute);
  const rssEnd = median(lastMinute);
  const rssPeakMeasured = Math.max(...measured.map((s) => s.rss));
  // The kernel updates the high-water mark lazily; a sample may have seen more.
  const rssPeakEver = Math.max(peak, ...samples.map((s) => s.rss));
  const drift = rssEnd / rssStart - 1;
  const lags = measured.map((s) => s.lagP99 * 1000).filter(Number.isFinite);
  const flat = Math.abs(drift) <= 0.05;

  console.log("\nchurn soak");
  console.log(`  Services                 ${count} (${churn.size} at the end)`);
  console.log(
    `  changes                  ${total} at ${rate}/s requested, ${pace.achievedPerSecond.toFixed(1)}/s achieved, ${churn.counts.failed} refused by the API server`,
  );
  console.log(`  mix                      ${JSON.stringify(CHURN_MIX)}`);
  console.log(
    `  RSS after warm-up        ${mib(rssStart)} MiB (median of the first minute after ${warmupS} s)`,
  );
  console.log(`  RSS at the end           ${mib(rssEnd)} MiB (median of the last minute)`);
  console.log(
    `  RSS change               ${(drift * 100).toFixed(1)} % (${flat ? "flat: within ±5 %" : "NOT flat"})`,
  );
  console.log(
    `  RSS peak                 ${mib(rssPeakMeasured)} MiB after warm-up, ${mib(rssPeakEver)} MiB ever (initial sync included)`,
  );
  console.log(
    `  live heap (after GC)     ${mib(heapAfterWarmup?.usedBytes ?? Number.NaN)} MiB after warm-up, ${mib(heapAtEnd.usedBytes)} MiB at the end`,
  );
  console.log(
    `  event-loop lag p99       median ${median(lags).toFixed(1)} ms, max ${Math.max(...lags).toFixed(1)} ms (per ${SAMPLE_MS / 1000} s scrape)`,
  );
  console.log(
    `  lost changes             ${converged ? 0 : differenceCount(diff)} (kernel ${converged ? "equal to" : "DIFFERENT from"} the Services ${convergedAfter.toFixed(1)} s after the last write)`,
  );
  if (!converged) {
    console.log(
      `    missing ${diff.missing.slice(0, 5).join(", ")}; extra ${diff.extra.slice(0, 5).join(", ")}; wrong ${diff.wrong.slice(0, 5).join(", ")}`,
    );
  }
  console.log(
    `  syncs                    ${["full", "incremental", "none"].map((mode) => `${mode} ${metric(text, `ipvs_node_controller_syncs_total\\{mode="${mode}"\\}`)}`).join(", ")}; failures ${metric(text, "ipvs_node_controller_sync_failures_total")}; drift repairs ${logCounts.drifted}; error log lines ${logCounts.errors}`,
  );
  console.log(`  load average             ${load()} (1, 5, 15 min)`);
  if (!converged || !flat || logCounts.drifted > 0) exitCode = 1;
} finally {
  controller?.kill("SIGTERM");
  if (controller) await new Promise((resolve) => controller.once("exit", resolve));
  client.close();
  await bridge?.stop();
  await topology.destroy();
  await api.stop();
}
process.exit(exitCode);
