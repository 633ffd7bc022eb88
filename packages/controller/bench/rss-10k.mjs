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
  startTestApiServer,
} from "@ipvs-node-controller/test-support";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";

const count = Number(process.argv[2] ?? 10_000);
const cli = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

async function inBatches(total, concurrency, work) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await work(next++);
    }),
  );
}

const api = await startTestApiServer();
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
    await core.patchNamespacedServiceStatus(
      {
        namespace: "default",
        name,
        body: {
          status: {
            loadBalancer: {
              ingress: [
                { ip: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, ipMode: "VIP" },
              ],
            },
          },
        },
      },
      { headers: { "Content-Type": "application/merge-patch+json" } },
    );
  });
  console.log(
    `created ${count} Services with LB status in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );

  const bridge = await bridgeIntoNamespace(topology.namespaces.node, {
    host: "127.0.0.1",
    port: Number(new URL(api.serverUrl).port),
  });
  const t0 = performance.now();
  controller = spawn(
    "ip",
    [
      "netns",
      "exec",
      topology.namespaces.node,
      process.execPath,
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
  const metrics = async () =>
    (
      await topology.runner("node")(process.execPath, [
        "-e",
        'fetch("http://127.0.0.1:10266/metrics").then(async r => process.stdout.write(await r.text()), () => {})',
      ])
    ).stdout;
  const want = `ipvs_node_controller_mappings{family="ipv4"} ${count * 3}`;
  while (!(await metrics()).includes(want)) {
    if (performance.now() - t0 > 300_000)
      throw new Error("the controller did not program every mapping in 5 minutes");
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  console.log(
    `controller start to ${count * 3} mappings in the kernel: ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  // Let a few syncs and a garbage collection pass before reading the steady state.
  await new Promise((resolve) => setTimeout(resolve, 5000));
  const status = await readFile(`/proc/${controller.pid}/status`, "utf8");
  const field = (name) =>
    Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN) / 1024;
  console.log(`RSS now ${field("VmRSS").toFixed(1)} MiB, peak ${field("VmHWM").toFixed(1)} MiB`);
  const text = await metrics();
  const duration = /ipvs_node_controller_sync_duration_seconds_sum\{mode="full"\} ([\d.]+)/.exec(
    text,
  )?.[1];
  console.log(`first full sync (compute + apply): ${(Number(duration) * 1000).toFixed(0)} ms`);
  await bridge.stop();
} finally {
  controller?.kill("SIGTERM");
  await topology.destroy();
  await api.stop();
}
