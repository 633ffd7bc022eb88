// Memory of `ipvs-node-controller run` with 10,000 LoadBalancer Services (3 ports each) on a real
// kube-apiserver: creates them, starts the controller in a throwaway network namespace, waits until
// every mapping is in the kernel, and prints the process's resident memory.
//
//   node packages/controller/bench/rss-10k.mjs [count]      (root; after scripts/setup.sh)

import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  bridgeIntoNamespace,
  createTopology,
  httpGet,
  startTestApiServer,
} from "@ipvs-node-controller/test-support";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";

const count = Number(process.argv[2] ?? 10_000);
const cli = fileURLToPath(new URL("../bundle/ipvs-node-controller.mjs", import.meta.url));

/** Bytes of a "Name:   N kB" line, as /proc/PID/status and smaps_rollup write them. */
const kernelBytes = (text, name) =>
  Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1]) * 1024;

async function inBatches(total, concurrency, work) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await work(next++);
    }),
  );
}

// Local policy allocates a health-check node port per Service: widen the range for 10k of them.
const api = await startTestApiServer({
  extraApiServerArgs: ["--service-node-port-range=20000-65000"],
});
const topology = await createTopology({ prefix: "rss" });
let controller;
try {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(api.kubeconfigPath);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const started = performance.now();
  await inBatches(count, 16, async (i) => {
    const name = `svc-${i}`;
    await core.createNamespacedService({
      namespace: "default",
      body: {
        metadata: { name, labels: { app: name, tier: "bench" } },
        spec: {
          type: "LoadBalancer",
          allocateLoadBalancerNodePorts: false,
          externalTrafficPolicy: "Local",
          selector: { app: name },
          ports: [
            { name: "http", port: 80, protocol: "TCP", targetPort: 8080 },
            { name: "https", port: 443, protocol: "TCP", targetPort: 8443 },
            { name: "quic", port: 443, protocol: "UDP", targetPort: 8443 },
          ],
        },
      },
    });
    // A JSON patch, the client's default patch type, setting the status the way MetalLB would.
    const ip = `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    await core.patchNamespacedServiceStatus({
      namespace: "default",
      name,
      body: [
        { op: "add", path: "/status/loadBalancer", value: { ingress: [{ ip, ipMode: "VIP" }] } },
      ],
    });
  });
  console.log(
    `created ${count} Services with LB status in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );

  const bridge = await bridgeIntoNamespace(topology.namespaces.node, {
    host: "127.0.0.1",
    port: Number(new URL(api.serverUrl).port),
  });
  const metrics = async () =>
    (await httpGet(topology.runner("node"), "http://127.0.0.1:10266/metrics")).body;
  const metric = (text, name) => Number(new RegExp(`^${name} ([\\d.e+]+)`, "m").exec(text)?.[1]);
  const mib = (bytes) => (bytes / 1024 / 1024).toFixed(1);
  // The same controller under a few V8 heap settings (NODE_OPTIONS, as a DaemonSet would set it).
  for (const nodeOptions of (process.env.VARIANTS ?? "|--max-old-space-size=64").split("|")) {
    const t0 = performance.now();
    controller = spawn(
      "ip",
      [
        "netns",
        "exec",
        topology.namespaces.node,
        process.execPath,
        ...nodeOptions.split(" ").filter(Boolean),
        ...(process.env.HEAP_SNAPSHOT
          ? ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${process.env.HEAP_SNAPSHOT}`]
          : []),
        cli,
        "run",
        "--backend=nft",
        `--kubeconfig=${api.kubeconfigPath}`,
        "--node-name=bench",
        "--log-level=warn",
        "--metrics-bind-address=127.0.0.1:10266",
        "--health-probe-bind-address=0",
      ],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
    const want = `ipvs_node_controller_mappings{family="ipv4"} ${count * 3}`;
    while (!(await metrics()).includes(want)) {
      if (performance.now() - t0 > 300_000)
        throw new Error(
          `the controller did not program every mapping in 5 minutes; last metrics:\n${(
            await metrics()
          )
            .split("\n")
            .filter((line) => line.startsWith("ipvs_"))
            .join("\n")}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const ready = ((performance.now() - t0) / 1000).toFixed(1);
    // Let a few syncs and garbage collections pass before reading the steady state.
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    const status = await readFile(`/proc/${controller.pid}/status`, "utf8");
    const text = await metrics();
    const fullSync = metric(
      text,
      'ipvs_node_controller_sync_duration_seconds_sum\\{mode="full"\\}',
    );
    console.log(
      `node ${nodeOptions || "(defaults)"}: ${count * 3} mappings in the kernel ${ready} s after start; ` +
        `RSS ${mib(kernelBytes(status, "VmRSS"))} MiB (peak ${mib(kernelBytes(status, "VmHWM"))} MiB), V8 heap used ` +
        `${mib(metric(text, "nodejs_heap_size_used_bytes"))} MiB of ${mib(metric(text, "nodejs_heap_size_total_bytes"))} MiB; ` +
        `first full sync ${(fullSync * 1000).toFixed(0)} ms`,
    );
    // Where the resident memory is: pages mapped from files (node, libnode, ICU and the other
    // libraries' code and data) and anonymous pages (V8's heap spaces, external memory, the rest:
    // malloc, thread stacks, V8's own structures).
    const rollup = await readFile(`/proc/${controller.pid}/smaps_rollup`, "utf8");
    const rolled = (name) => kernelBytes(rollup, name);
    // prom-client's series, one per V8 space: space="new", "old", "code", "large_object", …
    const spaces = [
      ...text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="([^"]+)"\} ([\d.e+]+)$/gm),
    ].map(([, name, bytes]) => [name, Number(bytes)]);
    const heapCommitted = spaces.reduce((sum, [, bytes]) => sum + bytes, 0);
    const external = metric(text, "nodejs_external_memory_bytes");
    const anonymous = rolled("Anonymous");
    console.log(
      `  RSS ${mib(rolled("Rss"))} MiB = files ${mib(rolled("Rss") - anonymous)} MiB + anonymous ` +
        `${mib(anonymous)} MiB; V8 heap committed ${mib(heapCommitted)} MiB ` +
        `(${spaces.map(([name, bytes]) => `${name} ${mib(bytes)}`).join(", ")}), external ` +
        `${mib(external)} MiB, other anonymous ${mib(anonymous - heapCommitted - external)} MiB`,
    );
    if (process.env.HEAP_SNAPSHOT) {
      // Which objects stay alive: V8 writes a snapshot (after a full GC) on SIGUSR2.
      controller.kill("SIGUSR2");
      await new Promise((resolve) => setTimeout(resolve, 20_000));
    }
    controller.kill("SIGTERM");
    await new Promise((resolve) => controller.once("exit", resolve));
    controller = undefined;
  }
  await bridge.stop();
} finally {
  controller?.kill("SIGTERM");
  await topology.destroy();
  await api.stop();
}
