/**
 * Reads back our table (`nft -j list table inet NAME`) and compares it with what a full sync of a
 * ruleset would create. Anything unexpected (a missing or extra object, a changed rule, an element
 * too many or too few, a different cluster IP or comment) means "not in sync".
 *
 * For a diagnosis rather than a yes or no, {@link listedMappings} reads the translations out of
 * a listing and {@link structureProblems} names what differs around them.
 */
import { isDeepStrictEqual } from "node:util";
import {
  addressValue,
  cidrRange,
  compareMappings,
  type IpFamily,
  type L4Protocol,
  type LiveMapping,
  parseIP,
  quote,
  type Ruleset,
  type RulesetSettings,
} from "@ipvs-node-controller/core";
import {
  type AddressInterval,
  CHAIN_PRIORITY,
  CHAINS,
  chainRules,
  cidrInterval,
  elementComment,
  mapName,
  mergeIntervals,
  type NftObject,
  podSetName,
} from "./compile.js";

interface LiveChain {
  type?: unknown;
  hook?: unknown;
  prio?: unknown;
  policy?: unknown;
  rules: unknown[];
}

interface LiveCollection {
  type?: unknown;
  map?: unknown;
  elem?: unknown;
  isMap: boolean;
}

/** The parts of a listing that matter, indexed by name. */
export interface LiveTable {
  chains: Map<string, LiveChain>;
  collections: Map<string, LiveCollection>;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Indexes the listing of one table. Throws on a document that is not nft's JSON at all. */
export function parseListing(stdout: string): LiveTable {
  const document: unknown = JSON.parse(stdout);
  if (!isObject(document) || !Array.isArray(document.nftables)) {
    throw new Error("not a libnftables JSON document");
  }
  const live: LiveTable = { chains: new Map(), collections: new Map() };
  const rules: { chain: string; expr: unknown }[] = [];
  for (const item of document.nftables as unknown[]) {
    if (!isObject(item)) continue;
    if (isObject(item.chain)) {
      const { name, type, hook, prio, policy } = item.chain;
      live.chains.set(String(name), { type, hook, prio, policy, rules: [] });
    } else if (isObject(item.rule)) {
      rules.push({ chain: String(item.rule.chain), expr: item.rule.expr });
    } else if (isObject(item.set) || isObject(item.map)) {
      const collection = (item.set ?? item.map) as Record<string, unknown>;
      live.collections.set(String(collection.name), {
        type: collection.type,
        map: collection.map,
        elem: collection.elem,
        isMap: isObject(item.map),
      });
    }
  }
  for (const { chain, expr } of rules) {
    const target = live.chains.get(chain);
    // A rule in a chain we do not know about still makes the table differ.
    if (target === undefined) live.chains.set(chain, { rules: [expr] });
    else target.rules.push(expr);
  }
  return live;
}

/** One set element as an address interval: a bare address, a prefix, or a range. */
function setElementInterval(element: unknown): AddressInterval | undefined {
  const value = isObject(element) && isObject(element.elem) ? element.elem.val : element;
  if (typeof value === "string") {
    const address = addressValue(value)?.value;
    return address === undefined ? undefined : { first: address, last: address };
  }
  if (isObject(value) && isObject(value.prefix)) {
    return cidrRange(`${String(value.prefix.addr)}/${String(value.prefix.len)}`);
  }
  if (isObject(value) && Array.isArray(value.range) && value.range.length === 2) {
    const first = addressValue(value.range[0])?.value;
    const last = addressValue(value.range[1])?.value;
    return first === undefined || last === undefined ? undefined : { first, last };
  }
  return undefined;
}

/** The parts of one translation-map element as nft lists it, the key unwrapped from `elem` when it carries a comment. */
interface MapElementParts {
  readonly address: unknown;
  readonly protocol: unknown;
  readonly port: unknown;
  readonly data: unknown;
  /** The element's comment; empty when it has none. */
  readonly comment: string;
}

/** Splits `[key, data]` into its parts, or undefined when its shape is not a map element of ours. */
function mapElementParts(element: unknown): MapElementParts | undefined {
  if (!Array.isArray(element) || element.length !== 2) return undefined;
  const [keyPart, data] = element as [unknown, unknown];
  let key = keyPart;
  let comment = "";
  if (isObject(keyPart) && isObject(keyPart.elem)) {
    key = keyPart.elem.val;
    comment = typeof keyPart.elem.comment === "string" ? keyPart.elem.comment : "";
  }
  if (!isObject(key) || !Array.isArray(key.concat) || key.concat.length !== 3) return undefined;
  const [address, protocol, port] = key.concat as unknown[];
  return { address, protocol, port, data, comment };
}

/** One map element as `ip|protocol|port` -> `clusterIP|comment`. */
function mapElementEntry(element: unknown): [string, string] | undefined {
  const parts = mapElementParts(element);
  if (parts === undefined) return undefined;
  const { address, protocol, port, data, comment } = parts;
  return [`${String(address)}|${String(protocol)}|${String(port)}`, `${String(data)}|${comment}`];
}

function sameIntervals(live: unknown, cidrs: readonly string[]): boolean {
  const elements = live === undefined ? [] : live;
  if (!Array.isArray(elements)) return false;
  const liveIntervals: AddressInterval[] = [];
  for (const element of elements) {
    const interval = setElementInterval(element);
    if (interval === undefined) return false;
    liveIntervals.push(interval);
  }
  return isDeepStrictEqual(mergeIntervals(liveIntervals), mergeIntervals(cidrs.map(cidrInterval)));
}

function sameMapElements(live: unknown, expected: Map<string, string>): boolean {
  const elements = live === undefined ? [] : live;
  if (!Array.isArray(elements) || elements.length !== expected.size) return false;
  for (const element of elements) {
    const entry = mapElementEntry(element);
    if (entry === undefined || expected.get(entry[0]) !== entry[1]) return false;
  }
  return true;
}

/** True when the listed table holds exactly what a full sync of `ruleset` creates. */
export function tableMatches(live: LiveTable, ruleset: Ruleset): boolean {
  const expectedRules = chainRules(ruleset);
  if (live.chains.size !== Object.keys(CHAINS).length) return false;
  for (const [name, hook] of [
    [CHAINS.prerouting, "prerouting"],
    [CHAINS.output, "output"],
  ] as const) {
    const chain = live.chains.get(name);
    if (
      chain === undefined ||
      chain.type !== "nat" ||
      chain.hook !== hook ||
      chain.prio !== CHAIN_PRIORITY ||
      chain.policy !== "accept" ||
      !isDeepStrictEqual(chain.rules, expectedRules[name] as NftObject[][])
    ) {
      return false;
    }
  }

  let expectedCollections = 0;
  for (const family of ruleset.families) {
    const addressType = family.family === "ipv4" ? "ipv4_addr" : "ipv6_addr";
    if (family.localPods.kind === "sourceCIDRs") {
      expectedCollections += 1;
      const set = live.collections.get(podSetName(family.family));
      if (set === undefined || set.isMap || set.type !== addressType) return false;
      if (!sameIntervals(set.elem, family.localPods.cidrs)) return false;
    }
    expectedCollections += 1;
    const map = live.collections.get(mapName(family.family));
    if (
      map === undefined ||
      !map.isMap ||
      map.map !== addressType ||
      !isDeepStrictEqual(map.type, [addressType, "inet_proto", "inet_service"])
    ) {
      return false;
    }
    const expected = new Map(
      family.mappings.map((mapping) => [
        `${mapping.externalIP}|${mapping.protocol}|${mapping.port}`,
        `${mapping.clusterIP}|${elementComment(mapping.service)}`,
      ]),
    );
    if (!sameMapElements(map.elem, expected)) return false;
  }
  return live.collections.size === expectedCollections;
}

/** The family whose translations a map of that name holds, if it is one of ours. */
function mapFamily(name: string): IpFamily | undefined {
  return (["ipv4", "ipv6"] as const).find((family) => mapName(family) === name);
}

const PROTOCOLS: ReadonlySet<string> = new Set<L4Protocol>(["tcp", "udp", "sctp"]);

/** One element of a translation map as a {@link LiveMapping}, or undefined if it is not one. */
function liveMapping(family: IpFamily, element: unknown): LiveMapping | undefined {
  const parts = mapElementParts(element);
  if (parts === undefined) return undefined;
  const { address, protocol, port, data, comment: owner } = parts;
  const external = parseIP(address);
  const cluster = parseIP(data);
  if (
    !external.ok ||
    external.value.family !== family ||
    !cluster.ok ||
    cluster.value.family !== family ||
    typeof protocol !== "string" ||
    !PROTOCOLS.has(protocol) ||
    typeof port !== "number" ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535
  ) {
    return undefined;
  }
  return {
    family,
    externalIP: external.value.address,
    protocol: protocol as L4Protocol,
    port,
    clusterIP: cluster.value.address,
    owner,
  };
}

/**
 * The translations held by the maps of a listed table, in canonical order, and a sentence for each
 * element that is not a translation of ours (which only a hand edit can put there).
 */
export function listedMappings(live: LiveTable): {
  readonly mappings: LiveMapping[];
  readonly unreadable: string[];
} {
  const mappings: LiveMapping[] = [];
  const unreadable: string[] = [];
  for (const [name, collection] of live.collections) {
    const family = mapFamily(name);
    if (family === undefined || !collection.isMap || !Array.isArray(collection.elem)) continue;
    for (const element of collection.elem as unknown[]) {
      const found = liveMapping(family, element);
      if (found) mappings.push(found);
      else
        unreadable.push(
          `map ${name} holds an element that is not a translation: ${quote(JSON.stringify(element))}`,
        );
    }
  }
  return { mappings: mappings.sort(compareMappings), unreadable };
}

function describeRules(count: number): string {
  return count === 1 ? "1 rule" : `${count} rules`;
}

/** How one base chain differs from what a full sync writes into it. */
function chainProblems(
  name: string,
  hook: string,
  chain: LiveChain | undefined,
  expected: readonly NftObject[][],
): string[] {
  if (chain === undefined) return [`chain ${name} is missing`];
  const problems: string[] = [];
  if (
    chain.type !== "nat" ||
    chain.hook !== hook ||
    chain.prio !== CHAIN_PRIORITY ||
    chain.policy !== "accept"
  ) {
    problems.push(
      `chain ${name} is not a nat chain at hook ${hook}, priority ${CHAIN_PRIORITY}, policy accept`,
    );
  }
  const missing = expected.filter(
    (rule) => !chain.rules.some((liveRule) => isDeepStrictEqual(liveRule, rule)),
  ).length;
  const extra = chain.rules.filter(
    (liveRule) => !expected.some((rule) => isDeepStrictEqual(liveRule, rule)),
  ).length;
  if (missing > 0) {
    problems.push(
      `chain ${name} lacks ${describeRules(missing)} of the ${expected.length} a sync writes`,
    );
  }
  if (extra > 0) problems.push(`chain ${name} holds ${describeRules(extra)} a sync does not write`);
  if (missing === 0 && extra === 0 && !isDeepStrictEqual(chain.rules, expected as NftObject[][])) {
    problems.push(`chain ${name} holds its rules in another order or more than once`);
  }
  return problems;
}

/**
 * How a listed table differs from what a full sync of `settings` creates, leaving the elements of
 * the translation maps aside (those are compared one by one): its chains and their rules, the
 * sets of pod CIDRs, the type of the maps, and objects a sync does not create. One sentence each;
 * empty when the table is exactly as a sync leaves it.
 */
export function structureProblems(live: LiveTable, settings: RulesetSettings): string[] {
  const problems: string[] = [];
  const expectedRules = chainRules(settings);
  for (const [name, hook] of [
    [CHAINS.prerouting, "prerouting"],
    [CHAINS.output, "output"],
  ] as const) {
    problems.push(...chainProblems(name, hook, live.chains.get(name), expectedRules[name]));
  }
  const chainNames: ReadonlySet<string> = new Set(Object.values(CHAINS));
  for (const name of live.chains.keys()) {
    if (!chainNames.has(name)) problems.push(`chain ${name} is not one a sync creates`);
  }

  const expectedCollections = new Set<string>();
  for (const { family, localPods } of settings.families) {
    const addressType = family === "ipv4" ? "ipv4_addr" : "ipv6_addr";
    if (localPods.kind === "sourceCIDRs") {
      const name = podSetName(family);
      expectedCollections.add(name);
      const set = live.collections.get(name);
      if (set === undefined) {
        problems.push(`set ${name} is missing`);
      } else if (set.isMap || set.type !== addressType) {
        problems.push(`set ${name} is not a set of ${addressType}`);
      } else if (!sameIntervals(set.elem, localPods.cidrs)) {
        const cidrs = localPods.cidrs.length > 0 ? localPods.cidrs.join(", ") : "none";
        problems.push(`set ${name} holds other addresses than the pod CIDRs (${cidrs})`);
      }
    }
    const name = mapName(family);
    expectedCollections.add(name);
    const map = live.collections.get(name);
    if (map === undefined) {
      problems.push(`map ${name} is missing`);
    } else if (
      !map.isMap ||
      map.map !== addressType ||
      !isDeepStrictEqual(map.type, [addressType, "inet_proto", "inet_service"])
    ) {
      problems.push(
        `map ${name} is not a map of ${addressType} . inet_proto . inet_service to ${addressType}`,
      );
    }
  }
  for (const [name, collection] of live.collections) {
    if (expectedCollections.has(name)) continue;
    const kind = collection.isMap ? "map" : "set";
    problems.push(
      mapFamily(name) === undefined &&
        !(["ipv4", "ipv6"] as const).some((family) => podSetName(family) === name)
        ? `${kind} ${name} is not one a sync creates`
        : `${kind} ${name} belongs to an IP family that is not enabled`,
    );
  }
  return problems;
}
