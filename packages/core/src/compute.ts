/**
 * Services in, ruleset out: the one place where the controller decides which traffic to translate.
 */
import type { V1Service, V1ServicePort } from "@kubernetes/client-node";
import { type CanonicalIP, parseCIDR, parseClusterIP, parseExternalIP, quote } from "./address.js";
import { markForBit, resolveConfig } from "./config.js";
import { compareMappings, portKey } from "./mapping.js";
import type {
  Conflict,
  CoreConfig,
  FamilyRuleset,
  IpFamily,
  L4Protocol,
  LocalPodMatch,
  Mapping,
  NodeFacts,
  Ruleset,
  ServiceRef,
  SkippedEntry,
} from "./types.js";

/**
 * The per-Service opt-out: a Service annotated `ipvs-node-controller.io/skip: "true"` gets no rules.
 */
export const SKIP_ANNOTATION = "ipvs-node-controller.io/skip";

/** What {@link computeRuleset} needs. */
export interface RulesetInput {
  /** Services as the Kubernetes API returns them (typed objects or parsed JSON/YAML). */
  readonly services: readonly V1Service[];
  /** Facts about this node; only the NodeCIDR detection mode uses them. */
  readonly node?: NodeFacts;
  /** Options; missing ones take {@link DEFAULT_CONFIG}'s values. */
  readonly config?: Partial<CoreConfig>;
}

/** What {@link computeRuleset} returns. */
export interface RulesetResult {
  /** The desired state, canonical and deterministic. */
  readonly ruleset: Ruleset;
  /** Services or parts of Services that produced no mapping, sorted by service then reason. */
  readonly skipped: readonly SkippedEntry[];
  /** (IP, protocol, port) claimed by more than one Service, sorted. */
  readonly conflicts: readonly Conflict[];
  /** Problems with node facts (e.g. a malformed pod CIDR), which are skipped rather than fatal. */
  readonly warnings: readonly string[];
}

/** RFC 1123 label: what Kubernetes allows for namespaces and Service names. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const PROTOCOLS: Readonly<Record<string, L4Protocol>> = { TCP: "tcp", UDP: "udp", SCTP: "sctp" };

/** A mapping candidate with what is needed to pick a winner among Services claiming the same key. */
interface Candidate {
  readonly mapping: Mapping;
  /** Milliseconds since the epoch; missing or unreadable timestamps sort last. */
  readonly created: number;
  readonly owner: string;
  /** The object it came from, to tell one Service listing an IP twice from two Services. */
  readonly source: V1Service;
  /** {@link portKey} of the mapping. */
  readonly key: number;
  /** The parsed external IP, with its sort key. */
  readonly ip: CanonicalIP;
}

/**
 * The winning candidates on one external IP, one per (protocol, port). Grouping by IP keeps the
 * per-sync work to one string-keyed lookup per IP and one string sort of IPs; an IP has few
 * ports, so a short array searched linearly beats a Map per IP.
 */
interface IpClaims {
  readonly ip: CanonicalIP;
  readonly winners: Candidate[];
}

/**
 * Contributions remembered per Service object and resourceVersion, so that a sync after a small
 * change recomputes only the Services that changed: the objects of an informer cache are replaced,
 * never mutated, when they change. Objects without a resourceVersion (e.g. read from a file) are
 * always computed afresh. The key also holds the options a contribution depends on.
 */
const remembered = new WeakMap<object, { key: string; contribution: Contribution }>();

function cachedContributionOf(
  service: V1Service,
  config: CoreConfig,
  enabled: ReadonlySet<IpFamily>,
  configKey: string,
): Contribution {
  const version = service.metadata?.resourceVersion;
  if (typeof version !== "string" || version === "")
    return contributionOf(service, config, enabled);
  const key = `${configKey}|${version}`;
  const hit = remembered.get(service);
  if (hit?.key === key) return hit.contribution;
  const contribution = contributionOf(service, config, enabled);
  remembered.set(service, { key, contribution });
  return contribution;
}

function creationTime(service: V1Service): number {
  const stamp: unknown = service.metadata?.creationTimestamp;
  const time =
    stamp instanceof Date
      ? stamp.getTime()
      : typeof stamp === "string"
        ? Date.parse(stamp)
        : Number.NaN;
  return Number.isFinite(time) ? time : Number.POSITIVE_INFINITY;
}

/** `namespace/name` for reports, safe to print even when the metadata is hostile. */
function describeService(service: V1Service): string {
  const namespace = service.metadata?.namespace;
  const name = service.metadata?.name;
  const show = (part: unknown) =>
    typeof part === "string" && DNS_LABEL.test(part) ? part : quote(part ?? "");
  return `${show(namespace ?? "default")}/${show(name)}`;
}

