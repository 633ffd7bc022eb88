/**
 * Liveness that means something, on a real `ipvs-node-controller run` in a node namespace against a
 * real API server: `/healthz` is OK while the controller starts (here: while the API server cannot
 * be reached, for longer than the liveness bound) and in steady state, answers 503 with the reason
 * once the loop is wedged on a kernel tool that does not return (`iptables-legacy-restore -w` on a
 * held xtables lock, with a `--tool-timeout` far above the bound), and is OK again once the tool
 * returns. A kubelet probing it would restart a wedged controller, and only a wedged one.
 */
import {
  envtestTestsEnabled,
  eventually,
  kernelTestsEnabled,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ControllerProcess, startControllerProcess } from "../support/controller-process.js";
import { createNodeFixture, type NodeFixture } from "../support/node-fixture.js";
import { privateXtablesLock, type XtablesLock } from "./held-xtables-lock.js";

const enabled =
  (await kernelTestsEnabled("liveness tests")) &&
  (await envtestTestsEnabled("liveness tests")) !== undefined;

const SYNC_PERIOD_MS = 2000;
/** The liveness bound: twice the sync period, as kube-proxy's. */
const BOUND_MS = 2 * SYNC_PERIOD_MS;

const WEB = { name: "live-web", clusterIP: "10.96.0.40", lbIP: "192.0.2.40" };
const NEXT = { name: "live-next", clusterIP: "10.96.0.41", lbIP: "192.0.2.41" };

describe.skipIf(!enabled)("liveness of a real controller", () => {
  let api: TestApiServer;
  let node: NodeFixture;
  let lock: XtablesLock;
  let controller: ControllerProcess;

  beforeAll(async () => {
    api = await startTestApiServer();
    node = await createNodeFixture(api, {
      prefix: "live",
      nodeName: "live-node",
      services: [WEB, NEXT],
      deferApiBridge: true,
    });
    await node.createService(WEB);
    await node.setIngress(WEB.name, WEB.lbIP);
    await node.createService(NEXT);
    lock = await privateXtablesLock();
    controller = startControllerProcess({
      namespace: node.namespace,
      args: [
        "--backend=iptables",
        "--iptables-mode=legacy",
        `--kubeconfig=${api.kubeconfigPath}`,
        `--node-name=${node.nodeName}`,
        `--sync-period=${SYNC_PERIOD_MS}ms`,
        "--min-sync-period=100ms",
        // Far above the bound: only liveness can notice the wedge.
        "--tool-timeout=10m",
      ],
      env: lock.env,
    });
  }, 180_000);

  afterAll(async () => {
    await lock?.release();
    await controller?.stop(10_000);
    await lock?.dispose();
    await node?.destroy();
    await api?.stop();
  }, 60_000);

  afterEach((context) => {
    if (context.task.result?.state === "fail") {
      console.log(`controller log:\n${controller?.tail()}`);
    }
  });

  /** Samples both probes for `ms`; returns every answer. */
  async function sample(ms: number): Promise<{ healthz: number; readyz: string }[]> {
    const answers: { healthz: number; readyz: string }[] = [];
    const until = Date.now() + ms;
    while (Date.now() < until) {
      const [healthz, readyz] = await Promise.all([
        controller.health("/healthz"),
        controller.health("/readyz"),
      ]);
      answers.push({ healthz: healthz.status, readyz: `${readyz.status} ${readyz.body.trim()}` });
    }
    return answers;
  }

  it("is OK while starting, even past the bound, as long as the caches have not synced", async () => {
    await eventually(
      "the health server answers",
      async () => (await controller.health("/healthz")).status !== 0,
      30_000,
    );
    const answers = await sample(3 * BOUND_MS);
    expect(answers.length).toBeGreaterThan(3);
    expect(new Set(answers.map((a) => a.healthz))).toEqual(new Set([200]));
    expect(new Set(answers.map((a) => a.readyz))).toEqual(new Set(["503 caches not synced"]));
    console.log(
      `starting: ${answers.length} probes over ${3 * BOUND_MS} ms, all alive, none ready`,
    );
  }, 60_000);

  it("is OK in steady state, through changes and periodic verifies", async () => {
    await node.connectApiServer();
    await eventually("the controller becomes ready", async () => {
      return (await controller.health("/readyz")).status === 200;
    });
    expect(await node.answers(WEB.lbIP, 80, WEB.name)).toBe(true);
    const probes = sample(3 * BOUND_MS);
    await node.setIngress(NEXT.name, NEXT.lbIP);
    const answers = await probes;
    await eventually("the change is applied", () => node.answers(NEXT.lbIP, 80, NEXT.name));
    expect(new Set(answers.map((a) => a.healthz))).toEqual(new Set([200]));
    expect(new Set(answers.map((a) => a.readyz))).toEqual(new Set(["200 ok"]));
    console.log(`steady: ${answers.length} probes over ${3 * BOUND_MS} ms, all alive and ready`);
  }, 60_000);

  it("fails with the reason when the loop is wedged on a tool, and recovers", async () => {
    await lock.hold();
    const wedgedAt = Date.now();
    // A change (the LB withdraws NEXT's address): its sync runs iptables-legacy-restore -w,
    // which now waits for the lock.
    await node.setIngress(NEXT.name);
    await eventually(
      "liveness fails",
      async () => (await controller.health("/healthz")).status === 503,
      30_000,
      200,
    );
    const failedAfterMs = Date.now() - wedgedAt;
    const answer = await controller.health("/healthz");
    expect(answer.status).toBe(503);
    expect(answer.body).toMatch(
      new RegExp(`^a sync has run for \\d+ ms \\(limit ${BOUND_MS} ms\\)`),
    );
    expect(failedAfterMs).toBeGreaterThan(BOUND_MS);
    // Wedged, not broken: the rules in the kernel keep working meanwhile.
    expect(await node.answers(WEB.lbIP, 80, WEB.name)).toBe(true);

    await lock.release();
    const releasedAt = Date.now();
    await eventually(
      "liveness recovers",
      async () => (await controller.health("/healthz")).status === 200,
      30_000,
      200,
    );
    const recoveredAfterMs = Date.now() - releasedAt;
    expect(await node.refused(NEXT.lbIP, 80)).toBe(true);
    await eventually("ready", async () => (await controller.health("/readyz")).status === 200);
    expect(controller.child.exitCode).toBeNull();
    console.log(
      `wedged: /healthz 503 ${failedAfterMs} ms after the change ("${answer.body.trim()}"), ` +
        `200 again ${recoveredAfterMs} ms after the lock was released`,
    );
  }, 90_000);
});
