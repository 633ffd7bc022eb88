/**
 * What the kernel says about this node's addresses: the facts that tell an IPVS node (where the
 * rules act) from one whose kube-proxy runs in iptables or nftables mode (where they are inert).
 *
 * Translation never depends on these facts: the rules themselves test `fib daddr type local`, the
 * same local routing table read here. They are reported so that an operator sees what a node is.
 */

import { type CommandRunner, ToolRefusedError } from "@ipvs-node-controller/backend";
import {
  type IpFamily,
  parseIP,
  type Ruleset,
  type RulesetResult,
} from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import type { ControllerMetrics } from "./metrics.js";

/** The name kube-proxy's IPVS mode gives its dummy interface. */
export const KUBE_IPVS_INTERFACE = "kube-ipvs0";

/** Local addresses and interfaces of this node's network namespace. */
export interface NodeNetwork {
  /** Every address routed to this host (the kernel's `local` routing table), canonical. */
  readonly localAddresses: ReadonlySet<string>;
  /** Whether an interface named `kube-ipvs0` exists. */
  readonly kubeIpvsInterface: boolean;
}

/** How many of the translated external IPs are local addresses of the node, per family. */
export interface LocalityReport {
  readonly externalIPs: Readonly<Record<IpFamily, number>>;
  readonly local: Readonly<Record<IpFamily, number>>;
  readonly kubeIpvsInterface: boolean;
}

async function ipJson(runner: CommandRunner, args: readonly string[]): Promise<unknown[]> {
  const result = await runner("ip", ["-j", ...args]);
  if (result.exitCode !== 0) {
    const stderr = result.stderr.trim();
    throw new ToolRefusedError(`ip ${args.join(" ")}: ${stderr}`, "ip", result.exitCode, stderr);
  }
  const parsed: unknown = JSON.parse(result.stdout === "" ? "[]" : result.stdout);
  return Array.isArray(parsed) ? parsed : [];
}

/** Reads the local routing tables of both families and the interface names, with `ip -j`. */
export async function inspectNodeNetwork(runner: CommandRunner): Promise<NodeNetwork> {
  const localAddresses = new Set<string>();
  for (const flag of ["-4", "-6"]) {
    for (const route of await ipJson(runner, [
      flag,
      "route",
      "show",
      "table",
      "local",
      "type",
      "local",
    ])) {
      const destination = (route as { dst?: unknown }).dst;
      // Host routes only: a prefix such as 127.0.0.0/8 is not an address a Service can have.
      const parsed = parseIP(destination);
      if (parsed.ok) localAddresses.add(parsed.value.address);
    }
  }
  const links = await ipJson(runner, ["link", "show"]);
  const kubeIpvsInterface = links.some(
    (link) => (link as { ifname?: unknown }).ifname === KUBE_IPVS_INTERFACE,
  );
  return { localAddresses, kubeIpvsInterface };
}

/** Counts the distinct external IPs of `ruleset`, and those that are local addresses of the node. */
export function localityOf(ruleset: Ruleset, network: NodeNetwork): LocalityReport {
  const externalIPs = { ipv4: 0, ipv6: 0 };
  const local = { ipv4: 0, ipv6: 0 };
  for (const { family, mappings } of ruleset.families) {
    const addresses = new Set(mappings.map((mapping) => mapping.externalIP));
    externalIPs[family] = addresses.size;
    for (const address of addresses) if (network.localAddresses.has(address)) local[family] += 1;
  }
  return { externalIPs, local, kubeIpvsInterface: network.kubeIpvsInterface };
}

/** One sentence for the log. */
export function describeLocality(report: LocalityReport): string {
  const total = report.externalIPs.ipv4 + report.externalIPs.ipv6;
  const local = report.local.ipv4 + report.local.ipv6;
  const ipvs = report.kubeIpvsInterface ? "kube-ipvs0 present" : "no kube-ipvs0";
  if (total === 0) return `no external IP to translate (${ipvs})`;
  if (local === 0) {
    return `none of the ${total} translated external IPs is a local address of this node (${ipvs}): the rules are inert here, as they should be where kube-proxy does not run in IPVS mode`;
  }
  return `${local} of the ${total} translated external IPs are local addresses of this node (${ipvs}): the rules act on them`;
}

/**
 * Reports, for each desired state handed to it, how many translated external IPs are local
 * addresses of the node, and whether kube-ipvs0 exists: as metrics always, in the log when the
 * answer changes.
 */
export function localityReporter(
  runner: CommandRunner,
  metrics: ControllerMetrics,
  log: Logger,
): (result: RulesetResult) => Promise<void> {
  let lastReport = "";
  return async (result) => {
    const report = localityOf(result.ruleset, await inspectNodeNetwork(runner));
    for (const family of ["ipv4", "ipv6"] as const) {
      metrics.externalIPs.set({ family }, report.externalIPs[family]);
      metrics.localExternalIPs.set({ family }, report.local[family]);
    }
    metrics.kubeIpvsInterface.set(report.kubeIpvsInterface ? 1 : 0);
    const sentence = describeLocality(report);
    if (sentence !== lastReport) {
      lastReport = sentence;
      log.info({ ...report }, sentence);
    }
  };
}
