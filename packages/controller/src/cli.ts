/**
 * The `ipvs-node-controller` command line.
 *
 * Exit codes: 0 done, 1 the work failed (a kernel tool refused, a file was unreadable) or `doctor`
 * found a problem, 2 bad usage.
 */
import { createRequire } from "node:module";
import { ConfigError } from "@ipvs-node-controller/core";
import { Command, CommanderError, Option } from "commander";
import pino from "pino";
import { type Console, processConsole } from "./console.js";
import type { DoctorFlags } from "./doctor/command.js";
import { errorLine } from "./error-line.js";
import { parseBindAddress } from "./http-server.js";
import type { OneShotFlags } from "./oneshot.js";
import {
  addBackendOptions,
  addRuleOptions,
  type BackendFlags,
  coreConfigFromFlags,
  durationFlag,
  type RuleFlags,
} from "./options.js";

/** The package's version, set by the bundler (bundle.mjs): the bundle ships without package.json. */
declare const IPVS_NODE_CONTROLLER_VERSION: string | undefined;

/** The package's version, for `--version`: the bundler's, else this package's package.json. */
const VERSION: string =
  typeof IPVS_NODE_CONTROLLER_VERSION === "string"
    ? IPVS_NODE_CONTROLLER_VERSION
    : createRequire(import.meta.url)("../package.json").version;

/**
 * The one-shot commands' module. Each command's code loads when the command runs, so that `run`,
 * a long-lived process on every node, holds none of `render`'s, `sync`'s, `cleanup`'s or
 * `doctor`'s (nor the YAML parser they read files with), and they hold none of `run`'s.
 */
const oneShot = () => import("./oneshot.js");

/** A usage error: reported in one line, exit code 2. */
class UsageError extends Error {}

interface RunFlags extends RuleFlags, BackendFlags {
  kubeconfig?: string;
  nodeName?: string;
  syncPeriod: string;
  minSyncPeriod: string;
  metricsBindAddress: string;
  healthProbeBindAddress: string;
  logLevel: string;
}

/** What an action reports back besides success or an exception: `doctor`'s verdict. */
interface Outcome {
  exitCode: number;
}

