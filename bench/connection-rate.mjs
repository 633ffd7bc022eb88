// Per packet: new TCP connections per second from a pod to the LoadBalancer IP of the last
// Service, with that one Service in the rules and with N Services (3 ports each) in the rules.
// Only the first packet of a connection goes through the nat hooks, so the rate of new
// connections is where the cost of the rules per packet shows. And the cost of our rules for a
// packet they do not translate: new connections from the pod straight to the cluster IP, with no
// rules of ours at all and with N Services' rules.
//
// The node namespace binds the LB IP and the cluster IP (as kube-proxy's IPVS mode binds them on
// kube-ipvs0), a listener on the cluster IP stands in for IPVS, and the rules are applied with the
// backend directly. Clients in the pod namespace close every connection with a RST, so neither
// side keeps a TIME_WAIT socket and the ephemeral ports never run out. The two cases alternate,
// so that a change in the machine's load hits both alike.
//
//   node bench/connection-rate.mjs [--quick] [--connection-services 10000] [--backends nft]

import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import { RulesetEngine, trimNode, trimService } from "@ipvs-node-controller/core";
import { ADDRESS_PLAN, createTopology } from "@ipvs-node-controller/test-support";
import { defer, startProcess } from "./lib/cleanup.mjs";
import { log, sleep } from "./lib/log.mjs";
import { benchmarkEntry, tempDir } from "./lib/namespace.mjs";
import { backendFlags } from "./lib/options.mjs";
import {
  apiService,
  clusterIP,
  lbIP,
  NAMESPACE,
  nodeObject,
  serviceName,
} from "./lib/services.mjs";
import { median, round } from "./lib/stats.mjs";

const PORT = 80;

// Accepts and holds each connection until the client resets it.
const LISTENER = `
const net = require("node:net");
const [host, port] = JSON.parse(process.argv[1]);
const server = net.createServer((socket) => { socket.on("error", () => socket.destroy()); });
server.listen({ host, port, backlog: 4096 }, () => process.stdout.write("ready\\n"));
`;

// Opens connections with \`concurrency\` in flight for \`seconds\` (after a short warm-up), resets
// each one as soon as it is established, and prints how many were established.
const CLIENT = `
const net = require("node:net");
const [host, port, seconds, concurrency] = JSON.parse(process.argv[1]);
let counting = false, stopped = false, connects = 0, errors = 0;
const codes = {};
function open() {
  if (stopped) return;
  let settled = false;
  const socket = net.connect({ host, port });
  const next = () => { if (!settled) { settled = true; setImmediate(open); } };
  socket.once("connect", () => { if (counting) connects++; socket.resetAndDestroy(); next(); });
  socket.on("error", (e) => {
    if (!settled && counting) { errors++; codes[e.code] = (codes[e.code] || 0) + 1; }
    socket.destroy();
    next();
  });
}
for (let i = 0; i < concurrency; i++) open();
setTimeout(() => {
  counting = true;
  const started = process.hrtime.bigint();
  setTimeout(() => {
    counting = false;
    stopped = true;
    const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(JSON.stringify({ connects, errors, codes, seconds: elapsed }));
    process.exit(0);
  }, seconds * 1000);
}, 300);
`;

function kernelBackend(name, runner) {
  const flags = backendFlags(name);
  return flags.backend === "nft"
    ? createNftBackend({ runner })
    : createIptablesBackend({ mode: flags.mode, runner });
}

/** The rulesets of Services `from..to-1`, computed as the controller computes them. */
function rulesetOf(from, to) {
  const engine = new RulesetEngine();
  engine.setNode(trimNode(nodeObject(ADDRESS_PLAN.podCIDR.ipv4)));
  for (let i = from; i < to; i++) {
    engine.setService(`${NAMESPACE}/${serviceName(i)}`, trimService(apiService(i)));
  }
  return engine.result().ruleset;
}