function serviceRef(service: V1Service): ServiceRef | undefined {
  const namespace = service.metadata?.namespace ?? "default";
  const name = service.metadata?.name;
  if (typeof namespace !== "string" || !DNS_LABEL.test(namespace)) return undefined;
  if (typeof name !== "string" || !DNS_LABEL.test(name)) return undefined;
  return { namespace, name };
}

/** An address this Service wants translated, before validation, with where it came from. */
interface ExternalAddress {
  readonly value: unknown;
  /** The field it was found in and its index; turned into text only when reported. */
  readonly field: "status.loadBalancer.ingress" | "spec.externalIPs";
  readonly index: number;
  readonly ipMode?: unknown;
  readonly hostname?: unknown;
}

function originOf(address: ExternalAddress): string {
  return `${address.field}[${address.index}]`;
}

function externalAddresses(service: V1Service, config: CoreConfig): ExternalAddress[] {
  const found: ExternalAddress[] = [];
  if (service.spec?.type === "LoadBalancer") {
    const ingress = service.status?.loadBalancer?.ingress;
    if (Array.isArray(ingress)) {
      ingress.forEach((entry, index) => {
        found.push({
          value: entry?.ip,
          field: "status.loadBalancer.ingress",
          index,
          ipMode: entry?.ipMode,
          hostname: entry?.hostname,
        });
      });
    }
  }
  const externalIPs = service.spec?.externalIPs;
  if (config.externalIPs && Array.isArray(externalIPs)) {
    externalIPs.forEach((value, index) => {
      found.push({ value, field: "spec.externalIPs", index });
    });
  }
  return found;
}

interface ServicePortSpec {
  readonly protocol: L4Protocol;
  readonly port: number;
}

/** The Service's cluster IPs, at most one per family (the first valid one, as Kubernetes orders them). */
function clusterIPsByFamily(
  service: V1Service,
  skip: (reason: SkippedEntry["reason"], detail: string) => void,
): Partial<Record<IpFamily, CanonicalIP>> {
  const spec = service.spec;
  const listed =
    Array.isArray(spec?.clusterIPs) && spec.clusterIPs.length > 0
      ? spec.clusterIPs
      : [spec?.clusterIP];
  const byFamily: Partial<Record<IpFamily, CanonicalIP>> = {};
  listed.forEach((value, index) => {
    if (value === undefined || value === null || value === "" || value === "None") return;
    const parsed = parseClusterIP(value);
    if (!parsed.ok) {
      skip("InvalidIP", `spec.clusterIPs[${index}]: ${parsed.error}`);
      return;
    }
    byFamily[parsed.value.family] ??= parsed.value;
  });
  return byFamily;
}

function servicePorts(
  service: V1Service,
  skip: (reason: SkippedEntry["reason"], detail: string) => void,
): ServicePortSpec[] {
  const ports: ServicePortSpec[] = [];
  const seen = new Set<number>();
  const listed: unknown = service.spec?.ports;
  if (!Array.isArray(listed)) return ports;
  listed.forEach((entry: V1ServicePort | undefined, index) => {
    const rawProtocol: unknown = entry?.protocol ?? "TCP";
    const protocol = typeof rawProtocol === "string" ? PROTOCOLS[rawProtocol] : undefined;
    if (protocol === undefined) {
      skip(
        "InvalidPort",
        `spec.ports[${index}]: protocol ${quote(rawProtocol)} is not TCP, UDP or SCTP`,
      );
      return;
    }
    const port: unknown = entry?.port;
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      skip(
        "InvalidPort",
        `spec.ports[${index}]: port ${quote(port)} is not an integer from 1 to 65535`,
      );
      return;
    }
    const key = portKey({ protocol, port });
    if (seen.has(key)) return;
    seen.add(key);
    ports.push({ protocol, port });
  });
  return ports;
}

/** What one Service contributes, whatever the other Services are. */
interface Contribution {
  readonly claims: readonly Candidate[];
  readonly skipped: readonly SkippedEntry[];
}

/**
 * Turns one Service into mapping candidates, reporting everything it had to leave out.
 * Never throws: whatever the object holds, the worst outcome is a skip.
 */
