/**
 * The API server gone for five minutes, with a real `ipvs-node-controller run` in a node namespace
 * and real traffic from a pod namespace:
 *
 * - the rules stay in force (the pod keeps reaching the Service through its LB IP);
 * - drift is still repaired from the cache (our table, flushed by someone else mid-outage, is back
 *   at the next periodic verify);
 * - liveness holds (a kubelet must not restart a controller that only lost the API server, which
 *   would leave it without a cache and unable to repair anything);
 * - `ipvs_node_controller_watch_failing{resource}` is 1 and the log says the watch fails;
 * - once the server is back, a change made right after its return is applied by one sync.
 *
 * The outage lasts `OUTAGE_SECONDS` (default 300); shorter values are for trying the test out.
 */
import {
  envtestTestsEnabled,
  eventually,
  kernelTestsEnabled,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type ControllerProcess,
  LEVEL,
  type LogEntry,
  startControllerProcess,
} from "../support/controller-process.js";
import { createNodeFixture, type NodeFixture } from "../support/node-fixture.js";

const enabled =
  (await kernelTestsEnabled("API server outage tests")) &&
  (await envtestTestsEnabled("API server outage tests")) !== undefined;

const OUTAGE_MS = Number(process.env.OUTAGE_SECONDS ?? 300) * 1000;
const SYNC_PERIOD_MS = 10_000;

const WEB = { name: "outage-web", clusterIP: "10.96.0.50", lbIP: "192.0.2.50" };
/** Gets its LB IP right after the API server returns. */
const LATE = { name: "outage-late", clusterIP: "10.96.0.52", lbIP: "192.0.2.52" };

const watchFailing = (resource: string) =>
  `ipvs_node_controller_watch_failing{resource="${resource}"}`;

