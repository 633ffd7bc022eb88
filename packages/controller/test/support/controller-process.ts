/**
 * `ipvs-node-controller run` as a real process inside a network namespace, for the fault tests:
 * its JSON log, its probes and metrics, and the processes living in its namespace.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdir, readFile, readlink, stat } from "node:fs/promises";
import { eventually, type HttpAnswer, httpGet, runnerIn } from "@ipvs-node-controller/test-support";
import { builtCli } from "./built-cli.js";

/** The built CLI: the tests run what the DaemonSet runs, built from the current sources. */
export const CLI = builtCli();

/** One line of the controller's JSON log (pino). */
export interface LogEntry {
  readonly level: number;
  readonly time: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** pino's numeric levels. */
export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

/** Options of {@link startControllerProcess}. */
export interface ControllerProcessOptions {
  /** The network namespace it runs in (its "host network"). */
  readonly namespace: string;
  /** Flags after `run`; probe addresses are added unless given. */
  readonly args: readonly string[];
  /** Extra environment, e.g. `XTABLES_LOCKFILE`. */
  readonly env?: Readonly<Record<string, string>>;
  /** Flags for node itself, e.g. `--inspect=127.0.0.1:9229`. */
  readonly nodeArgs?: readonly string[];
}

/** A running controller process. */
export interface ControllerProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Every JSON log line so far, parsed. */
  entries(): LogEntry[];
  /** Every line so far that was not JSON (node's own messages, stderr). */
  otherOutput(): string;
  /** GET on the health server (`/healthz`, `/readyz`) from inside the namespace. */
  health(path: "/healthz" | "/readyz"): Promise<HttpAnswer>;
  /** The metrics text. */
  metricsText(): Promise<string>;
  /** The value of one sample, e.g. `metric('ipvs_node_controller_watch_failing{resource="services"}')`; NaN when absent. */
  metric(sample: string): Promise<number>;
  /** Waits until `/readyz` answers 200 (the first sync is in the kernel); fails at once if the process exits. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** The last `lines` of the log and other output, for a failure report. */
  tail(lines?: number): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>;
  /** SIGKILL, as the kubelet does after the grace period: no shutdown code runs. */
  kill(): Promise<void>;
}

export const METRICS_PORT = 10266;
export const HEALTH_PORT = 10267;

/** Starts `ipvs-node-controller run` in `options.namespace`. */
export function startControllerProcess(options: ControllerProcessOptions): ControllerProcess {
  const args = [...options.args];
  if (!args.some((arg) => arg.startsWith("--metrics-bind-address"))) {
    args.push(`--metrics-bind-address=127.0.0.1:${METRICS_PORT}`);
  }
  if (!args.some((arg) => arg.startsWith("--health-probe-bind-address"))) {
    args.push(`--health-probe-bind-address=127.0.0.1:${HEALTH_PORT}`);
  }
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      options.namespace,
      process.execPath,
      ...(options.nodeArgs ?? []),
      CLI,
      "run",
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } },
  );
  const entries: LogEntry[] = [];
  let other = "";
  const lineReader = () => {
    let pending = "";
    return (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        if (line.startsWith("{")) {
          try {
            entries.push(JSON.parse(line) as LogEntry);
            continue;
          } catch {
            // Not a log line after all.
          }
        }
        other += `${line}\n`;
      }
    };
  };
  child.stdout?.on("data", lineReader());
  child.stderr?.on("data", lineReader());
  const runner = runnerIn(options.namespace);
  const metricsPort = Number(
    /:(\d+)$/.exec(args.find((arg) => arg.startsWith("--metrics-bind-address")) ?? "")?.[1],
  );
  const healthPort = Number(
    /:(\d+)$/.exec(args.find((arg) => arg.startsWith("--health-probe-bind-address")) ?? "")?.[1],
  );
  const metricsText = async () =>
    (await httpGet(runner, `http://127.0.0.1:${metricsPort}/metrics`)).body;
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
  });
  const health = (path: "/healthz" | "/readyz") =>
    httpGet(runner, `http://127.0.0.1:${healthPort}${path}`);
  const tail = (lines = 40) =>
    [
      ...entries.slice(-lines).map((entry) => JSON.stringify(entry)),
      ...other.trim().split("\n").slice(-lines),
    ].join("\n");
  return {
    pid: child.pid as number,
    child,
    entries: () => entries,
    tail,
    otherOutput: () => other,
    health,
    async waitReady(timeoutMs = 30_000) {
      await eventually(
        "the controller has synced (ready)",
        async () => {
          if (child.exitCode !== null || child.signalCode !== null) {
            throw new Error(
              `the controller exited (${child.exitCode ?? child.signalCode}):\n${tail()}`,
            );
          }
          return (await health("/readyz")).status === 200;
        },
        timeoutMs,
        100,
      );
    },
    metricsText,
    async metric(sample) {
      return sampleValue(await metricsText(), sample);
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
    async stop(graceMs = 30_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** The value of one sample line of a Prometheus text, e.g. `x_total{mode="full"}`; NaN if absent. */
export function sampleValue(text: string, sample: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return Number.NaN;
}

/** A process seen in /proc. */
export interface ProcessInfo {
  readonly pid: number;
  readonly ppid: number;
  /** argv joined with spaces. */
  readonly command: string;
}

/**
 * Every process whose network namespace is `namespace` (an `ip netns` name), found by comparing
 * /proc/PID/ns/net with the namespace's file. Orphans count too: a child the controller failed to
 * reap or kill is re-parented to init, but stays in the namespace it was started in.
 */
export async function processesInNamespace(namespace: string): Promise<ProcessInfo[]> {
  const target = await stat(`/run/netns/${namespace}`);
  const wanted = `net:[${target.ino}]`;
  const found: ProcessInfo[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if ((await readlink(`/proc/${name}/ns/net`)) !== wanted) continue;
      const statText = await readFile(`/proc/${name}/stat`, "utf8");
      // Field 4 follows the command name in parentheses, which may itself hold spaces.
      const ppid = Number(statText.slice(statText.lastIndexOf(")") + 2).split(" ")[1]);
      const command = (await readFile(`/proc/${name}/cmdline`, "utf8"))
        .split("\0")
        .filter(Boolean)
        .join(" ");
      found.push({ pid: Number(name), ppid, command });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}