function contributionOf(
  service: V1Service,
  config: CoreConfig,
  enabled: ReadonlySet<IpFamily>,
): Contribution {
  const claims: Candidate[] = [];
  const skipped: SkippedEntry[] = [];
  const contribution: Contribution = { claims, skipped };
  const skip = (reason: SkippedEntry["reason"], detail: string) => {
    skipped.push({ service: describeService(service), reason, detail });
  };
  const addresses = externalAddresses(service, config);
  if (addresses.length === 0) {
    // Only a LoadBalancer waiting for its address is worth a report; a plain ClusterIP Service is
    // simply not our business.
    if (service.spec?.type === "LoadBalancer") {
      skip("NoIngress", "the load balancer has not assigned an address yet");
    }
    return contribution;
  }
  const ref = serviceRef(service);
  if (ref === undefined) {
    skip("InvalidMetadata", "namespace and name must be DNS labels (lower-case a-z, 0-9 and -)");
    return contribution;
  }
  if (service.metadata?.annotations?.[SKIP_ANNOTATION] === "true") {
    skip("OptedOut", `annotation ${SKIP_ANNOTATION} is "true"`);
    return contribution;
  }
  if (config.onlyLocalTrafficPolicy && service.spec?.externalTrafficPolicy !== "Local") {
    skip(
      "NotLocalTrafficPolicy",
      `externalTrafficPolicy is ${quote(service.spec?.externalTrafficPolicy ?? "Cluster")}`,
    );
    return contribution;
  }
  const clusterIPs = clusterIPsByFamily(service, skip);
  if (clusterIPs.ipv4 === undefined && clusterIPs.ipv6 === undefined) {
    skip("NoClusterIP", "the Service is headless or has no cluster IP");
    return contribution;
  }
  const ports = servicePorts(service, skip);
  if (ports.length === 0) {
    skip("NoPorts", "the Service has no valid port");
    return contribution;
  }

  const created = creationTime(service);
  const owner = `${ref.namespace}/${ref.name}`;
  for (const address of addresses) {
    if (address.value === undefined || address.value === null || address.value === "") {
      if (typeof address.hostname === "string" && address.hostname !== "") {
        skip(
          "HostnameOnlyIngress",
          `${originOf(address)} has only the hostname ${quote(address.hostname)}`,
        );
      } else {
        skip("InvalidIP", `${originOf(address)} has no IP`);
      }
      continue;
    }
    if (address.ipMode === "Proxy") {
      skip("ProxyIPMode", `${originOf(address)} ${quote(address.value)} has ipMode Proxy`);
      continue;
    }
    const parsed = parseExternalIP(address.value);
    if (!parsed.ok) {
      skip("InvalidIP", `${originOf(address)}: ${parsed.error}`);
      continue;
    }
    const external = parsed.value;
    if (!enabled.has(external.family)) {
      skip(
        "FamilyNotEnabled",
        `${originOf(address)} ${external.address}: ${external.family} is not enabled`,
      );
      continue;
    }
    const clusterIP = clusterIPs[external.family];
    if (clusterIP === undefined) {
      skip(
        "NoClusterIPForFamily",
        `${originOf(address)} ${external.address}: the Service has no ${external.family} cluster IP`,
      );
      continue;
    }
    for (const { protocol, port } of ports) {
      const mapping: Mapping = {
        family: external.family,
        externalIP: external.address,
        protocol,
        port,
        clusterIP: clusterIP.address,
        service: ref,
      };
      claims.push({
        mapping,
        created,
        owner,
        source: service,
        key: portKey(mapping),
        ip: external,
      });
    }
  }
  return contribution;
}

/** Older Services win; among equals the lower namespace/name, then the lower cluster IP, so any input order agrees. */
function beats(a: Candidate, b: Candidate): boolean {
  if (a.created !== b.created) return a.created < b.created;
  if (a.owner !== b.owner) return a.owner < b.owner;
  return a.mapping.clusterIP < b.mapping.clusterIP;
}

function localPodMatches(
  config: CoreConfig,
  node: NodeFacts | undefined,
  warnings: string[],
): Map<IpFamily, LocalPodMatch> {
  const detection = config.localDetection;
  const result = new Map<IpFamily, LocalPodMatch>();
  if (detection.mode === "BridgeInterface" || detection.mode === "InterfaceNamePrefix") {
    const match: LocalPodMatch =
      detection.mode === "BridgeInterface"
        ? { kind: "inputInterface", name: detection.interfaceName }
        : { kind: "inputInterfacePrefix", prefix: detection.interfacePrefix };
    for (const family of config.families) result.set(family, match);
    return result;
  }

  const texts = detection.mode === "ClusterCIDR" ? detection.cidrs : (node?.podCIDRs ?? []);
  const byFamily = new Map<IpFamily, Set<string>>();
  for (const text of texts) {
    const parsed = parseCIDR(text);
    if (!parsed.ok) {
      warnings.push(`pod CIDR ignored: ${parsed.error}`);
      continue;
    }
    const set = byFamily.get(parsed.value.family) ?? new Set<string>();
    set.add(parsed.value.cidr);
    byFamily.set(parsed.value.family, set);
  }
  for (const family of config.families) {
    const cidrs = [...(byFamily.get(family) ?? [])].sort();
    result.set(family, { kind: "sourceCIDRs", cidrs });
    if (cidrs.length === 0 && detection.mode === "NodeCIDR") {
      warnings.push(
        `no ${family} pod CIDR is known for this node: only host-network traffic is translated for ${family}`,
      );
    }
  }
  return result;
}

