/**
 * The command-line options shared by the subcommands, and their translation into core
 * configuration and a backend. Option names follow kube-proxy where the concept is the same.
 */

import { type Backend, type CommandRunner, createToolRunner } from "@ipvs-node-controller/backend";
import { createIptablesBackend, type IptablesMode } from "@ipvs-node-controller/backend-iptables";
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import {
  ConfigError,
  type CoreConfig,
  type LocalDetection,
  parseFamilies,
  resolveConfig,
} from "@ipvs-node-controller/core";
import { type Command, Option } from "commander";
import { parseDuration } from "./duration.js";

/** The kernel backends `--backend` can choose. */
export const BACKEND_NAMES = ["nft", "iptables"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/**
 * The backend that `name` is not: whose rules an instance of `name` removes once its own are in
 * place, and that `doctor` reports as left over.
 */
export function otherBackendOf(name: BackendName): BackendName {
  return name === "nft" ? "iptables" : "nft";
}

/** Rule options as commander hands them over. */
export interface RuleFlags {
  netStack?: string;
  podCidr: string[];
  masqueradeBit: string;
  detectLocalMode: string;
  clusterCidr: string[];
  podBridgeInterface?: string;
  podInterfaceNamePrefix?: string;
  onlyLocalTrafficPolicy: boolean;
  externalIps: boolean;
  maxMappingsPerService: string;
  masqueradePodTraffic: boolean;
  nodeIp: string[];
}

/** Backend options as commander hands them over. */
export interface BackendFlags {
  backend: BackendName;
  nftPath: string;
  iptablesMode: IptablesMode;
  iptablesBinDir?: string;
  /** A duration text, e.g. `30s`. */
  toolTimeout: string;
}

function collect(value: string, previous: string[]): string[] {
  // Both repeated flags and comma-separated lists, as kube-proxy's --cluster-cidr accepts.
  return [
    ...previous,
    ...value
      .split(",")
      .map((item) => item.trim())
      .filter((item) => item !== ""),
  ];
}

/** Adds the options that decide which rules are computed. */
export function addRuleOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--net-stack <families>", "IP families to handle: ipv4, ipv6 or ipv4,ipv6").env(
        "NET_STACK",
      ),
    )
    .option("--pod-cidr <cidr>", "pod CIDR of this node (repeatable; NodeCIDR mode)", collect, [])
    .option(
      "--masquerade-bit <bit>",
      "bit of the packet mark that makes kube-proxy masquerade (0-31)",
      "14",
    )
    .addOption(
      new Option("--detect-local-mode <mode>", "how traffic from local pods is recognised")
        .choices(["NodeCIDR", "ClusterCIDR", "BridgeInterface", "InterfaceNamePrefix"])
        .default("NodeCIDR"),
    )
    .option(
      "--cluster-cidr <cidr>",
      "pod CIDRs of the cluster (repeatable or comma-separated; ClusterCIDR mode)",
      collect,
      [],
    )
    .option("--pod-bridge-interface <name>", "bridge interface of the pods (BridgeInterface mode)")
    .option(
      "--pod-interface-name-prefix <prefix>",
      "interface name prefix of the pods (InterfaceNamePrefix mode)",
    )
    .option(
      "--only-local-traffic-policy",
      "handle only Services with externalTrafficPolicy: Local",
      false,
    )
    .option("--no-external-ips", "do not translate spec.externalIPs, only LoadBalancer ingress IPs")
    .option(
      "--max-mappings-per-service <count>",
      "skip a Service that asks for more mappings (external addresses × ports × source ranges)",
      "65536",
    )
    .option(
      "--masquerade-pod-traffic",
      "mark translated pod traffic for masquerading too, so endpoints see a node address instead of the pod's (host traffic always is)",
      false,
    )
    .option(
      "--node-ip <ip>",
      "this node's IP for loadBalancerSourceRanges, one per family, as kube-proxy's --bind-address (default: the Node's InternalIP, then ExternalIP)",
      collect,
      [],
    );
}

