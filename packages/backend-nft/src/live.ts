/**
 * Reads back our table (`nft -j list table inet NAME`) and compares it with what a full sync of a
 * ruleset would create. Anything unexpected (a missing or extra object, a changed rule, an element
 * too many or too few, a different cluster IP or comment) means "not in sync".
 */
import { isDeepStrictEqual } from "node:util";
import type { Ruleset } from "@ipvs-node-controller/core";
import {
  type AddressInterval,
  addressToBigInt,
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
interface LiveTable {
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
    const address = addressToBigInt(value);
    return { first: address, last: address };
  }
  if (isObject(value) && isObject(value.prefix)) {
    return cidrInterval(`${String(value.prefix.addr)}/${String(value.prefix.len)}`);
  }
  if (isObject(value) && Array.isArray(value.range) && value.range.length === 2) {
    return {
      first: addressToBigInt(String(value.range[0])),
      last: addressToBigInt(String(value.range[1])),
    };
  }
  return undefined;
}

/** One map element as `ip|protocol|port` -> `clusterIP|comment`. */
function mapElementEntry(element: unknown): [string, string] | undefined {
  if (!Array.isArray(element) || element.length !== 2) return undefined;
  const [keyPart, data] = element as [unknown, unknown];
  let key = keyPart;
  let comment = "";
  if (isObject(keyPart) && isObject(keyPart.elem)) {
    key = keyPart.elem.val;
    comment = typeof keyPart.elem.comment === "string" ? keyPart.elem.comment : "";
  }
  if (!isObject(key) || !Array.isArray(key.concat) || key.concat.length !== 3) return undefined;
  const [ip, protocol, port] = key.concat as unknown[];
  return [`${String(ip)}|${String(protocol)}|${String(port)}`, `${String(data)}|${comment}`];
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