function compareConflicts(a: Conflict, b: Conflict): number {
  return compareMappings(a, b) || (a.loser < b.loser ? -1 : a.loser > b.loser ? 1 : 0);
}

function compareSkipped(a: SkippedEntry, b: SkippedEntry): number {
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  if (a.detail !== b.detail) return a.detail < b.detail ? -1 : 1;
  return a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0;
}

/**
 * Computes the complete desired NAT state of a node.
 *
 * Pure and deterministic: no I/O, no clock; the same Services in any order give a byte-identical
 * ruleset. Bad Service data never throws — the offending Service (or just the offending address or
 * port) is reported in `skipped` — while bad configuration throws a {@link ConfigError}.
 *
 * @example
 * ```ts
 * const { ruleset, skipped } = computeRuleset({ services, node: { podCIDRs: ["10.244.1.0/24"] } });
 * ```
 */
export function computeRuleset(input: RulesetInput): RulesetResult {
  const config = resolveConfig(input.config);
  const enabled = new Set(config.families);
  const configKey = `${config.families.join(",")}|${config.externalIPs}|${config.onlyLocalTrafficPolicy}`;
  const skipped: SkippedEntry[] = [];
  const warnings: string[] = [];

  const claims = new Map<string, IpClaims>();
  const losers: { loser: Candidate; claims: IpClaims }[] = [];
  const claim = (candidate: Candidate) => {
    const { ip } = candidate;
    let entry = claims.get(ip.address);
    if (entry === undefined) {
      entry = { ip, winners: [] };
      claims.set(ip.address, entry);
    }
    const index = entry.winners.findIndex((winner) => winner.key === candidate.key);
    const current = entry.winners[index];
    if (current === undefined) {
      entry.winners.push(candidate);
    } else if (current.source === candidate.source) {
      // The same Service lists the IP twice (ingress and externalIPs): one mapping.
    } else if (beats(candidate, current)) {
      entry.winners[index] = candidate;
      losers.push({ loser: current, claims: entry });
    } else {
      losers.push({ loser: candidate, claims: entry });
    }
  };
  for (const service of input.services) {
    if (service === null || typeof service !== "object") {
      skipped.push({ service: "?/?", reason: "InvalidMetadata", detail: "not an object" });
      continue;
    }
    const contribution = cachedContributionOf(service, config, enabled, configKey);
    for (const entry of contribution.skipped) skipped.push(entry);
    for (const candidate of contribution.claims) claim(candidate);
  }

  const conflicts: Conflict[] = [];
  for (const { loser, claims: entry } of losers) {
    const winner = entry.winners.find((candidate) => candidate.key === loser.key) as Candidate;
    const { family, externalIP, protocol, port } = loser.mapping;
    conflicts.push({
      family,
      externalIP,
      protocol,
      port,
      winner: winner.owner,
      loser: loser.owner,
    });
    skipped.push({
      service: loser.owner,
      reason: "Conflict",
      detail: `${externalIP} ${protocol}/${port} is already claimed by the older Service ${winner.owner}`,
    });
  }

  const byFamily = new Map<IpFamily, IpClaims[]>(config.families.map((family) => [family, []]));
  for (const entry of claims.values()) byFamily.get(entry.ip.family)?.push(entry);
  const localPods = localPodMatches(config, input.node, warnings);
  const families: FamilyRuleset[] = config.families.map((family) => {
    const entries = (byFamily.get(family) as IpClaims[]).sort((a, b) =>
      a.ip.sortKey < b.ip.sortKey ? -1 : a.ip.sortKey > b.ip.sortKey ? 1 : 0,
    );
    const mappings: Mapping[] = [];
    for (const { winners } of entries) {
      if (winners.length > 1) winners.sort((a, b) => a.key - b.key);
      for (const winner of winners) mappings.push(winner.mapping);
    }
    return { family, localPods: localPods.get(family) as LocalPodMatch, mappings };
  });

  return {
    ruleset: { masqueradeMark: markForBit(config.masqueradeBit), families },
    skipped: skipped.sort(compareSkipped),
    conflicts: conflicts.sort(compareConflicts),
    warnings,
  };
}

/** A ruleset with the configured families and settings but no mappings, e.g. before the first sync. */
export function emptyRuleset(config?: Partial<CoreConfig>, node?: NodeFacts): Ruleset {
  return computeRuleset({ services: [], config, node }).ruleset;
}