export async function measureConnectionRate(options) {
  const n = options.connectionServices;
  const last = n - 1;
  const topology = await createTopology({ prefix: "bench-conn" });
  defer(() => topology.destroy());
  await topology.addNodeAddresses([lbIP(last), clusterIP(last)]);
  const listener = startProcess("ip", [
    "netns",
    "exec",
    topology.namespaces.node,
    process.execPath,
    "-e",
    LISTENER,
    JSON.stringify([clusterIP(last), PORT]),
  ]);
  await new Promise((resolve, reject) => {
    listener.stdout.once("data", resolve);
    listener.exited.then(() => reject(new Error("the listener exited")));
  });
  const cases = { 1: rulesetOf(last, n), [n]: rulesetOf(0, n) };
  const env = { ...process.env, XTABLES_LOCKFILE: `${tempDir("xtables")}/xtables.lock` };

  const client = async (target = lbIP(last)) => {
    const child = startProcess(
      "ip",
      [
        "netns",
        "exec",
        topology.namespaces.pod,
        process.execPath,
        "-e",
        CLIENT,
        JSON.stringify([target, PORT, options.connectionSeconds, options.connectionConcurrency]),
      ],
      { env },
    );
    let stdout = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    const { code } = await child.exited;
    await child.stop();
    if (code !== 0) throw new Error(`the client exited with ${code}`);
    const result = JSON.parse(stdout);
    return { ...result, perSecond: result.connects / result.seconds };
  };

  const results = {};
  let previous;
  for (const name of options.backends) {
    const runner = topology.runner("node");
    // The other backends' rules go first: only one backend's rules are ever in the path.
    await previous?.cleanup();
    const backend = kernelBackend(name, runner);
    previous = backend;
    const runs = { 1: [], [n]: [] };
    const unmatchedRuns = { none: [], [n]: [] };
    // One run that counts for nothing: the first connections of a namespace pay for setting up
    // conntrack and NAT state.
    await backend.apply(cases[1]);
    await client();
    for (let run = 0; run < options.connectionRuns; run++) {
      for (const size of [1, n]) {
        await backend.apply(cases[size]);
        await sleep(200);
        runs[size].push(await client());
      }
      // A packet the rules do not translate: to the cluster IP, with and without our rules.
      await sleep(200);
      unmatchedRuns[n].push(await client(clusterIP(last)));
      await backend.cleanup();
      await sleep(200);
      unmatchedRuns.none.push(await client(clusterIP(last)));
    }
    const summary = (size, from = runs) => {
      const list = from[size];
      return {
        perSecond: Math.round(median(list.map((r) => r.perSecond))),
        runs: list.map((r) => Math.round(r.perSecond)),
        errors: list.reduce((sum, r) => sum + r.errors, 0),
      };
    };
    results[name] = { 1: summary(1), [n]: summary(n) };
    results[name].ratio = round(results[name][n].perSecond / results[name][1].perSecond, 3);
    const unmatched = { none: summary("none", unmatchedRuns), [n]: summary(n, unmatchedRuns) };
    results[name].unmatched = {
      ...unmatched,
      ratio: round(unmatched[n].perSecond / unmatched.none.perSecond, 3),
    };
    log(
      "connections",
      `${name}: ${results[name][1].perSecond}/s with 1 Service, ${results[name][n].perSecond}/s ` +
        `with ${n} (${(results[name].ratio * 100).toFixed(1)} %); to the cluster IP ` +
        `${unmatched.none.perSecond}/s without our rules, ${unmatched[n].perSecond}/s with ${n} ` +
        `(${(results[name].unmatched.ratio * 100).toFixed(1)} %)`,
    );
  }
  await previous?.cleanup();
  await listener.stop();
  return {
    services: n,
    seconds: options.connectionSeconds,
    runs: options.connectionRuns,
    concurrency: options.connectionConcurrency,
    ...results,
  };
}

await benchmarkEntry(import.meta.url, measureConnectionRate);
