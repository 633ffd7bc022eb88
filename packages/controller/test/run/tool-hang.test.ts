/**
 * A kernel tool that never exits, on a real `ipvs-node-controller run` in a node namespace against
 * a real API server:
 *
 * - nft: a stand-in given with `--nft-path` that runs the real nft until a switch is set, then
 *   becomes a process that ignores SIGTERM and never exits (so only the SIGKILL that follows the
 *   timeout ends it);
 * - iptables: the real `iptables-legacy-restore --noflush -w` waiting on an xtables lock that
 *   another process holds, which is how it hangs on a real node.
 *
 * Each must be killed after `--tool-timeout`, the sync must fail and be retried with backoff, no
 * process may be left behind (counted in the namespace, orphans included), the failure must show in
 * the metrics, the log, readiness and, past its bound, liveness, the old rules must keep working,
 * and the controller must converge once the tool works again.
 */
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  envtestTestsEnabled,
  eventually,
  kernelTestsEnabled,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import {
  type ControllerProcess,
  LEVEL,
  type LogEntry,
  processesInNamespace,
  startControllerProcess,
} from "../support/controller-process.js";
import { createNodeFixture, type NodeFixture } from "../support/node-fixture.js";
import { privateXtablesLock, type XtablesLock } from "./held-xtables-lock.js";

const enabled =
  (await kernelTestsEnabled("kernel tool hang tests")) &&
  (await envtestTestsEnabled("kernel tool hang tests")) !== undefined;

const TOOL_TIMEOUT_MS = 2000;
const SYNC_PERIOD_MS = 4000;
/** The sync loop's default retry: 1 s doubling up to the sync period. */
const EXPECTED_RETRY_DELAYS = [1000, 2000, 4000];

/** How one backend's tool is made to hang, and how its hung processes are recognised. */
interface HangScenario {
  readonly backend: "nft" | "iptables";
  /** Service names, IPs and the node name, distinct per scenario. */
  readonly prefix: string;
  readonly lb: readonly [string, string];
  readonly cluster: readonly [string, string];
  /** Prepares what the scenario needs; returns extra flags and environment of the controller. */
  setUp(): Promise<{ args: string[]; env: Record<string, string> }>;
  /** From now on the tool hangs. */
  hang(): Promise<void>;
  /** From now on it works again. */
  release(): Promise<void>;
  /** Whether a process of the node namespace is a hung tool. */
  isHungTool(command: string): boolean;
  tearDown(): Promise<void>;
}

