/**
 * What one Service asks for, whatever the other Services are: admission (does it get mappings at
 * all?) and claims (which external IP, protocol and port it wants translated, and to where).
 * Conflicts between Services are settled later, by the engine.
 *
 * Never throws: whatever a Service object holds, the worst outcome is a skip naming the problem.
 */
import {
  type CanonicalIP,
  cidrContains,
  outermostCIDRs,
  parseClusterIP,
  parseExternalIP,
  parseSourceRange,
} from "./address.js";
import { quote } from "./errors.js";
import { type ServiceInput, SKIP_ANNOTATION } from "./input.js";
import { portKey, sameSources } from "./mapping.js";
import type { NodeIPs } from "./settings.js";
import type {
  CoreConfig,
  IpFamily,
  L4Protocol,
  Mapping,
  ServiceRef,
  SkippedEntry,
  SkipReason,
} from "./types.js";

/** RFC 1123 label: what Kubernetes allows for namespaces and Service names. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const PROTOCOLS: Readonly<Record<string, L4Protocol>> = { TCP: "tcp", UDP: "udp", SCTP: "sctp" };

/** One mapping a Service asks for, with what decides between Services claiming the same key. */
export interface Claim {
  readonly mapping: Mapping;
  /** The parsed external IP, with its sort key. */
  readonly ip: CanonicalIP;
  /** {@link portKey} of the mapping: (protocol, port) as one number. */
  readonly portKey: number;
  /**
   * Creation time in whole seconds since the epoch, the API's own precision (a small integer,
   * which V8 keeps in place rather than in a number of its own); missing or unreadable
   * timestamps sort last.
   */
  readonly created: number;
  /** `namespace/name`. */
  readonly owner: string;
}

/** What one Service contributes: its claims, and everything it had to leave out. */
export interface Contribution {
  readonly claims: readonly Claim[];
  readonly skipped: readonly SkippedEntry[];
  /**
   * True when the claims depend on the node's IPs (a restricted LoadBalancer ingress IP): the
   * Service must be computed again when they change.
   */
  readonly usesNodeIPs: boolean;
}

/** Older Services win; among equals the lower namespace/name, then the lower cluster IP. */
export function beats(a: Claim, b: Claim): boolean {
  if (a.created !== b.created) return a.created < b.created;
  if (a.owner !== b.owner) return a.owner < b.owner;
  return a.mapping.clusterIP < b.mapping.clusterIP;
}

type Skip = (reason: SkipReason, detail: string) => void;

// Most Services skip nothing and many claim nothing: one shared empty list each saves memory.
const NO_SKIPS: readonly SkippedEntry[] = Object.freeze([]);
const NO_CLAIMS: readonly Claim[] = Object.freeze([]);

/** A Service that gets mappings: who it is, where its traffic goes, and on which ports. */
interface Admitted {
  readonly ref: ServiceRef;
  readonly owner: string;
  readonly created: number;
  readonly clusterIPs: Partial<Record<IpFamily, CanonicalIP>>;
  readonly ports: readonly { readonly protocol: L4Protocol; readonly port: number }[];
  readonly sourceRanges: SourceRanges | undefined;
}

/**
 * `spec.loadBalancerSourceRanges` as kube-proxy reads them: per family, the valid ranges of that
 * family (kube-proxy's per-family proxiers each see only their own), and how many entries were
 * not CIDRs. Undefined when the Service lists none.
 */
