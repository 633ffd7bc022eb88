/**
 * The short version of the churn soak (`pnpm bench:soak` is the long one): 1,500 LoadBalancer
 * Services on a real API server, 1,200 changes at 20 per second (a minute's worth: IP moves, port
 * changes, label-only writes, deletions, creations), `ipvs-node-controller run` with the nft backend
 * and its default periods in a node namespace.
 *
 * - No lost change: afterwards the nft map holds exactly what the Services ask for (derived
 *   independently of the core), and the periodic verify never found drift, i.e. every incremental
 *   apply was exact.
 * - Bounded memory: the live heap after a forced full collection (through the inspector, so it
 *   does not depend on when the collector last ran) grows by less than a kilobyte per change
 *   between the end of warm-up and the end of the churn.
 *
 * Nothing here depends on time: the work is a fixed number of changes, and a slow machine only
 * takes longer to do it.
 */

import { readFile } from "node:fs/promises";
import {
  AddressPool,
  compareMappings,
  createLoadBalancerServices,
  differenceCount,
  envtestTestsEnabled,
  eventually,
  expectedMappings,
  type KubeClient,
  kernelMappings,
  kernelTestsEnabled,
  kubeClient,
  listServices,
  measureLiveHeap,
  runAtRate,
  ServiceChurn,
  startTestApiServer,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ControllerProcess, startControllerProcess } from "../support/controller-process.js";
import { createNodeFixture, type NodeFixture } from "../support/node-fixture.js";

const enabled =
  (await kernelTestsEnabled("churn tests")) &&
  (await envtestTestsEnabled("churn tests")) !== undefined;

const SERVICES = 1500;
const RATE = 20;
const WARMUP_CHANGES = 200;
const CHANGES = 1200;
const INSPECTOR_PORT = 9229;
/**
 * Live-heap growth allowed over the churn: a kilobyte per change. Without a leak it grows by tens
 * of kilobytes in all; keeping every watched object (about 2.8 KiB each) exceeds it threefold.
 */
const HEAP_GROWTH_LIMIT = CHANGES * 1024;

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

describe.skipIf(!enabled)("churn", () => {
  let api: TestApiServer;
  let node: NodeFixture;
  let topology: Topology;
  let client: KubeClient;
  let controller: ControllerProcess;

  beforeAll(async () => {
    api = await startTestApiServer();
    node = await createNodeFixture(api, { prefix: "churn", nodeName: "churn-node", services: [] });
    topology = node.topology;
    client = kubeClient(api);
  }, 180_000);

  afterAll(async () => {
    await controller?.stop(10_000);
    client?.close();
    await node?.destroy();
    await api?.stop();
  }, 60_000);

  afterEach((context) => {
    if (context.task.result?.state === "fail") {
      console.log(`controller log:\n${controller?.tail(30)}`);
    }
  });

  it("loses no change and keeps its live heap bounded", async () => {
    const pool = new AddressPool();
    const names = await createLoadBalancerServices(client, { count: SERVICES, pool });
    controller = startControllerProcess({
      namespace: node.namespace,
      nodeArgs: ["--max-semi-space-size=2", `--inspect=127.0.0.1:${INSPECTOR_PORT}`],
      args: ["--backend=nft", `--kubeconfig=${api.kubeconfigPath}`, `--node-name=${node.nodeName}`],
    });
    const runner = topology.runner("node");
    const differences = async () =>
      compareMappings(expectedMappings(await listServices(client)), await kernelMappings(runner));
    await eventually(
      "every Service is in the kernel",
      async () => differenceCount(await differences()) === 0,
      180_000,
      1000,
    );
    expect((await kernelMappings(runner)).size).toBe(SERVICES * 3);

    const churn = new ServiceChurn(client, names, { pool, seed: 7 });
    await runAtRate(WARMUP_CHANGES, RATE, () => churn.step());
    await eventually(
      "the warm-up changes are in the kernel",
      async () => differenceCount(await differences()) === 0,
      60_000,
      500,
    );
    const heapBefore = await measureLiveHeap(runner, INSPECTOR_PORT);
    const rssBefore = await rss(controller.pid);

    const pace = await runAtRate(CHANGES, RATE, () => churn.step());
    let last = await differences();
    await eventually(
      "the kernel equals what the Services ask for",
      async () => {
        last = await differences();
        return differenceCount(last) === 0;
      },
      60_000,
      500,
    ).catch((error: Error) => {
      throw new Error(
        `${error.message}; missing ${last.missing.slice(0, 5)}, extra ${last.extra.slice(0, 5)}, wrong ${last.wrong.slice(0, 5)}`,
      );
    });
    const heapAfter = await measureLiveHeap(runner, INSPECTOR_PORT);
    const rssAfter = await rss(controller.pid);

    const entries = controller.entries();
    expect(entries.filter((e) => /drifted/.test(e.msg))).toEqual([]);
    expect(entries.filter((e) => e.msg.startsWith("sync failed"))).toEqual([]);
    // Changes were made and refused by nobody: the run exercised what it claims to.
    expect(churn.counts.failed).toBe(0);
    for (const kind of ["move", "ports", "label", "delete", "create"] as const) {
      expect(churn.counts[kind]).toBeGreaterThan(0);
    }
    const growth = heapAfter.usedBytes - heapBefore.usedBytes;
    console.log(
      `churn: ${WARMUP_CHANGES} + ${CHANGES} changes (${JSON.stringify(churn.counts)}) at ` +
        `${pace.achievedPerSecond.toFixed(1)}/s on ${SERVICES} Services, no lost change; live heap ` +
        `${mib(heapBefore.usedBytes)} -> ${mib(heapAfter.usedBytes)} (${growth >= 0 ? "+" : ""}${(growth / 1024).toFixed(0)} KiB); ` +
        `RSS ${mib(rssBefore)} -> ${mib(rssAfter)}`,
    );
    expect(growth).toBeLessThan(HEAP_GROWTH_LIMIT);
  }, 600_000);
});

async function rss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
}
