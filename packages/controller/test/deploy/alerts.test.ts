/**
 * The chart's alert rules (files/alerts.yaml, as the chart renders them into its PrometheusRule),
 * unit-tested with `promtool test rules` against series recorded from a real controller: a real
 * `ipvs-node-controller run` in a node namespace against a real API server, scraped every half
 * second while the conditions the alerts are for happen to it for real — its table deleted behind
 * its back, a conflict between two Services, the API server stopped, its kernel tool failing, and
 * a stand-in for the kubelet restarting it while its /healthz fails.
 *
 * Time runs 30 times faster than in a cluster: `--sync-period=1s` stands for the default 30 s,
 * a scrape every 0.5 s for one every 15 s, and each scrape becomes one step of promtool's series.
 * Values that are times (the last successful sync, the process's start) are moved onto the same
 * time line. A failed scrape becomes a staleness marker, as in Prometheus; the `up` series is
 * Prometheus' own. Target labels are those the chart's ServiceMonitor gives.
 *
 * Each alert is checked at the end of each phase where its answer does not depend on how long a
 * step took: firing where its condition was made to hold for longer than its `for`, silent where
 * nothing of its kind happened within its window.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createHelm,
  debianToolGate,
  envtestTestsEnabled,
  eventually,
  helmTestsEnabled,
  kernelTestsEnabled,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { execa, type ResultPromise } from "execa";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { type ControllerProcess, startControllerProcess } from "../support/controller-process.js";
import {
  controllerKubeconfig,
  createNodeFixture,
  type NodeFixture,
} from "../support/node-fixture.js";

const CHART_DIR = fileURLToPath(
  new URL("../../../../deploy/helm/ipvs-node-controller", import.meta.url),
);

/** One real second stands for SCALE seconds of a cluster. */
const SCALE = 30;
const SCRAPE_MS = 500;
const STEP_SECONDS = (SCRAPE_MS / 1000) * SCALE;
/**
 * Phases last long enough for every `for:` (10m at most, i.e. 20 s here) with room to spare: one
 * scrape that a busy machine lets fail marks the series stale and starts a `for:` again, as in
 * Prometheus.
 */
const HOLD_MS = 35_000;
const METRICS_PORT = 10266;
const HEALTH_PORT = 10267;
const TABLE = "ipvs-node-controller";

/** The target labels Prometheus gives a series scraped through the chart's ServiceMonitor. */
const TARGET = {
  job: "ipvs-node-controller",
  namespace: "kube-system",
  service: "ipvs-node-controller",
  endpoint: "metrics",
  container: "controller",
  pod: "ipvs-node-controller-7xk2p",
  node: "worker-1",
  instance: `198.51.100.1:${METRICS_PORT}`,
} as const;

const ALERTS = [
  "IpvsNodeControllerSyncFailing",
  "IpvsNodeControllerNotProgramming",
  "IpvsNodeControllerWatchFailing",
  "IpvsNodeControllerRulesDrifting",
  "IpvsNodeControllerServicesSkipped",
] as const;
type AlertName = (typeof ALERTS)[number];

/** Skip reasons the ServicesSkipped alert leaves out (files/alerts.yaml says why). */
const BENIGN_SKIPS = [
  "HostnameOnlyIngress",
  "ProxyIPMode",
  "OptedOut",
  "NotLocalTrafficPolicy",
  "NoIngress",
];

const promtool = await debianToolGate("alerts.test.ts", "promtool");
const helmBinary = promtool ? await helmTestsEnabled("alerts.test.ts") : undefined;
const enabled =
  helmBinary !== undefined &&
  (await kernelTestsEnabled("alerts.test.ts")) &&
  (await envtestTestsEnabled("alerts.test.ts")) !== undefined;

/** One scrape: when, the metrics text (null when the scrape failed) and /healthz's status. */
interface Scrape {
  readonly at: number;
  readonly metrics: string | null;
  readonly healthz: number;
}

