/**
 * Reads back our table (`nft -j list table inet NAME`): the translations it holds
 * ({@link listedMappings}) and how everything around them differs from what a full sync writes
 * ({@link structureProblems}). The periodic verify and `doctor` compare both with the desired
 * state the same way (the core's `compareLive`).
 */
import { isDeepStrictEqual } from "node:util";
import {
  addressValue,
  cidrRange,
  compareMappings,
  type IpFamily,
  isObject as isAnyObject,
  type L4Protocol,
  type LiveMapping,
  parseCIDR,
  parseIP,
  quote,
  type RulesetSettings,
} from "@ipvs-node-controller/core";
import {
  type AddressInterval,
  allowedSetName,
  CHAIN_PRIORITY,
  type ChainSpec,
  type CollectionSpec,
  cidrInterval,
  mapName,
  mergeIntervals,
  podSetName,
  restrictedSetName,
  tableChains,
  tableCollections,
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
  flags?: unknown;
  elem?: unknown;
  isMap: boolean;
}

/** The parts of a listing that matter, indexed by name. */
export interface LiveTable {
  chains: Map<string, LiveChain>;
  collections: Map<string, LiveCollection>;
}

const FAMILIES: readonly IpFamily[] = ["ipv4", "ipv6"];
const PROTOCOLS: ReadonlySet<string> = new Set<L4Protocol>(["tcp", "udp", "sctp"]);

