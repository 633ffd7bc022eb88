/**
 * Which connection-tracking entries a change makes stale.
 *
 * NAT happens once per connection: the kernel decides the translation on a flow's first packet
 * and every later packet follows the conntrack entry, not the rules. A UDP "connection" (one
 * socket sending to one address and port) lives as long as packets keep coming, so a flow that
 * started before a mapping was added keeps going to the untranslated address, and one that
 * started before a mapping was removed or re-pointed keeps its old cluster IP, for as long as it
 * keeps sending. kube-proxy deletes such entries when a Service changes; so must we. TCP and SCTP
 * are left alone: their connections end, and a new one takes the new rules.
 */
import { sameSources } from "./mapping.js";
import type { IpFamily, Mapping, MappingKey, Ruleset, RulesetDiff } from "./types.js";

/** A UDP destination whose conntrack entries (original direction) must go. */
export interface UdpDestination {
  readonly family: IpFamily;
  /** The external IP, canonical. */
  readonly ip: string;
  readonly port: number;
}

function destinationOf(mapping: MappingKey): UdpDestination {
  return { family: mapping.family, ip: mapping.externalIP, port: mapping.port };
}

/** `family|ip|port`: the identity of a destination. */
export function destinationKey(destination: UdpDestination): string {
  return `${destination.family}|${destination.ip}|${destination.port}`;
}

/**
 * The UDP destinations whose flows `diff` makes stale: mappings added (flows that started
 * untranslated), removed (flows still translated), changed to another cluster IP, and changed in
 * the sources they admit (a flow from a source no longer admitted must not stay translated, one
 * from a newly admitted source must be). A change of owner alone keeps the translation, and its
 * flows with it. Each destination once, in the diff's order.
 */
export function staleUdpDestinations(diff: RulesetDiff): UdpDestination[] {
  const stale = new Map<string, UdpDestination>();
  const add = (mapping: Mapping) => {
    if (mapping.protocol !== "udp") return;
    const destination = destinationOf(mapping);
    stale.set(destinationKey(destination), destination);
  };
  diff.added.forEach(add);
  diff.removed.forEach(add);
  for (const { before, after } of diff.changed) {
    if (
      before.clusterIP !== after.clusterIP ||
      !sameSources(before.allowedSources, after.allowedSources)
    ) {
      add(after);
    }
  }
  return [...stale.values()];
}

/** Every UDP destination `ruleset` translates. */
export function udpDestinations(ruleset: Ruleset): UdpDestination[] {
  return udpDestinationsOf(ruleset.families.flatMap((family) => family.mappings));
}

/** The UDP destinations among `keys`, e.g. the keys an update removes. */
export function udpDestinationsOf(keys: readonly MappingKey[]): UdpDestination[] {
  return keys.filter((key) => key.protocol === "udp").map(destinationOf);
}