interface SourceRanges {
  readonly byFamily: Readonly<Record<IpFamily, readonly string[]>>;
  readonly invalid: number;
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

/** `namespace/name` for reports, safe to print even when the metadata is hostile. */
function describeService(service: ServiceInput): string {
  const show = (part: unknown) =>
    typeof part === "string" && DNS_LABEL.test(part) ? part : quote(part ?? "");
  return `${show(service.metadata?.namespace ?? "default")}/${show(service.metadata?.name)}`;
}

function creationTime(service: ServiceInput): number {
  const stamp: unknown = service.metadata?.creationTimestamp;
  const time =
    stamp instanceof Date
      ? stamp.getTime()
      : typeof stamp === "string"
        ? Date.parse(stamp)
        : Number.NaN;
  return Number.isFinite(time) ? Math.floor(time / 1000) : Number.POSITIVE_INFINITY;
}

function externalAddresses(service: ServiceInput, config: CoreConfig): ExternalAddress[] {
  const found: ExternalAddress[] = [];
  if (service.spec?.type === "LoadBalancer") {
    const ingress: unknown = service.status?.loadBalancer?.ingress;
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
  const externalIPs: unknown = service.spec?.externalIPs;
  if (config.externalIPs && Array.isArray(externalIPs)) {
    externalIPs.forEach((value, index) => {
      found.push({ value, field: "spec.externalIPs", index });
    });
  }
  return found;
}

/** The Service's cluster IPs, at most one per family (the first valid one, as Kubernetes orders them). */
function clusterIPsByFamily(service: ServiceInput, skip: Skip): Admitted["clusterIPs"] {
  const spec = service.spec;
  const listed: readonly unknown[] =
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

/** The Service's valid ports, each (protocol, port) once. */
function servicePorts(service: ServiceInput, skip: Skip): Admitted["ports"] {
  const ports: { protocol: L4Protocol; port: number }[] = [];
  const seen = new Set<number>();
  const listed: unknown = service.spec?.ports;
  if (!Array.isArray(listed)) return ports;
  listed.forEach((entry: { port?: unknown; protocol?: unknown } | undefined, index) => {
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

/** Reads `spec.loadBalancerSourceRanges`, reporting each entry that is not a CIDR. */
function sourceRangesOf(service: ServiceInput, skip: Skip): SourceRanges | undefined {
  const listed: unknown = service.spec?.loadBalancerSourceRanges;
  if (!Array.isArray(listed) || listed.length === 0) return undefined;
  const byFamily: Record<IpFamily, string[]> = { ipv4: [], ipv6: [] };
  let invalid = 0;
  listed.forEach((entry: unknown, index) => {
    // kube-proxy skips empty entries without a word.
    if (typeof entry === "string" && entry.trim() === "") return;
    const parsed = parseSourceRange(entry);
    if (!parsed.ok) {
      invalid += 1;
      skip(
        "InvalidSourceRange",
        `spec.loadBalancerSourceRanges[${index}]: ${parsed.error}; ignored, as kube-proxy ignores it`,
      );
      return;
    }
    byFamily[parsed.value.family].push(parsed.value.cidr);
  });
  return { byFamily, invalid };
}

/** Sentinel: an address whose ranges could not be read at all, so it must stay untranslated. */
const UNREADABLE = Symbol("unreadable");

/**
 * The sources whose traffic to the LoadBalancer ingress IP `external` may be translated, as
 * kube-proxy's IPVS mode lets them through its source-range firewall: undefined when the Service
 * does not restrict this family (no range of it, or one that is /0, which kube-proxy reads as
 * "allow any"). The node itself is admitted, through the LB IP it sends from, when its IP is
 * inside a range.
 */
function allowedSourcesFor(
  ranges: SourceRanges | undefined,
  external: CanonicalIP,
  nodeIPs: NodeIPs,
): readonly string[] | undefined | typeof UNREADABLE {
  if (ranges === undefined) return undefined;
  const own = ranges.byFamily[external.family];
  if (own.length === 0) {
    // kube-proxy would leave this family open if every entry it could not read was of the other
    // family, and closed if one was of this one: we cannot tell which, so nothing is translated.
    return ranges.invalid > 0 ? UNREADABLE : undefined;
  }
  if (own.some((cidr) => cidr.endsWith("/0"))) return undefined;
  const nodeIP = nodeIPs[external.family];
  const admitsNode = own.some((cidr) => cidrContains(cidr, nodeIP));
  const hostBits = external.family === "ipv4" ? 32 : 128;
  return outermostCIDRs(admitsNode ? [...own, `${external.address}/${hostBits}`] : own);
}

/**
 * Admission: whether a Service gets mappings at all. `hasAddresses` says whether it lists any
 * external address; a Service without one is not our business (only a LoadBalancer still waiting
 * for its address is worth a report).
 */
function admit(
  service: ServiceInput,
  config: CoreConfig,
  hasAddresses: boolean,
  skip: Skip,
): Admitted | undefined {
  if (!hasAddresses) {
    if (service.spec?.type === "LoadBalancer") {
      skip("NoIngress", "the load balancer has not assigned an address yet");
    }
    return undefined;
  }
  const namespace: unknown = service.metadata?.namespace ?? "default";
  const name: unknown = service.metadata?.name;
  if (
    typeof namespace !== "string" ||
    !DNS_LABEL.test(namespace) ||
    typeof name !== "string" ||
    !DNS_LABEL.test(name)
  ) {
    skip("InvalidMetadata", "namespace and name must be DNS labels (lower-case a-z, 0-9 and -)");
    return undefined;
  }
  const annotations: unknown = service.metadata?.annotations;
  if ((annotations as Record<string, unknown> | undefined)?.[SKIP_ANNOTATION] === "true") {
    skip("OptedOut", `annotation ${SKIP_ANNOTATION} is "true"`);
    return undefined;
  }
  if (config.onlyLocalTrafficPolicy && service.spec?.externalTrafficPolicy !== "Local") {
    skip(
      "NotLocalTrafficPolicy",
      `externalTrafficPolicy is ${quote(service.spec?.externalTrafficPolicy ?? "Cluster")}`,
    );
    return undefined;
  }
  const clusterIPs = clusterIPsByFamily(service, skip);
  if (clusterIPs.ipv4 === undefined && clusterIPs.ipv6 === undefined) {
    skip("NoClusterIP", "the Service is headless or has no cluster IP");
    return undefined;
  }
  const ports = servicePorts(service, skip);
  if (ports.length === 0) {
    skip("NoPorts", "the Service has no valid port");
    return undefined;
  }
  return {
    ref: { namespace, name },
    owner: `${namespace}/${name}`,
    created: creationTime(service),
    clusterIPs,
    ports,
    sourceRanges: sourceRangesOf(service, skip),
  };
}

/** The usable external IP of one address, or undefined after reporting why it is not usable. */
function usableAddress(
  address: ExternalAddress,
  admitted: Admitted,
  enabled: ReadonlySet<IpFamily>,
  skip: Skip,
): CanonicalIP | undefined {
  if (address.value === undefined || address.value === null || address.value === "") {
    if (typeof address.hostname === "string" && address.hostname !== "") {
      skip(
        "HostnameOnlyIngress",
        `${originOf(address)} has only the hostname ${quote(address.hostname)}`,
      );
    } else {
      skip("InvalidIP", `${originOf(address)} has no IP`);
    }
    return undefined;
  }
  if (address.ipMode === "Proxy") {
    skip("ProxyIPMode", `${originOf(address)} ${quote(address.value)} has ipMode Proxy`);
    return undefined;
  }
  const parsed = parseExternalIP(address.value);
  if (!parsed.ok) {
    skip("InvalidIP", `${originOf(address)}: ${parsed.error}`);
    return undefined;
  }
  const external = parsed.value;
  if (!enabled.has(external.family)) {
    skip(
      "FamilyNotEnabled",
      `${originOf(address)} ${external.address}: ${external.family} is not enabled`,
    );
    return undefined;
  }
  if (admitted.clusterIPs[external.family] === undefined) {
    skip(
      "NoClusterIPForFamily",
      `${originOf(address)} ${external.address}: the Service has no ${external.family} cluster IP`,
    );
    return undefined;
  }
  return external;
}

/**
 * Claims: every usable external address times every port, each (IP, protocol, port) once.
 * `restricted` is set when a claim depends on the node's IPs.
 */
function claim(
  admitted: Admitted,
  addresses: readonly ExternalAddress[],
  enabled: ReadonlySet<IpFamily>,
  nodeIPs: NodeIPs,
  skip: Skip,
): { claims: Claim[]; restricted: boolean } {
  const claims: Claim[] = [];
  const seen: string[] = [];
  let restricted = false;
  for (const address of addresses) {
    const external = usableAddress(address, admitted, enabled, skip);
    // The same IP listed twice (e.g. as ingress and as externalIP) is claimed once, with the
    // ingress entry's restrictions: ingress comes first, and IPVS mode's source-range firewall
    // checks every packet to the address, whichever field listed it. A Service has few
    // addresses, so a short array beats a Set.
    if (external === undefined || seen.includes(external.address)) continue;
    seen.push(external.address);
    // kube-proxy applies source ranges to LoadBalancer ingress IPs only, not to externalIPs.
    const allowedSources =
      address.field === "status.loadBalancer.ingress"
        ? allowedSourcesFor(admitted.sourceRanges, external, nodeIPs)
        : undefined;
    if (allowedSources === UNREADABLE) {
      skip(
        "InvalidSourceRange",
        `${originOf(address)} ${external.address}: no entry of spec.loadBalancerSourceRanges is a readable ${external.family} CIDR, so the sources kube-proxy admits are unknown; not translated`,
      );
      continue;
    }
    restricted ||= allowedSources !== undefined;
    const clusterIP = (admitted.clusterIPs[external.family] as CanonicalIP).address;
    for (const { protocol, port } of admitted.ports) {
      const mapping: Mapping = {
        family: external.family,
        externalIP: external.address,
        protocol,
        port,
        clusterIP,
        service: admitted.ref,
        ...(allowedSources === undefined ? {} : { allowedSources }),
      };
      claims.push({
        mapping,
        ip: external,
        portKey: portKey(mapping),
        created: admitted.created,
        owner: admitted.owner,
      });
    }
  }
  return { claims, restricted };
}

/**
 * Everything one Service contributes. `enabled` is the set of `config.families`; `nodeIPs` decide
 * whether source ranges admit the node.
 */
export function contributionOf(
  service: ServiceInput,
  config: CoreConfig,
  enabled: ReadonlySet<IpFamily>,
  nodeIPs: NodeIPs,
): Contribution {
  if (service === null || typeof service !== "object") {
    return {
      claims: [],
      skipped: [{ service: "?/?", reason: "InvalidMetadata", detail: "not an object" }],
      usesNodeIPs: false,
    };
  }
  let skipped: SkippedEntry[] | undefined;
  // Described only when something is skipped: most Services never are.
  let owner: string | undefined;
  const skip: Skip = (reason, detail) => {
    owner ??= describeService(service);
    skipped ??= [];
    skipped.push({ service: owner, reason, detail });
  };
  const addresses = externalAddresses(service, config);
  const admitted = admit(service, config, addresses.length > 0, skip);
  // Checked before any claim is built: a million of them would exhaust memory on the way. A
  // restricted mapping becomes one kernel entry per allowed source, so ranges count too.
  if (admitted !== undefined) {
    const ranges = admitted.sourceRanges;
    const perMapping =
      ranges === undefined
        ? 1
        : Math.max(1, ranges.byFamily.ipv4.length, ranges.byFamily.ipv6.length) + 1;
    const asked = addresses.length * admitted.ports.length * perMapping;
    if (asked > config.maxMappingsPerService) {
      const sources =
        perMapping > 1 ? ` × ${perMapping} allowed sources (loadBalancerSourceRanges)` : "";
      skip(
        "TooManyMappings",
        `${addresses.length} external addresses × ${admitted.ports.length} ports${sources} ask for ${asked} mappings, more than the ${config.maxMappingsPerService} allowed per Service`,
      );
      return { claims: NO_CLAIMS, skipped: skipped ?? NO_SKIPS, usesNodeIPs: false };
    }
  }
  const claimed =
    admitted === undefined
      ? { claims: [], restricted: false }
      : claim(admitted, addresses, enabled, nodeIPs, skip);
  // A copy of exact size: the pushed-to array reserved room for more, and this one is kept.
  const claims = claimed.claims.length === 0 ? NO_CLAIMS : claimed.claims.slice();
  return { claims, skipped: skipped ?? NO_SKIPS, usesNodeIPs: claimed.restricted };
}

function sameSkipped(a: readonly SkippedEntry[], b: readonly SkippedEntry[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as SkippedEntry;
    const y = b[i] as SkippedEntry;
    if (x.service !== y.service || x.reason !== y.reason || x.detail !== y.detail) return false;
  }
  return true;
}

/**
 * Whether two contributions would give the same rules and reports: the same claims (mapping,
 * owner and age, in order) and the same skips. An update of a Service that changes nothing the
 * core reads (a label, a status condition) gives an equal contribution.
 */
export function sameContribution(a: Contribution, b: Contribution): boolean {
  if (a.claims.length !== b.claims.length || !sameSkipped(a.skipped, b.skipped)) return false;
  for (let i = 0; i < a.claims.length; i++) {
    const x = a.claims[i] as Claim;
    const y = b.claims[i] as Claim;
    if (
      x.created !== y.created ||
      x.owner !== y.owner ||
      x.portKey !== y.portKey ||
      x.mapping.externalIP !== y.mapping.externalIP ||
      x.mapping.clusterIP !== y.mapping.clusterIP ||
      !sameSources(x.mapping.allowedSources, y.mapping.allowedSources)
    ) {
      return false;
    }
  }
  return true;
}