/** An object that is not an array: how nft's JSON spells one. */
function isObject(value: unknown): value is Record<string, unknown> {
  return isAnyObject(value) && !Array.isArray(value);
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
        flags: collection.flags,
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

/** A key of ours as nft lists it: `external IP . protocol . port`, all three checked. */
interface ListedKey {
  readonly externalIP: string;
  readonly protocol: L4Protocol;
  readonly port: number;
}

/** Reads `[address, protocol, port, ...rest]` of a listed concatenation; undefined if not ours. */
function listedKey(family: IpFamily, parts: readonly unknown[]): ListedKey | undefined {
  const [address, protocol, port] = parts;
  const external = parseIP(address);
  if (
    !external.ok ||
    external.value.family !== family ||
    typeof protocol !== "string" ||
    !PROTOCOLS.has(protocol) ||
    typeof port !== "number" ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535
  ) {
    return undefined;
  }
  return { externalIP: external.value.address, protocol: protocol as L4Protocol, port };
}

const keyText = (key: ListedKey) => `${key.externalIP}|${key.protocol}|${key.port}`;

/** An element's value and comment, unwrapped from `{elem: {val, comment}}` when it has one. */
function unwrap(element: unknown): { value: unknown; comment: string } {
  if (isObject(element) && isObject(element.elem)) {
    const comment = element.elem.comment;
    return { value: element.elem.val, comment: typeof comment === "string" ? comment : "" };
  }
  return { value: element, comment: "" };
}

function concatParts(value: unknown, length: number): unknown[] | undefined {
  return isObject(value) && Array.isArray(value.concat) && value.concat.length === length
    ? value.concat
    : undefined;
}

/** The source of an `allowed-*` element as a canonical CIDR: a prefix, or one address. */
function listedSource(family: IpFamily, value: unknown): string | undefined {
  const hostBits = family === "ipv4" ? 32 : 128;
  const text =
    typeof value === "string"
      ? `${value}/${hostBits}`
      : isObject(value) && isObject(value.prefix)
        ? `${String(value.prefix.addr)}/${String(value.prefix.len)}`
        : undefined;
  const parsed = parseCIDR(text);
  return parsed.ok && parsed.value.family === family ? parsed.value.cidr : undefined;
}

function sortSources(cidrs: readonly string[]): string[] {
  const keyed = cidrs.map((cidr) => ({ cidr, range: cidrRange(cidr) }));
  keyed.sort((a, b) => {
    const x = a.range?.first ?? 0n;
    const y = b.range?.first ?? 0n;
    return x < y ? -1 : x > y ? 1 : Number(a.cidr.split("/")[1]) - Number(b.cidr.split("/")[1]);
  });
  return keyed.map(({ cidr }) => cidr);
}

function elementsOf(collection: LiveCollection | undefined): unknown[] {
  return collection !== undefined && Array.isArray(collection.elem) ? collection.elem : [];
}

/** The translations of one family: its map, with the restrictions of its two sets. */
function familyMappings(live: LiveTable, family: IpFamily, mappings: LiveMapping[]): string[] {
  const unreadable: string[] = [];
  const restricted = new Set<string>();
  const restrictedName = restrictedSetName(family);
  for (const element of elementsOf(live.collections.get(restrictedName))) {
    const parts = concatParts(unwrap(element).value, 3);
    const key = parts && listedKey(family, parts);
    if (key) restricted.add(keyText(key));
    else
      unreadable.push(`set ${restrictedName} holds an element that is not a key: ${show(element)}`);
  }
  const sources = new Map<string, string[]>();
  const allowedName = allowedSetName(family);
  for (const element of elementsOf(live.collections.get(allowedName))) {
    const parts = concatParts(unwrap(element).value, 4);
    const key = parts && listedKey(family, parts);
    const source = parts && listedSource(family, parts[3]);
    if (key === undefined || source === undefined) {
      unreadable.push(
        `set ${allowedName} holds an element that is not a key and source: ${show(element)}`,
      );
      continue;
    }
    const list = sources.get(keyText(key));
    if (list === undefined) sources.set(keyText(key), [source]);
    else list.push(source);
  }
  const name = mapName(family);
  const translated = new Set<string>();
  const map = live.collections.get(name);
  for (const element of map?.isMap ? elementsOf(map) : []) {
    const pair = Array.isArray(element) && element.length === 2 ? element : undefined;
    const { value, comment } = unwrap(pair?.[0]);
    const parts = concatParts(value, 3);
    const key = parts && listedKey(family, parts);
    const cluster = parseIP(pair?.[1]);
    if (key === undefined || !cluster.ok || cluster.value.family !== family) {
      unreadable.push(`map ${name} holds an element that is not a translation: ${show(element)}`);
      continue;
    }
    const text = keyText(key);
    translated.add(text);
    mappings.push({
      family,
      ...key,
      clusterIP: cluster.value.address,
      owner: comment,
      ...(restricted.has(text) ? { allowedSources: sortSources(sources.get(text) ?? []) } : {}),
    });
  }
  for (const text of restricted) {
    if (!translated.has(text)) {
      unreadable.push(
        `set ${restrictedName} restricts ${describeKey(text)}, which ${name} does not translate`,
      );
    }
  }
  for (const text of sources.keys()) {
    if (!restricted.has(text)) {
      unreadable.push(
        `set ${allowedName} admits sources for ${describeKey(text)}, which ${restrictedName} does not restrict: every source is translated`,
      );
    }
  }
  return unreadable;
}

function show(element: unknown): string {
  return quote(JSON.stringify(element));
}

function describeKey(text: string): string {
  const [address, protocol, port] = text.split("|");
  return `${address} ${protocol}/${port}`;
}

/**
 * The translations held by the table, in canonical order, each with the sources it admits when
 * it is restricted, and a sentence for each element that is not what a sync writes (which only
 * a hand edit can put there).
 */
export function listedMappings(live: LiveTable): {
  readonly mappings: LiveMapping[];
  readonly unreadable: string[];
} {
  const mappings: LiveMapping[] = [];
  const unreadable = FAMILIES.flatMap((family) => familyMappings(live, family, mappings));
  return { mappings: mappings.sort(compareMappings), unreadable };
}

function describeRules(count: number): string {
  return count === 1 ? "1 rule" : `${count} rules`;
}

/** How one chain differs from what a full sync writes into it. */
function chainProblems(expected: ChainSpec, chain: LiveChain | undefined): string[] {
  const { name, hook } = expected;
  if (chain === undefined) return [`chain ${name} is missing`];
  const problems: string[] = [];
  const baseAsExpected =
    hook === undefined
      ? chain.hook === undefined
      : chain.type === "nat" &&
        chain.hook === hook &&
        chain.prio === CHAIN_PRIORITY &&
        chain.policy === "accept";
  if (!baseAsExpected) {
    problems.push(
      hook === undefined
        ? `chain ${name} is hooked, where a sync makes it a regular chain`
        : `chain ${name} is not a nat chain at hook ${hook}, priority ${CHAIN_PRIORITY}, policy accept`,
    );
  }
  const rules = expected.rules;
  const missing = rules.filter(
    (rule) => !chain.rules.some((liveRule) => isDeepStrictEqual(liveRule, rule)),
  ).length;
  const extra = chain.rules.filter(
    (liveRule) => !rules.some((rule) => isDeepStrictEqual(liveRule, rule)),
  ).length;
  if (missing > 0) {
    problems.push(
      `chain ${name} lacks ${describeRules(missing)} of the ${rules.length} a sync writes`,
    );
  }
  if (extra > 0) problems.push(`chain ${name} holds ${describeRules(extra)} a sync does not write`);
  if (missing === 0 && extra === 0 && !isDeepStrictEqual(chain.rules, rules)) {
    problems.push(`chain ${name} holds its rules in another order or more than once`);
  }
  return problems;
}

function describeType(spec: CollectionSpec): string {
  const type = Array.isArray(spec.type) ? spec.type.join(" . ") : String(spec.type);
  const flags = spec.flags === undefined ? "" : ` (${spec.flags.join(", ")})`;
  return spec.isMap ? `a map of ${type} to ${spec.map}` : `a set of ${type}${flags}`;
}

function sameFlags(live: unknown, expected: readonly string[] | undefined): boolean {
  const listed = live === undefined ? [] : live;
  return (
    Array.isArray(listed) && isDeepStrictEqual([...listed].sort(), [...(expected ?? [])].sort())
  );
}

/** The family a collection of that name would belong to, if it has the name of one of ours. */
function collectionFamily(name: string): IpFamily | undefined {
  return FAMILIES.find((family) =>
    [mapName, restrictedSetName, allowedSetName, podSetName].some((of) => of(family) === name),
  );
}

/**
 * How a listed table differs from what a full sync of `settings` creates, leaving the elements of
 * the translation map and its restrictions aside (those are compared mapping by mapping): its
 * chains and their rules, the sets of pod CIDRs, the types of the collections, and objects a sync
 * does not create. One sentence each; empty when the table is exactly as a sync leaves it.
 */
export function structureProblems(live: LiveTable, settings: RulesetSettings): string[] {
  const problems: string[] = [];
  const chains = tableChains(settings);
  for (const chain of chains) problems.push(...chainProblems(chain, live.chains.get(chain.name)));
  const chainNames = new Set(chains.map((chain) => chain.name));
  for (const name of live.chains.keys()) {
    if (!chainNames.has(name)) problems.push(`chain ${name} is not one a sync creates`);
  }

  const expected = new Map(tableCollections(settings).map((spec) => [spec.name, spec]));
  for (const spec of expected.values()) {
    const collection = live.collections.get(spec.name);
    const kind = spec.isMap ? "map" : "set";
    if (collection === undefined) {
      problems.push(`${kind} ${spec.name} is missing`);
      continue;
    }
    if (
      collection.isMap !== spec.isMap ||
      !isDeepStrictEqual(collection.type, spec.type) ||
      collection.map !== spec.map ||
      !sameFlags(collection.flags, spec.flags)
    ) {
      problems.push(`${kind} ${spec.name} is not ${describeType(spec)}`);
    }
  }
  for (const { family, localPods } of settings.families) {
    const name = podSetName(family);
    const set = live.collections.get(name);
    if (localPods.kind === "sourceCIDRs" && set && !sameIntervals(set.elem, localPods.cidrs)) {
      const cidrs = localPods.cidrs.length > 0 ? localPods.cidrs.join(", ") : "none";
      problems.push(`set ${name} holds other addresses than the pod CIDRs (${cidrs})`);
    }
  }
  for (const [name, collection] of live.collections) {
    if (expected.has(name)) continue;
    const kind = collection.isMap ? "map" : "set";
    problems.push(
      collectionFamily(name) === undefined
        ? `${kind} ${name} is not one a sync creates`
        : `${kind} ${name} belongs to an IP family that is not enabled`,
    );
  }
  return problems;
}
