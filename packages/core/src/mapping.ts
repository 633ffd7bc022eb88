/**
 * Identity and order of mappings, shared by the engine, the diff and the backends.
 */
import { parseIP } from "./address.js";
import type { IpFamily, L4Protocol, Mapping, MappingKey } from "./types.js";

/** `family|externalIP|protocol|port`: the identity of a mapping (its cluster IP and owner may change). */
export function mappingKey(mapping: MappingKey): string {
  return `${mapping.family}|${mapping.externalIP}|${mapping.protocol}|${mapping.port}`;
}

/** Protocols in the order {@link compareMappings} sorts them (by name). */
const PROTOCOL_RANK: Readonly<Record<L4Protocol, number>> = { sctp: 0, tcp: 1, udp: 2 };

/** (protocol, port) as one number that sorts in canonical order: unique per external IP. */
export function portKey(mapping: Pick<MappingKey, "protocol" | "port">): number {
  return PROTOCOL_RANK[mapping.protocol] * 65536 + mapping.port;
}

const PROTOCOL_OF_RANK: readonly L4Protocol[] = ["sctp", "tcp", "udp"];

/** The key of a mapping from its family, external IP and {@link portKey}. */
export function keyOfPort(family: IpFamily, externalIP: string, key: number): MappingKey {
  return {
    family,
    externalIP,
    protocol: PROTOCOL_OF_RANK[Math.floor(key / 65536)] as L4Protocol,
    port: key % 65536,
  };
}

function addressSortKey(address: string): string {
  const parsed = parseIP(address);
  return parsed.ok ? parsed.value.sortKey : address;
}

/** Canonical order: family (IPv4 first), external IP numerically, protocol, port. */
export function compareMappings(a: MappingKey, b: MappingKey): number {
  if (a.family !== b.family) return a.family < b.family ? -1 : 1;
  if (a.externalIP !== b.externalIP) {
    return addressSortKey(a.externalIP) < addressSortKey(b.externalIP) ? -1 : 1;
  }
  if (a.protocol !== b.protocol) return a.protocol < b.protocol ? -1 : 1;
  return a.port - b.port;
}

/** Returns a new array of `mappings` in canonical order. */
export function sortMappings(mappings: readonly Mapping[]): Mapping[] {
  // Each address is parsed once, not once per comparison.
  const keyed = mappings.map((mapping) => ({
    mapping,
    key: `${mapping.family}|${addressSortKey(mapping.externalIP)}`,
    port: portKey(mapping),
  }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.port - b.port));
  return keyed.map((entry) => entry.mapping);
}

/** Whether two `allowedSources` lists admit the same sources (both canonical, or both absent). */
export function sameSources(
  a: readonly string[] | undefined,
  b: readonly string[] | undefined,
): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  return a.every((cidr, i) => cidr === b[i]);
}

/**
 * Whether two mappings with the same key translate the same sources to the same place for the
 * same owner. Written out rather than deep-compared: it runs for every mapping of a diff.
 */
export function sameTranslation(a: Mapping, b: Mapping): boolean {
  return (
    a.clusterIP === b.clusterIP &&
    a.service.namespace === b.service.namespace &&
    a.service.name === b.service.name &&
    sameSources(a.allowedSources, b.allowedSources)
  );
}
