// One changed Service with N present: the controller's work from the decoded watch event (an
// API-shaped Service object) to the end of the kernel transaction, i.e. trimService +
// engine.setService + engine.takeChanges + backend.applyChanges, the path `run` takes for every
// watch event. It runs in a process inside a fresh network namespace per backend, where the
// kernel tools start exactly as on a node. Also times the full sync and the whole-ruleset
// computation of the same N, and, for iptables, how much of a change is spent outside
// iptables-restore.
//
//   node bench/incremental-sync.mjs [--quick] [--sizes 100,1000] [--backends nft] [--changes 50]

import { runTool } from "@ipvs-node-controller/backend";
import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import { RulesetEngine, trimNode, trimService } from "@ipvs-node-controller/core";
import { ADDRESS_PLAN } from "@ipvs-node-controller/test-support";
import { log, sleep } from "./lib/log.mjs";
import { addNamespace, benchmarkEntry, runInNamespace, tempDir } from "./lib/namespace.mjs";
import { backendFlags } from "./lib/options.mjs";
import { apiService, changedIP, NAMESPACE, nodeObject, serviceName } from "./lib/services.mjs";
import { median, round, summarize } from "./lib/stats.mjs";

/** Runs the measurement for every backend, each in a namespace of its own. */
export async function measureIncrementalSync(options) {
  const results = {};
  for (const backend of options.backends) {
    const namespace = await addNamespace("incremental");
    log("incremental", `${backend}: sizes ${options.sizes.join(", ")}, ${options.changes} changes`);
    results[backend] = await runInNamespace(
      namespace.name,
      import.meta.url,
      { backend, sizes: options.sizes, changes: options.changes, warmup: options.warmup },
      // iptables-legacy serialises on this lock; a private one keeps other users of the
      // machine's lock out of the figures.
      { XTABLES_LOCKFILE: `${tempDir("xtables")}/xtables.lock` },
    );
    await namespace.remove();
  }
  return results;
}

function kernelBackend(name, runner) {
  const flags = backendFlags(name);
  return flags.backend === "nft"
    ? createNftBackend({ runner })
    : createIptablesBackend({ mode: flags.mode, runner });
}

const key = (i) => `${NAMESPACE}/${serviceName(i)}`;

async function timed(action) {
  const started = performance.now();
  const value = await action();
  return { value, ms: performance.now() - started };
}

/** The measuring half, inside the namespace. */
async function measure({ backend, sizes, changes, warmup }) {
  // Every tool the backend starts, with how long it ran (start to exit).
  let calls = [];
  const runner = async (file, args, options) => {
    const started = performance.now();
    try {
      return await runTool(file, args, options);
    } finally {
      calls.push({ file, ms: performance.now() - started });
    }
  };
  const node = trimNode(nodeObject(ADDRESS_PLAN.podCIDR.ipv4));
  const bySize = {};
  let nextIP = 0;
  for (const n of sizes) {
    const kernel = kernelBackend(backend, runner);
    await kernel.cleanup();
    const services = Array.from({ length: n }, (_, i) => apiService(i));

    // Start-up: every Service into a fresh engine, the whole ruleset out, a full sync.
    let engine;
    const compute = await timed(() => {
      engine = new RulesetEngine();
      engine.setNode(node);
      for (let i = 0; i < n; i++) engine.setService(key(i), trimService(services[i]));
      return engine.result();
    });
    const fullSyncs = [];
    for (let round = 0; round < 3; round++) {
      fullSyncs.push((await timed(() => kernel.apply(compute.value.ruleset, { full: true }))).ms);
    }
    engine.takeChanges();
    const results = [];
    for (let round = 0; round < 5; round++) results.push((await timed(() => engine.result())).ms);

    const samples = [];
    for (let k = 0; k < warmup + changes; k++) {
      // A status change moving one Service to a new LB IP, as a load-balancer controller makes it.
      const i = (k * 7919) % n;
      const event = apiService(i, { ip: changedIP(++nextIP), resourceVersion: 100_000 + k });
      calls = [];
      const started = performance.now();
      engine.setService(key(i), trimService(event));
      const diff = engine.takeChanges();
      const coreDone = performance.now();
      const applied = await kernel.applyChanges(diff);
      const ended = performance.now();
      const tool = (suffix) =>
        calls.filter((c) => c.file.endsWith(suffix)).reduce((sum, c) => sum + c.ms, 0);
      if (k >= warmup) {
        samples.push({
          totalMs: ended - started,
          coreMs: coreDone - started,
          applyMs: ended - coreDone,
          toolMs: calls.reduce((sum, c) => sum + c.ms, 0),
          restoreMs: tool("-restore"),
          saveMs: tool("-save"),
          tools: calls.length,
          mode: applied.mode,
        });
      }
      // Lets the kernel finish releasing what the transaction replaced, as between two syncs.
      await sleep(5);
    }
    const pick = (field) => samples.map((sample) => sample[field]);
    const modes = {};
    for (const { mode } of samples) modes[mode] = (modes[mode] ?? 0) + 1;
    const restoreTotal = pick("restoreMs").reduce((a, b) => a + b, 0);
    const total = pick("totalMs").reduce((a, b) => a + b, 0);
    bySize[n] = {
      services: n,
      mappings: compute.value.ruleset.families.reduce((sum, f) => sum + f.mappings.length, 0),
      ...summarize(pick("totalMs")),
      coreMs: summarize(pick("coreMs"), 3),
      applyMs: summarize(pick("applyMs")),
      toolMs: summarize(pick("toolMs")),
      toolsPerChange: median(pick("tools")),
      applyModes: modes,
      fullSyncMs: round(median(fullSyncs)),
      computeRulesetMs: round(compute.ms),
      resultMs: round(median(results)),
      ...(backend === "nft"
        ? {}
        : {
            restoreMs: summarize(pick("restoreMs")),
            saveMs: summarize(pick("saveMs")),
            // The share of a change spent anywhere but inside iptables-restore (reading the
            // state back, planning, rendering, the core), over all measured changes.
            outsideRestoreShare: round(1 - restoreTotal / total, 3),
          }),
    };
    log(
      "incremental",
      `${backend} at ${n}: p50 ${bySize[n].p50} ms, p99 ${bySize[n].p99} ms ` +
        `(${Object.keys(modes).join("/")}), full sync ${bySize[n].fullSyncMs} ms`,
    );
  }
  return bySize;
}

await benchmarkEntry(import.meta.url, measureIncrementalSync, measure);
