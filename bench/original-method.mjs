// The method of the original controller, emulated, against ours, on the same Services (one TCP
// port each, as the original was measured): what the report's `original` part runs when it is
// not given the original controller itself (original-controller.mjs runs that). Per Service, two
// rules (a MARK and a DNAT) in each of two chains, each one checked and then appended with one
// `iptables` process per step (`iptables -t nat -C CHAIN rule || iptables -t nat -A CHAIN rule`),
// one after the other, timed until every rule is in. Ours: the same Services through the engine
// and one full sync of each backend, in process, without the controller's start-up or the API
// server. Every run starts in a fresh network namespace, inside which the timing process runs.
//
//   node bench/original-method.mjs [--quick] [--original-sizes 250,1000] [--backends nft]

import { runTool } from "@ipvs-node-controller/backend";
import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import { RulesetEngine, trimNode, trimService } from "@ipvs-node-controller/core";
import { ADDRESS_PLAN } from "@ipvs-node-controller/test-support";
import { log } from "./lib/log.mjs";
import { addNamespace, benchmarkEntry, runInNamespace, tempDir } from "./lib/namespace.mjs";
import { backendFlags } from "./lib/options.mjs";
import {
  apiService,
  clusterIP,
  lbIP,
  NAMESPACE,
  nodeObject,
  PORTS,
  serviceName,
} from "./lib/services.mjs";
import { round } from "./lib/stats.mjs";

const ONE_PORT = [PORTS[0]];
const POD_CIDR = ADDRESS_PLAN.podCIDR.ipv4;

export async function measureOriginalMethod(options) {
  const env = { XTABLES_LOCKFILE: `${tempDir("xtables")}/xtables.lock` };
  const results = {};
  for (const n of options.originalSizes) {
    const run = async (job) => {
      const namespace = await addNamespace("original");
      try {
        return await runInNamespace(namespace.name, import.meta.url, { ...job, n }, env);
      } finally {
        await namespace.remove();
      }
    };
    log("original", `${n} Services: one iptables process per check and per append`);
    const original = await run({ job: "original" });
    const ours = {};
    const speedUp = {};
    for (const backend of options.backends) {
      ours[backend] = (await run({ job: "ours", backend })).seconds;
      speedUp[backend] = round(original.seconds / ours[backend], 1);
    }
    results[n] = {
      services: n,
      originalSeconds: original.seconds,
      originalProcesses: original.processes,
      iptables: original.iptables,
      oursSeconds: ours,
      speedUp,
    };
    log(
      "original",
      `${n} Services: original ${original.seconds} s; ours ${Object.entries(ours)
        .map(([backend, seconds]) => `${backend} ${seconds} s (${speedUp[backend]}×)`)
        .join(", ")}`,
    );
  }
  return results;
}

async function iptables(args) {
  return runTool("iptables", ["-w", "-t", "nat", ...args]);
}

/** The original's way, inside the namespace. */
async function original(n) {
  const started = performance.now();
  let processes = 0;
  const must = async (args) => {
    processes++;
    const result = await iptables(args);
    if (result.exitCode !== 0) throw new Error(`iptables ${args.join(" ")}: ${result.stderr}`);
  };
  const chains = { prerouting: "ORIGINAL-PREROUTING", output: "ORIGINAL-OUTPUT" };
  await must(["-N", chains.prerouting]);
  await must(["-N", chains.output]);
  await must(["-A", "PREROUTING", "-j", chains.prerouting]);
  await must(["-A", "OUTPUT", "-j", chains.output]);
  for (let i = 0; i < n; i++) {
    const match = ["-d", `${lbIP(i)}/32`, "-p", "tcp", "-m", "tcp", "--dport", "80"];
    const mark = ["-j", "MARK", "--set-xmark", "0x4000/0x4000"];
    const dnat = ["-j", "DNAT", "--to-destination", `${clusterIP(i)}:80`];
    for (const [chain, source] of [
      [chains.prerouting, ["-s", POD_CIDR]],
      [chains.output, ["-m", "addrtype", "--src-type", "LOCAL"]],
    ]) {
      for (const target of [mark, dnat]) {
        const rule = [...source, ...match, ...target];
        processes++;
        const present = (await iptables(["-C", chain, ...rule])).exitCode === 0;
        if (!present) await must(["-A", chain, ...rule]);
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const listed = await runTool("iptables", ["-t", "nat", "-S"]);
  const rules = listed.stdout.split("\n").filter((line) => line.startsWith("-A ORIGINAL-")).length;
  if (rules !== 4 * n) throw new Error(`expected ${4 * n} rules, found ${rules}`);
  const version = (await runTool("iptables", ["--version"])).stdout.trim();
  return { seconds: round(seconds, 2), processes, iptables: version };
}

/** Ours: the engine and one full sync, inside the namespace. */
async function ours(n, name) {
  const flags = backendFlags(name);
  const backend =
    flags.backend === "nft" ? createNftBackend() : createIptablesBackend({ mode: flags.mode });
  const services = Array.from({ length: n }, (_, i) => apiService(i, { ports: ONE_PORT }));
  const started = performance.now();
  const engine = new RulesetEngine();
  engine.setNode(trimNode(nodeObject(POD_CIDR)));
  for (let i = 0; i < n; i++) {
    engine.setService(`${NAMESPACE}/${serviceName(i)}`, trimService(services[i]));
  }
  const applied = await backend.apply(engine.result().ruleset, { full: true });
  const seconds = (performance.now() - started) / 1000;
  if (applied.changedMappings !== n) throw new Error(`applied ${applied.changedMappings} of ${n}`);
  return { seconds: round(seconds, 3) };
}

await benchmarkEntry(import.meta.url, measureOriginalMethod, ({ job, n, backend }) =>
  job === "original" ? original(n) : ours(n, backend),
);