function buildProgram(io: Console, signals: NodeJS.EventEmitter, outcome: Outcome): Command {
  const program = new Command("ipvs-node-controller")
    .description(
      "Lets pods and host-network processes reach LoadBalancer and external IPs of their own cluster under kube-proxy's IPVS mode.",
    )
    .version(VERSION)
    .exitOverride()
    .configureOutput({
      // Commander ends its texts with a newline; the console adds its own.
      writeOut: (text) => io.out(text.replace(/\n$/, "")),
      writeErr: (text) => io.err(text.replace(/\n$/, "")),
      outputError: () => {},
    })
    .showHelpAfterError(false);

  const withFiles = (command: Command) =>
    addBackendOptions(addRuleOptions(command))
      .requiredOption(
        "--services <file>",
        "Services as `kubectl get svc -A -o yaml|json` prints them",
      )
      .option("--node <file>", "a Node object whose spec.podCIDRs are this node's pod CIDRs");

  withFiles(
    program.command("render").description("print the document a sync would feed to the kernel"),
  ).action(async (flags: OneShotFlags) => (await oneShot()).renderCommand(flags, io));

  withFiles(program.command("sync").description("apply the rules to this network namespace"))
    .requiredOption(
      "--once",
      "apply once and exit (the only mode of this command; `run` watches a cluster)",
    )
    .action(async (flags: OneShotFlags) => (await oneShot()).syncOnceCommand(flags, io));

  addBackendOptions(
    program.command("cleanup").description("remove every rule the controller created"),
    ["nft", "iptables", "all"],
  ).action(async (flags: BackendFlags) => (await oneShot()).cleanupCommand(flags, io));

  addBackendOptions(
    addRuleOptions(
      program
        .command("doctor")
        .description(
          "explain this node: is it affected, and is every translation it needs in the kernel? (exit 1 when not)",
        ),
    ),
  )
    .option(
      "--services <file>",
      "read Services from this file (`kubectl get svc -A -o yaml|json`) instead of the API",
    )
    .option("--node <file>", "with --services: a Node object whose spec.podCIDRs are this node's")
    .option("--kubeconfig <file>", "kubeconfig to use (default: in-cluster config)")
    .addOption(
      new Option("--node-name <name>", "name of this node (required with the API)").env(
        "NODE_NAME",
      ),
    )
    .option("--probe", "connect from this host to every TCP external IP:port", false)
    .option("--probe-timeout <duration>", "time limit of each probe", "1s")
    .addOption(
      new Option("--output <format>", "report format").choices(["text", "json"]).default("text"),
    )
    .action(async (flags: DoctorFlags) => {
      if (flags.services === undefined) {
        if (flags.node !== undefined) throw new UsageError("--node needs --services");
        if (!flags.nodeName) {
          throw new UsageError("--node-name (or NODE_NAME) is required to read from the API");
        }
      } else if (flags.kubeconfig !== undefined) {
        throw new UsageError("--services and --kubeconfig exclude each other");
      }
      const { doctorCommand } = await import("./doctor/command.js");
      outcome.exitCode = await doctorCommand(flags, io);
    });

  addBackendOptions(
    addRuleOptions(
      program.command("run").description("watch the cluster and keep this node's rules in sync"),
    ),
  )
    .option("--kubeconfig <file>", "kubeconfig to use (default: in-cluster config)")
    .addOption(new Option("--node-name <name>", "name of this node").env("NODE_NAME"))
    .option(
      "--sync-period <duration>",
      "how often the kernel state is verified and repaired",
      "30s",
    )
    .option(
      "--min-sync-period <duration>",
      "minimum time between syncs; bursts are coalesced",
      "1s",
    )
    .option(
      "--metrics-bind-address <address>",
      "host:port of /metrics, or 0 to disable",
      "127.0.0.1:10266",
    )
    .option(
      "--health-probe-bind-address <address>",
      "host:port of /healthz and /readyz, or 0 to disable",
      "0.0.0.0:10267",
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .choices(["trace", "debug", "info", "warn", "error", "fatal"])
        .default("info"),
    )
    .action(async (flags: RunFlags) => {
      if (!flags.nodeName) throw new UsageError("--node-name (or NODE_NAME) is required");
      const config = coreConfigFromFlags(flags);
      const syncPeriodMs = durationFlag("--sync-period", flags.syncPeriod, 1000);
      const minSyncPeriodMs = durationFlag("--min-sync-period", flags.minSyncPeriod);
      let metricsAddress: ReturnType<typeof parseBindAddress>;
      let healthAddress: ReturnType<typeof parseBindAddress>;
      try {
        metricsAddress = parseBindAddress("--metrics-bind-address", flags.metricsBindAddress);
        healthAddress = parseBindAddress(
          "--health-probe-bind-address",
          flags.healthProbeBindAddress,
        );
      } catch (error) {
        throw new UsageError((error as Error).message);
      }
      const log = pino({ level: flags.logLevel, base: { node: flags.nodeName } });
      // Listen for signals before starting, so that a SIGTERM during start-up still ends in a
      // clean stop (exit 0, rules in place) rather than the default abrupt exit.
      const stopRequested = new Promise<string>((resolve) => {
        signals.once("SIGTERM", () => resolve("SIGTERM"));
        signals.once("SIGINT", () => resolve("SIGINT"));
      });
      const { runController } = await import("./run.js");
      const controller = await runController({
        kubeconfig: flags.kubeconfig,
        nodeName: flags.nodeName,
        backend: flags.backend,
        backendFlags: flags,
        config,
        syncPeriodMs,
        minSyncPeriodMs,
        metricsAddress,
        healthAddress,
        log,
      });
      const signal = await stopRequested;
      log.info({ signal }, "shutting down");
      await controller.stop();
    });
  return program;
}

/**
 * Runs the CLI with `argv` (without the node and script paths) and returns the exit code.
 * Errors are printed as one line on `io.err`.
 */
export async function main(
  argv: readonly string[],
  io: Console = processConsole,
  signals: NodeJS.EventEmitter = process,
): Promise<number> {
  const outcome: Outcome = { exitCode: 0 };
  const program = buildProgram(io, signals, outcome);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return outcome.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return 0; // --help, --version
      io.err(`error: ${error.message.replace(/^error: /, "")}`);
      return 2;
    }
    if (error instanceof UsageError || error instanceof ConfigError) {
      io.err(`error: ${error.message}`);
      return 2;
    }
    io.err(`error: ${errorLine(error)}`);
    return 1;
  }
}
