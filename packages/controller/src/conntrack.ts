/**
 * Deletes the conntrack entries of UDP flows that a change made stale (see core's
 * `staleUdpDestinations`), with the `conntrack` tool of conntrack-tools, after the change is in
 * the kernel: the flow's next packet is then NATed afresh by the rules now in force.
 *
 * Exactly the affected entries go: UDP, original destination = the external IP and port, in the
 * destination's family. Entries of any other destination, protocol or family are never touched.
 * Each `-D` walks the whole conntrack table once, so for many destinations (a full sync) the
 * UDP entries are listed first and only destinations that have flows are deleted.
 *
 * A failure (the tool missing, the kernel refusing) is logged and counted, never thrown: the rules
 * are in place, and a stale flow heals by itself once it pauses for the UDP conntrack timeout.
 */

import type { CommandRunner } from "@ipvs-node-controller/backend";
import { destinationKey, type IpFamily, type UdpDestination } from "@ipvs-node-controller/core";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import { METRIC_PREFIX } from "./metrics.js";

/** What the sync loop calls after a successful apply. */
export interface ConntrackCleaner {
  /** Deletes the entries of `destinations`. Never throws. */
  flush(destinations: readonly UdpDestination[]): Promise<void>;
}

/** Options of {@link createConntrackCleaner}. */
export interface ConntrackCleanerOptions {
  /** Starts `conntrack`; the controller's runner, with its time limit. */
  readonly runner: CommandRunner;
  readonly log: Logger;
  /** Where its metrics go (the controller's registry). */
  readonly registry: Registry;
  /** The conntrack program. Default `conntrack` on PATH. */
  readonly path?: string;
  /**
   * Up to this many destinations of one family are deleted directly; more are listed first.
   * Default 32.
   */
  readonly directLimit?: number;
}

/** `-f` values of conntrack. */
const FAMILY_FLAG: Readonly<Record<IpFamily, string>> = { ipv4: "ipv4", ipv6: "ipv6" };

/** One `-D` line of `conntrack --load-file`: UDP, this family, this original destination. */
function deleteLine(destination: UdpDestination): string {
  return `-D -p udp -f ${FAMILY_FLAG[destination.family]} --orig-dst ${destination.ip} --dport ${destination.port}`;
}

/**
 * The destinations of `family` that have at least one entry in a `conntrack -L` listing: the
 * first `dst=` and `dport=` of a line are the original direction's.
 */
export function destinationsWithFlows(
  listing: string,
  family: IpFamily,
  wanted: readonly UdpDestination[],
): UdpDestination[] {
  const present = new Set<string>();
  for (const line of listing.split("\n")) {
    const dst = / dst=(\S+)/.exec(line)?.[1];
    const dport = / dport=(\d+)/.exec(line)?.[1];
    if (dst === undefined || dport === undefined) continue;
    // conntrack prints IPv6 addresses compressed, as the core's canonical form has them.
    present.add(destinationKey({ family, ip: dst, port: Number(dport) }));
  }
  return wanted.filter((destination) => present.has(destinationKey(destination)));
}

/** Creates the cleaner the sync loop uses. */
export function createConntrackCleaner(options: ConntrackCleanerOptions): ConntrackCleaner {
  const path = options.path ?? "conntrack";
  const directLimit = options.directLimit ?? 32;
  const { runner, log } = options;
  const deleted = new Counter({
    name: `${METRIC_PREFIX}conntrack_deleted_entries_total`,
    help: "Conntrack entries of UDP flows deleted because their mapping was added, removed or re-pointed",
    registers: [options.registry],
  });
  const failures = new Counter({
    name: `${METRIC_PREFIX}conntrack_failures_total`,
    help: "Runs of the conntrack tool that failed (stale UDP flows then heal only once they pause)",
    registers: [options.registry],
  });

  async function run(args: readonly string[], input?: string): Promise<string> {
    const result = await runner(path, args, input === undefined ? undefined : { input });
    if (result.exitCode !== 0) {
      throw new Error(
        `${path} ${args.join(" ")} exited with ${result.exitCode}: ${result.stderr.trim()}`,
      );
    }
    return result.stdout;
  }

  async function flushFamily(family: IpFamily, wanted: UdpDestination[]): Promise<void> {
    const targets =
      wanted.length <= directLimit
        ? wanted
        : destinationsWithFlows(
            await run(["-L", "-p", "udp", "-f", FAMILY_FLAG[family]]),
            family,
            wanted,
          );
    if (targets.length === 0) return;
    // One process for all of them; it prints each deleted entry on a line of its own.
    const output = await run(["--load-file", "-"], `${targets.map(deleteLine).join("\n")}\n`);
    const count = output.split("\n").filter((line) => line.startsWith("udp")).length;
    deleted.inc(count);
    if (count > 0) {
      log.info(
        { family, destinations: targets.length, entries: count },
        "deleted conntrack entries of stale UDP flows",
      );
    }
  }

  return {
    async flush(destinations) {
      for (const family of ["ipv4", "ipv6"] as const) {
        const wanted = destinations.filter((destination) => destination.family === family);
        if (wanted.length === 0) continue;
        try {
          await flushFamily(family, wanted);
        } catch (error) {
          failures.inc();
          log.warn(
            { err: error, family, destinations: wanted.length },
            "could not delete conntrack entries of stale UDP flows; they heal once they pause",
          );
        }
      }
    },
  };
}