// Runs in the node's namespace for the whole suite: a scrape of both endpoints every SCRAPE_MS,
// one JSON line each, whichever controller process is up. A slow answer (a busy machine) is
// waited for, as Prometheus waits up to its scrape timeout; lines may then come out of order.
const SCRAPER = `
const [metricsUrl, healthUrl, interval] = process.argv.slice(1);
const get = async (url) => {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(4 * Number(interval)) });
    return { status: response.status, body: await response.text() };
  } catch {
    return { status: 0, body: "" };
  }
};
setInterval(async () => {
  const at = Date.now();
  const [metrics, healthz] = await Promise.all([get(metricsUrl), get(healthUrl)]);
  process.stdout.write(JSON.stringify({ at, metrics: metrics.status === 200 ? metrics.body : null, healthz: healthz.status }) + "\\n");
}, Number(interval));
`;

/** A time series as promtool reads it: `name{labels}` and one value (or `_`, `stale`) per step. */
interface Series {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly values: string[];
}

const seriesKey = (name: string, labels: Record<string, string>) =>
  `${name}{${Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, value]) => `${key}=${JSON.stringify(value)}`)
    .join(",")}}`;

/** Values that are points in time, moved onto promtool's time line. */
const isTimestamp = (name: string) =>
  name.endsWith("_timestamp_seconds") || name === "process_start_time_seconds";

/**
 * promtool's time of a real moment: step k is the k-th scrape, and between scrapes (and beyond the
 * first and the last) time runs SCALE times faster. A constant such as a process's start time
 * stays one value however irregular the scrapes were.
 */
function promtoolTime(scrapes: readonly Scrape[], realMs: number): number {
  let step = scrapes.findIndex((scrape) => scrape.at > realMs);
  if (step === -1) step = scrapes.length - 1;
  const from = Math.max(step - 1, 0);
  const base = scrapes[from]?.at ?? realMs;
  return from * STEP_SECONDS + ((realMs - base) / 1000) * SCALE;
}

/**
 * promtool's input series from the scrapes: the controller's counters and gauges, the process's
 * start time, and `up`. Histograms are left out: no rule reads them.
 */
function toSeries(scrapes: readonly Scrape[]): Series[] {
  const series = new Map<string, Series>();
  const at = (name: string, labels: Record<string, string>) => {
    const all = { ...TARGET, ...labels };
    const key = seriesKey(name, all);
    let found = series.get(key);
    if (!found) {
      found = { name, labels: all, values: scrapes.map(() => "_") };
      series.set(key, found);
    }
    return found;
  };
  const up = at("up", {});
  scrapes.forEach((scrape, step) => {
    up.values[step] = scrape.metrics === null ? "0" : "1";
    if (scrape.metrics === null) {
      // Prometheus marks every series of a target that failed a scrape stale.
      for (const each of series.values()) {
        const previous = each.values[step - 1];
        if (each !== up && step > 0 && previous !== "_" && previous !== "stale") {
          each.values[step] = "stale";
        }
      }
      return;
    }
    for (const family of parsePrometheusTextFormat(scrape.metrics)) {
      const wanted =
        (family.name.startsWith("ipvs_node_controller_") &&
          (family.type === "COUNTER" || family.type === "GAUGE")) ||
        family.name === "process_start_time_seconds";
      if (!wanted) continue;
      for (const metric of family.metrics) {
        const value = Number(metric.value);
        const shown =
          isTimestamp(family.name) && value > 0 ? promtoolTime(scrapes, value * 1000) : value;
        at(family.name, metric.labels ?? {}).values[step] = String(shown);
      }
    }
  });
  return [...series.values()];
}

/** `{{ $labels.x }}` of an annotation, filled in the way Prometheus fills it. */
function expandAnnotation(template: string, labels: Record<string, string>): string {
  const expanded = template.replace(/\{\{\s*\$labels\.(\w+)\s*\}\}/g, (_, name: string) => {
    return labels[name] ?? "";
  });
  if (expanded.includes("{{")) throw new Error(`a template this test cannot expand: ${template}`);
  return expanded;
}

interface Rule {
  readonly alert: AlertName;
  readonly expr: string;
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
}