describe.skipIf(!enabled)("the API server gone for a long time", () => {
  let api: TestApiServer;
  let node: NodeFixture;
  let controller: ControllerProcess;

  beforeAll(async () => {
    api = await startTestApiServer();
    node = await createNodeFixture(api, {
      prefix: "outage",
      nodeName: "outage-node",
      services: [WEB, LATE],
    });
    await node.createService(WEB);
    await node.setIngress(WEB.name, WEB.lbIP);
    await node.createService(LATE);
    controller = startControllerProcess({
      namespace: node.namespace,
      args: [
        `--kubeconfig=${api.kubeconfigPath}`,
        `--node-name=${node.nodeName}`,
        `--sync-period=${SYNC_PERIOD_MS}ms`,
        "--min-sync-period=100ms",
      ],
    });
  }, 180_000);

  afterAll(async () => {
    await controller?.stop(10_000);
    await node?.destroy();
    await api?.stop();
  }, 60_000);

  afterEach((context) => {
    if (context.task.result?.state === "fail") {
      console.log(`controller log:\n${controller?.tail(60)}`);
    }
  });

  const since = (index: number, predicate: (entry: LogEntry) => boolean) =>
    controller.entries().slice(index).filter(predicate);

  it(
    "keeps the rules, repairs drift from the cache, stays alive, reports the failing watch, and converges after",
    async () => {
      await eventually("web is reachable", () => node.answers(WEB.lbIP, 80, WEB.name), 60_000);
      await eventually("ready", async () => (await controller.health("/readyz")).status === 200);
      expect(await controller.metric(watchFailing("services"))).toBe(0);
      expect(await controller.metric(watchFailing("node"))).toBe(0);

      const logAtStop = controller.entries().length;
      await api.stopApiServer();
      const stoppedAt = Date.now();
      const probes = { traffic: 0, trafficFailed: 0, healthz: 0, healthzFailed: 0 };
      let reported = false;
      let repair: { flushedAt: number; repairedAfterMs: number } | undefined;
      const drifts = () => since(logAtStop, (e) => /drifted/.test(e.msg)).length;

      while (Date.now() - stoppedAt < OUTAGE_MS) {
        const [reachable, healthz] = await Promise.all([
          node.answers(WEB.lbIP, 80, WEB.name),
          controller.health("/healthz"),
        ]);
        probes.traffic += 1;
        if (!reachable) probes.trafficFailed += 1;
        probes.healthz += 1;
        if (healthz.status !== 200) probes.healthzFailed += 1;
        expect(controller.child.exitCode).toBeNull();

        if (!reported && (await controller.metric(watchFailing("services"))) === 1) {
          // Both reflectors have noticed; the log says so, once per retry and resource.
          await eventually(
            "the node watch is reported failing too",
            async () => (await controller.metric(watchFailing("node"))) === 1,
            60_000,
          );
          for (const resource of ["services", "node"]) {
            expect(
              since(
                logAtStop,
                (e) =>
                  e.level === LEVEL.warn &&
                  e.msg === "watch failed; retrying" &&
                  e.resource === resource,
              ).length,
            ).toBeGreaterThan(0);
          }
          reported = true;
        }

        if (repair === undefined && Date.now() - stoppedAt > OUTAGE_MS / 2) {
          // Someone flushes our table while the API server is away: the cache still knows
          // what belongs there.
          const before = drifts();
          const flushed = await node.topology.runner("node")("nft", [
            "flush",
            "table",
            "inet",
            "ipvs-node-controller",
          ]);
          expect(flushed.exitCode).toBe(0);
          const flushedAt = Date.now();
          await eventually(
            "the drift is noticed",
            () => drifts() > before,
            3 * SYNC_PERIOD_MS,
            100,
          );
          await eventually(
            "the flushed rules are back",
            () => node.answers(WEB.lbIP, 80, WEB.name),
            3 * SYNC_PERIOD_MS,
          );
          repair = { flushedAt, repairedAfterMs: Date.now() - flushedAt };
          continue; // The probes of the flush window are not counted.
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }

      expect(reported).toBe(true);
      expect(repair).toBeDefined();
      expect(probes.trafficFailed).toBe(0);
      expect(probes.healthzFailed).toBe(0);
      // Nothing changed, so nothing but the repair was applied.
      expect(since(logAtStop, (e) => e.msg === "rules applied").map((e) => e.mode)).toEqual([
        "full",
      ]);

      // Counted from before the start: the reflectors may reconnect while it is still being
      // awaited.
      const logAtReturn = controller.entries().length;
      await api.startApiServer();
      const returnedAt = Date.now();
      await node.setIngress(LATE.name, LATE.lbIP);
      await eventually(
        "a change made right after the return is applied",
        () => node.answers(LATE.lbIP, 80, LATE.name),
        90_000,
        200,
      );
      const convergedAfterMs = Date.now() - returnedAt;
      // One sync brought it: exactly one apply since the return, carrying exactly that change.
      const applies = since(logAtReturn, (e) => e.msg === "rules applied");
      expect(applies.map((e) => [e.mode, e.changedMappings])).toEqual([["incremental", 1]]);
      for (const resource of ["services", "node"]) {
        await eventually(
          `the ${resource} watch is reported healthy again`,
          async () => (await controller.metric(watchFailing(resource))) === 0,
          60_000,
        );
        const recovered = since(
          logAtReturn,
          (e) => e.msg === "watch recovered" && e.resource === resource,
        );
        expect(recovered).toHaveLength(1);
        expect(recovered[0]?.failedForMs).toBeGreaterThanOrEqual(OUTAGE_MS - 5000);
      }
      expect(await node.answers(WEB.lbIP, 80, WEB.name)).toBe(true);
      expect((await controller.health("/healthz")).status).toBe(200);
      expect((await controller.health("/readyz")).status).toBe(200);

      const restarts = await controller.metric(
        'ipvs_node_controller_watch_restarts_total{resource="services"}',
      );
      console.log(
        `outage of ${OUTAGE_MS / 1000} s: ${probes.traffic} traffic probes and ${probes.healthz} ` +
          `liveness probes, none failed; flushed table repaired ${repair?.repairedAfterMs} ms after ` +
          `the flush; ${restarts} services watch restarts; a change made on return applied ` +
          `${convergedAfterMs} ms after the server was back, by ${applies.length} sync`,
      );
    },
    OUTAGE_MS + 240_000,
  );
});