/** Adds the options that choose and configure the kernel backend. */
export function addBackendOptions(
  command: Command,
  backends: readonly string[] = BACKEND_NAMES,
): Command {
  return command
    .addOption(new Option("--backend <name>", "kernel backend").choices(backends).default("nft"))
    .option("--nft-path <path>", "the nft program", "nft")
    .addOption(
      new Option("--iptables-mode <mode>", "iptables variant: detect the host's, or force one")
        .choices(["auto", "legacy", "nft"])
        .default("auto"),
    )
    .option(
      "--iptables-bin-dir <dir>",
      "directory of the iptables-{legacy,nft}-{save,restore} tools (default: looked up on PATH)",
    )
    .option(
      "--tool-timeout <duration>",
      "a kernel tool (nft, iptables-restore, ip) still running after this long is killed and the sync retried",
      "30s",
    );
}

function parseInteger(option: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new ConfigError(
      `${option}: ${JSON.stringify(text)} is not an integer from ${min} to ${max}`,
    );
  }
  return Number(text);
}

function localDetection(flags: RuleFlags): LocalDetection {
  switch (flags.detectLocalMode) {
    case "ClusterCIDR":
      if (flags.clusterCidr.length === 0) {
        throw new ConfigError("--detect-local-mode=ClusterCIDR needs --cluster-cidr");
      }
      return { mode: "ClusterCIDR", cidrs: flags.clusterCidr };
    case "BridgeInterface":
      if (flags.podBridgeInterface === undefined) {
        throw new ConfigError("--detect-local-mode=BridgeInterface needs --pod-bridge-interface");
      }
      return { mode: "BridgeInterface", interfaceName: flags.podBridgeInterface };
    case "InterfaceNamePrefix":
      if (flags.podInterfaceNamePrefix === undefined) {
        throw new ConfigError(
          "--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix",
        );
      }
      return { mode: "InterfaceNamePrefix", interfacePrefix: flags.podInterfaceNamePrefix };
    default:
      return { mode: "NodeCIDR" };
  }
}

/** Turns rule flags into core configuration; throws ConfigError naming the bad flag. */
export function coreConfigFromFlags(flags: RuleFlags): CoreConfig {
  // Resolved here, not at the first sync, so that a bad value is a usage error before any work.
  return resolveConfig({
    families: parseFamilies(flags.netStack ?? "ipv4"),
    masqueradeBit: parseInteger("--masquerade-bit", flags.masqueradeBit, 0, 31),
    localDetection: localDetection(flags),
    onlyLocalTrafficPolicy: flags.onlyLocalTrafficPolicy,
    externalIPs: flags.externalIps,
    extraPodCIDRs: flags.podCidr,
    maxMappingsPerService: parseInteger(
      "--max-mappings-per-service",
      flags.maxMappingsPerService,
      1,
      Number.MAX_SAFE_INTEGER,
    ),
    masqueradePodTraffic: flags.masqueradePodTraffic,
    nodeIPs: flags.nodeIp,
  });
}

/** Parses a duration flag; throws ConfigError naming the flag. */
export function durationFlag(option: string, text: string, minimumMs = 0): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms < minimumMs) {
    throw new ConfigError(
      `${option}: ${JSON.stringify(text)} is not a duration like 500ms, 30s, 1m or 1h${minimumMs > 0 ? ` (at least ${minimumMs}ms)` : ""}`,
    );
  }
  return ms;
}

/** The runner every kernel tool is started with: `--tool-timeout` is its time limit. */
export function createRunner(flags: Pick<BackendFlags, "toolTimeout">): CommandRunner {
  return createToolRunner({ timeoutMs: durationFlag("--tool-timeout", flags.toolTimeout, 1) });
}

/** Creates the backend a command asked for. */
export function createBackend(
  name: BackendName,
  flags: Omit<BackendFlags, "backend">,
  runner: CommandRunner,
  log: (message: string) => void = () => {},
): Backend {
  return name === "nft"
    ? createNftBackend({ nftPath: flags.nftPath, runner })
    : createIptablesBackend({
        mode: flags.iptablesMode,
        binDir: flags.iptablesBinDir,
        runner,
        log,
      });
}