describe.skipIf(!enabled)("alert rules against a real controller's metrics", () => {
  let api: TestApiServer;
  let node: NodeFixture;
  let controller: ControllerProcess;
  let scraper: ResultPromise;
  let scratch = "";
  let rules: Rule[] = [];
  let ruleFile = "";
  const scrapes: Scrape[] = [];
  const restarts: number[] = [];
  /** For each alert, at which steps it must fire (with these labels) or be silent. */
  const checks: { step: number; alert: AlertName; firing: Record<string, string>[] }[] = [];
  let enforceLiveness = false;
  let standIn: Promise<void> | undefined;
  let stopping = false;

  const controllerArgs = (kubeconfig: string) => [
    "--backend=nft",
    `--nft-path=${join(scratch, "nft")}`,
    `--kubeconfig=${kubeconfig}`,
    `--node-name=${TARGET.node}`,
    "--sync-period=1s",
    "--min-sync-period=100ms",
    `--metrics-bind-address=127.0.0.1:${METRICS_PORT}`,
    `--health-probe-bind-address=127.0.0.1:${HEALTH_PORT}`,
  ];
  let kubeconfig = "";
  const start = () =>
    startControllerProcess({ namespace: node.namespace, args: controllerArgs(kubeconfig) });

  /** The latest scrape's value of one series; NaN when absent. */
  const latest = (name: string, labels: Record<string, string> = {}): number => {
    const last = scrapes.at(-1)?.metrics;
    if (!last) return Number.NaN;
    const family = parsePrometheusTextFormat(last).find((f) => f.name === name);
    const metric = family?.metrics.find((m) =>
      Object.entries(labels).every(([key, value]) => m.labels?.[key] === value),
    );
    return Number(metric?.value);
  };
  const until = (what: string, probe: () => boolean) => eventually(what, probe, 60_000, 100);
  const hold = () => new Promise((resolve) => setTimeout(resolve, HOLD_MS));

  /** Records what each alert must show at the latest step. */
  const checkpoint = (expected: Partial<Record<AlertName, Record<string, string>[]>>) => {
    const step = scrapes.length - 1;
    for (const [alert, firing] of Object.entries(expected)) {
      checks.push({ step, alert: alert as AlertName, firing });
    }
  };

  /** The kubelet's liveness probe, at the suite's time scale: restarts after 3 failures in a row. */
  async function kubeletStandIn(): Promise<void> {
    let seen = scrapes.length;
    let failures = 0;
    while (!stopping) {
      await new Promise((resolve) => setTimeout(resolve, SCRAPE_MS / 2));
      for (; seen < scrapes.length; seen++) {
        // A 503 only: Node.js takes about a second to start, which this time scale would make
        // half a minute, longer than the kubelet's initial delay; a refused connection while it
        // starts is not counted.
        failures = scrapes[seen]?.healthz === 503 ? failures + 1 : 0;
      }
      if (enforceLiveness && failures >= 3) {
        failures = 0;
        await controller.stop(1000);
        controller = start();
        restarts.push(scrapes.length);
        seen = scrapes.length;
      }
    }
  }

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), "alerts-"));
    // nft, failing while the file "fail" exists, as a kernel refusing every change would.
    writeFileSync(
      join(scratch, "nft"),
      `#!/bin/sh\nif [ -e ${join(scratch, "fail")} ]; then echo 'Error: Could not process rule: Operation not supported' >&2; exit 1; fi\nexec nft "$@"\n`,
      { mode: 0o755 },
    );
    const helm = await createHelm(helmBinary as string);
    try {
      const rendered = await helm.run([
        "template",
        "ipvs-node-controller",
        CHART_DIR,
        "--namespace",
        TARGET.namespace,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
      ]);
      const spec = (parseYaml(rendered.stdout) as { spec: { groups: { rules: Rule[] }[] } }).spec;
      rules = spec.groups.flatMap((group) => group.rules);
      ruleFile = join(scratch, "rules.yaml");
      writeFileSync(ruleFile, stringifyYaml(spec));
    } finally {
      await helm.dispose();
    }

    api = await startTestApiServer();
    node = await createNodeFixture(api, { prefix: "alrt", nodeName: TARGET.node, services: [] });
    kubeconfig = await controllerKubeconfig(api);
    controller = start();
    await controller.waitReady(60_000);
    scraper = execa(
      "ip",
      [
        "netns",
        "exec",
        node.namespace,
        process.execPath,
        "-e",
        SCRAPER,
        `http://127.0.0.1:${METRICS_PORT}/metrics`,
        `http://127.0.0.1:${HEALTH_PORT}/healthz`,
        String(SCRAPE_MS),
      ],
      { reject: false, stdin: "ignore", buffer: false },
    );
    let pending = "";
    scraper.stdout?.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const scrape = JSON.parse(line) as Scrape;
        let at = scrapes.length;
        while (at > 0 && (scrapes[at - 1]?.at ?? 0) > scrape.at) at--;
        scrapes.splice(at, 0, scrape);
      }
    });
    standIn = kubeletStandIn();
  }, 300_000);

  afterAll(async () => {
    stopping = true;
    await standIn;
    scraper?.kill("SIGKILL");
    await controller?.stop(5000);
    await node?.destroy();
    await api?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }, 60_000);

  it("healthy: no alert", async () => {
    await until("a few scrapes", () => scrapes.length >= 4);
    await hold();
    // The controller's own verdict: never unhealthy (a scrape the busy machine let time out
    // says nothing).
    expect(scrapes.filter((scrape) => scrape.healthz === 503)).toEqual([]);
    checkpoint(Object.fromEntries(ALERTS.map((alert) => [alert, []])));
  }, 120_000);

  it("the table deleted behind the controller's back, again and again: RulesDrifting", async () => {
    const fullSyncs = latest("ipvs_node_controller_syncs_total", { mode: "full" });
    const deadline = Date.now() + HOLD_MS;
    while (Date.now() < deadline) {
      const deleted = await node.topology.runner("node")("nft", ["delete", "table", "inet", TABLE]);
      expect(deleted.exitCode, deleted.stderr).toBe(0);
      await eventually(
        "the table is back",
        async () =>
          (await node.topology.runner("node")("nft", ["list", "table", "inet", TABLE])).exitCode ===
          0,
        30_000,
        100,
      );
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
    await until(
      "the scrapes show the repairs",
      () => latest("ipvs_node_controller_syncs_total", { mode: "full" }) >= fullSyncs + 4,
    );
    expect(latest("ipvs_node_controller_sync_failures_total")).toBe(0);
    checkpoint({
      IpvsNodeControllerRulesDrifting: [{ ...TARGET, mode: "full" }],
      IpvsNodeControllerSyncFailing: [],
      IpvsNodeControllerWatchFailing: [],
      IpvsNodeControllerServicesSkipped: [],
      IpvsNodeControllerNotProgramming: [],
    });
  }, 180_000);

  it("two Services claiming one address, then the API server down: ServicesSkipped, WatchFailing", async () => {
    for (const name of ["claim-a", "claim-b"]) {
      await api.kubectl(["apply", "-f", "-"], {
        input: JSON.stringify({
          apiVersion: "v1",
          kind: "Service",
          metadata: { namespace: "default", name },
          spec: { externalIPs: ["192.0.2.50"], ports: [{ port: 80, protocol: "TCP" }] },
        }),
      });
    }
    await until(
      "the conflict is reported",
      () => latest("ipvs_node_controller_skipped_entries", { reason: "Conflict" }) === 1,
    );
    await api.stopApiServer();
    await until(
      "the watch failure is reported",
      () => latest("ipvs_node_controller_watch_failing", { resource: "services" }) === 1,
    );
    await hold();
    const last = parsePrometheusTextFormat(scrapes.at(-1)?.metrics ?? "");
    const family = (name: string) => last.find((f) => f.name === name)?.metrics ?? [];
    const failingWatches = family("ipvs_node_controller_watch_failing")
      .filter((m) => m.value === "1")
      .map((m) => ({ ...TARGET, resource: m.labels?.resource as string }));
    const skipReasons = family("ipvs_node_controller_skipped_entries")
      .filter((m) => Number(m.value) > 0 && !BENIGN_SKIPS.includes(m.labels?.reason as string))
      .map((m) => m.labels?.reason as string);
    expect(skipReasons).toContain("Conflict");
    const { instance: _instance, pod: _pod, node: _node, ...aggregated } = TARGET;
    checkpoint({
      IpvsNodeControllerServicesSkipped: skipReasons.map((reason) => ({ ...aggregated, reason })),
      IpvsNodeControllerWatchFailing: failingWatches,
      IpvsNodeControllerSyncFailing: [],
      IpvsNodeControllerNotProgramming: [],
    });
    await api.startApiServer();
    await api.kubectl(["delete", "service", "claim-b", "--namespace=default"]);
    await until(
      "the watches and the Services are back to normal",
      () =>
        latest("ipvs_node_controller_watch_failing", { resource: "services" }) === 0 &&
        latest("ipvs_node_controller_skipped_entries", { reason: "Conflict" }) !== 1,
    );
  }, 240_000);

  it("nft failing: SyncFailing, and NotProgramming once /healthz fails", async () => {
    writeFileSync(join(scratch, "fail"), "");
    await until(
      "failures are reported",
      () => latest("ipvs_node_controller_sync_failures_total") > 0,
    );
    const firstFailure = scrapes.length;
    await hold();
    // The controller's own verdict: /healthz failed, as it does once a change waits too long.
    expect(scrapes.slice(firstFailure).some((scrape) => scrape.healthz === 503)).toBe(true);
    checkpoint({
      IpvsNodeControllerSyncFailing: [{ ...TARGET }],
      IpvsNodeControllerNotProgramming: [{ ...TARGET }],
      IpvsNodeControllerWatchFailing: [],
      IpvsNodeControllerServicesSkipped: [],
      IpvsNodeControllerRulesDrifting: [],
    });
  }, 120_000);

  it("restarted by its liveness probe again and again: NotProgramming", async () => {
    enforceLiveness = true;
    await eventually(
      "the controller has been restarted four times",
      () => restarts.length >= 4,
      180_000,
      200,
    );
    enforceLiveness = false;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    checkpoint({
      IpvsNodeControllerNotProgramming: [{ ...TARGET }],
      IpvsNodeControllerRulesDrifting: [],
    });
    rmSync(join(scratch, "fail"));
  }, 240_000);

  /** Writes promtool's test file for `checks` and runs it. */
  async function promtoolTest(name: string, tested: typeof checks) {
    const series = toSeries(scrapes);
    const byAlert = new Map(rules.map((rule) => [rule.alert, rule]));
    const file = join(scratch, `${name}.yaml`);
    writeFileSync(
      file,
      stringifyYaml({
        rule_files: [ruleFile],
        evaluation_interval: `${STEP_SECONDS}s`,
        tests: [
          {
            interval: `${STEP_SECONDS}s`,
            input_series: series.map((s) => ({
              series: seriesKey(s.name, s.labels),
              values: s.values.join(" "),
            })),
            alert_rule_test: tested.map(({ step, alert, firing }) => {
              const rule = byAlert.get(alert);
              if (!rule) throw new Error(`no rule ${alert} in the chart`);
              return {
                eval_time: `${step * STEP_SECONDS}s`,
                alertname: alert,
                exp_alerts: firing.map((labels) => {
                  const all = { ...labels, ...rule.labels };
                  return {
                    exp_labels: all,
                    exp_annotations: Object.fromEntries(
                      Object.entries(rule.annotations).map(([key, text]) => [
                        key,
                        expandAnnotation(text, all),
                      ]),
                    ),
                  };
                }),
              };
            }),
          },
        ],
      }),
    );
    return execa(promtool as string, ["test", "rules", file], { reject: false, all: true });
  }

  it("promtool: every alert fires where its condition held, and only there", async () => {
    expect(rules.map((rule) => rule.alert).sort()).toEqual([...ALERTS].sort());
    // Every series a rule reads is one the controller exports.
    const exported = new Set(toSeries(scrapes).map((s) => s.name));
    for (const rule of rules) {
      for (const name of rule.expr.match(/\b(ipvs_node_controller_\w+|process_\w+)/g) ?? []) {
        expect(exported, `${rule.alert} reads ${name}`).toContain(name);
      }
    }
    expect(restarts.length).toBeGreaterThanOrEqual(4);
    for (const alert of ALERTS) {
      expect(
        checks.some((check) => check.alert === alert && check.firing.length > 0),
        `${alert} is checked firing somewhere`,
      ).toBe(true);
    }
    const result = await promtoolTest("rules-test", checks);
    expect(result.exitCode, result.all).toBe(0);
    console.log(
      `promtool: ${checks.length} checks over ${scrapes.length} scrapes (${restarts.length} restarts): ${result.all?.trim()}`,
    );
  }, 120_000);

  it("promtool: an alert expected where its condition did not hold fails the test (the check can fail)", async () => {
    const healthy = checks[0]?.step ?? 0;
    const result = await promtoolTest("wrong", [
      { step: healthy, alert: "IpvsNodeControllerSyncFailing", firing: [{ ...TARGET }] },
    ]);
    expect(result.exitCode).not.toBe(0);
    expect(result.all).toContain("IpvsNodeControllerSyncFailing");
  }, 120_000);
});