function nftScenario(): HangScenario {
  let dir = "";
  // argv[0] of the hung process: unique, so that nothing else is ever counted.
  const marker = `hung-nft-${process.pid}`;
  return {
    backend: "nft",
    prefix: "hangn",
    lb: ["192.0.2.10", "192.0.2.11"],
    cluster: ["10.96.0.10", "10.96.0.11"],
    async setUp() {
      dir = await mkdtemp(join(tmpdir(), "hang-nft-"));
      const script = join(dir, "nft");
      await writeFile(
        script,
        [
          "#!/bin/bash",
          "# The real nft, unless the switch file exists: then a process that ignores SIGTERM",
          "# and never exits, as a tool stuck in the kernel would.",
          'if [[ -e "$(dirname "$0")/hang" ]]; then',
          "  trap '' TERM",
          `  exec -a ${marker} sleep 3600`,
          "fi",
          'exec nft "$@"',
          "",
        ].join("\n"),
      );
      await chmod(script, 0o755);
      return { args: [`--nft-path=${script}`], env: {} };
    },
    async hang() {
      await writeFile(join(dir, "hang"), "");
    },
    async release() {
      await rm(join(dir, "hang"), { force: true });
    },
    isHungTool: (command) => command.startsWith(`${marker} `),
    async tearDown() {
      if (dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

function iptablesScenario(): HangScenario {
  let lock: XtablesLock | undefined;
  return {
    backend: "iptables",
    prefix: "hangi",
    lb: ["192.0.2.20", "192.0.2.21"],
    cluster: ["10.96.0.20", "10.96.0.21"],
    async setUp() {
      lock = await privateXtablesLock();
      return { args: ["--iptables-mode=legacy"], env: { ...lock.env } };
    },
    // Someone else (kube-proxy, an administrator) holds the lock and does not let go.
    hang: async () => lock?.hold(),
    release: async () => lock?.release(),
    isHungTool: (command) => command.startsWith("iptables-legacy-restore"),
    tearDown: async () => lock?.dispose(),
  };
}

/** Watches the namespace for hung tools: how many at once at most, and which pids were seen. */
function startToolCensus(namespace: string, isHungTool: (command: string) => boolean) {
  const seen = new Set<number>();
  let maxAtOnce = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      const hung = (await processesInNamespace(namespace)).filter((p) => isHungTool(p.command));
      for (const p of hung) seen.add(p.pid);
      maxAtOnce = Math.max(maxAtOnce, hung.length);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return {
    seen,
    maxAtOnce: () => maxAtOnce,
    async stop() {
      running = false;
      await done;
    },
  };
}

const errorMessage = (entry: LogEntry) => (entry.err as { message?: string } | undefined)?.message;

describe.skipIf(!enabled)("a kernel tool that hangs", () => {
  let api: TestApiServer;

  beforeAll(async () => {
    api = await startTestApiServer();
  }, 180_000);

  afterAll(async () => {
    await api?.stop();
  }, 60_000);

  describe.each([nftScenario(), iptablesScenario()])("with --backend $backend", (scenario) => {
    let node: NodeFixture;
    let controller: ControllerProcess | undefined;
    const [oldName, newName] = [`${scenario.prefix}-web`, `${scenario.prefix}-new`];

    beforeAll(async () => {
      node = await createNodeFixture(api, {
        prefix: scenario.prefix,
        nodeName: `${scenario.prefix}-node`,
        services: [
          { name: oldName, clusterIP: scenario.cluster[0], lbIP: scenario.lb[0] },
          { name: newName, clusterIP: scenario.cluster[1], lbIP: scenario.lb[1] },
        ],
      });
      await node.createService({
        name: oldName,
        clusterIP: scenario.cluster[0],
        lbIP: scenario.lb[0],
      });
      await node.setIngress(oldName, scenario.lb[0]);
      await node.createService({
        name: newName,
        clusterIP: scenario.cluster[1],
        lbIP: scenario.lb[1],
      });
    }, 120_000);

    afterAll(async () => {
      await controller?.stop(5000);
      await scenario.release().catch(() => {});
      await scenario.tearDown();
      await node?.destroy();
    }, 60_000);

    it("is killed after --tool-timeout, retried with backoff, leaves nothing behind, shows, and recovers", async () => {
      const { args, env } = await scenario.setUp();
      controller = startControllerProcess({
        namespace: node.namespace,
        args: [
          `--backend=${scenario.backend}`,
          ...args,
          `--kubeconfig=${api.kubeconfigPath}`,
          `--node-name=${node.nodeName}`,
          `--tool-timeout=${TOOL_TIMEOUT_MS}ms`,
          `--sync-period=${SYNC_PERIOD_MS}ms`,
          "--min-sync-period=100ms",
        ],
        env,
      });
      const running = controller;
      onTestFailed(() => {
        console.log(`controller log (${scenario.backend}):\n${running.tail()}`);
      });
      await eventually("the old Service is reachable", () =>
        node.answers(scenario.lb[0], 80, oldName),
      );
      await eventually(
        "the controller is ready",
        async () => (await running.health("/readyz")).status === 200,
      );
      const logBefore = running.entries().length;
      const failuresBefore = await running.metric("ipvs_node_controller_sync_failures_total");

      const figures = {
        failures: 0,
        delays: [] as unknown[],
        unhealthyAfterMs: 0,
        steadyProbes: 0,
        convergedAfterMs: 0,
      };
      await scenario.hang();
      const census = startToolCensus(node.namespace, scenario.isHungTool);
      try {
        await hangAndRecover();
      } finally {
        await census.stop();
        await scenario.release();
      }
      // Each attempt's process was gone before the next one started, and each was a new one.
      expect(census.maxAtOnce()).toBe(1);
      expect(census.seen.size).toBeGreaterThanOrEqual(3);
      const alive = (await processesInNamespace(node.namespace)).map((p) => p.pid);
      expect([...census.seen].filter((pid) => alive.includes(pid))).toEqual([]);
      expect(running.child.exitCode).toBeNull();
      console.log(
        `${scenario.backend}: ${figures.failures} syncs killed after ${TOOL_TIMEOUT_MS} ms, retry delays ` +
          `${figures.delays.join(", ")} ms; liveness 503 ${figures.unhealthyAfterMs} ms after the change, then ${figures.steadyProbes} ` +
          `probes over ${2 * SYNC_PERIOD_MS} ms all 503; ` +
          `${census.seen.size} hung processes seen, at most ${census.maxAtOnce()} at once, none left; ` +
          `converged ${figures.convergedAfterMs} ms after the tool worked again`,
      );

      async function hangAndRecover() {
        // A change that now cannot reach the kernel.
        await node.setIngress(newName, scenario.lb[1]);
        const changedAt = Date.now();
        // Probed from the start, in parallel with the checks below.
        const unhealthy = eventually(
          "liveness fails once the change has waited past twice the sync period",
          async () => (await running.health("/healthz")).status === 503,
          60_000,
          100,
        ).then(() => Date.now() - changedAt);
        unhealthy.catch(() => {}); // awaited below; a failure before that must not go unhandled
        const failed = () =>
          running
            .entries()
            .slice(logBefore)
            .filter((e) => e.level === LEVEL.error && e.msg.startsWith("sync failed"));
        await eventually(
          "three syncs failed on the time limit",
          () => failed().length >= 3,
          60_000,
          100,
        );
        for (const entry of failed()) {
          expect(errorMessage(entry)).toMatch(
            new RegExp(`did not finish within ${TOOL_TIMEOUT_MS} ms and was killed`),
          );
        }
        expect(
          failed()
            .slice(0, 3)
            .map((e) => e.retryInMs),
        ).toEqual(EXPECTED_RETRY_DELAYS);
        expect(
          await running.metric("ipvs_node_controller_sync_failures_total"),
        ).toBeGreaterThanOrEqual(failuresBefore + 3);
        const ready = await running.health("/readyz");
        expect(ready.status).toBe(503);
        expect(ready.body).toMatch(/last sync failed: .* did not finish within 2000 ms/);
        figures.unhealthyAfterMs = await unhealthy;
        // Never before the bound; and from then on steadily, through the pauses between attempts
        // and the attempts themselves (each lasts the time limit plus the kill's grace).
        expect(figures.unhealthyAfterMs).toBeGreaterThan(2 * SYNC_PERIOD_MS);
        const probes: string[] = [];
        const until = Date.now() + 2 * SYNC_PERIOD_MS;
        while (Date.now() < until) {
          const answer = await running.health("/healthz");
          probes.push(`${answer.status} ${answer.body.trim()}`);
        }
        const changeWaited = new RegExp(
          `^503 a change has waited \\d+ ms \\(limit ${2 * SYNC_PERIOD_MS} ms\\)$`,
        );
        expect(probes.filter((probe) => !changeWaited.test(probe))).toEqual([]);
        figures.steadyProbes = probes.length;
        // The previous rules stay in force; the new one has not arrived.
        expect(await node.answers(scenario.lb[0], 80, oldName)).toBe(true);
        expect(await node.refused(scenario.lb[1], 80)).toBe(true);
        await scenario.release();
        const releasedAt = Date.now();
        figures.failures = failed().length;
        figures.delays = failed().map((e) => e.retryInMs);
        await eventually(
          "the change reaches the kernel once the tool works again",
          () => node.answers(scenario.lb[1], 80, newName),
          30_000,
        );
        figures.convergedAfterMs = Date.now() - releasedAt;
        await eventually(
          "ready again",
          async () => (await running.health("/readyz")).status === 200,
        );
        await eventually(
          "alive again",
          async () => (await running.health("/healthz")).status === 200,
        );
        await eventually(
          "no hung tool is left in the namespace",
          async () =>
            !(await processesInNamespace(node.namespace)).some((p) =>
              scenario.isHungTool(p.command),
            ),
          10_000,
        );
      }
    }, 150_000);
  });
});
