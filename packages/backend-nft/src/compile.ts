/**
 * Compiles a {@link Ruleset} to libnftables JSON (`nft -j -f -`).
 *
 * Layout of the one `inet` table (names for a table called `ipvs-node-controller`), per family:
 *
 * - map `mappings-ipv4`: `ipv4_addr . inet_proto . inet_service : ipv4_addr`, external IP, protocol
 *   and port to cluster IP, for every mapping (same for `-ipv6`). One hash lookup per packet
 *   whatever the number of Services.
 * - set `restricted-ipv4`: the keys of the mappings that admit only some sources
 *   (`loadBalancerSourceRanges`), and interval set `allowed-ipv4`:
 *   `ipv4_addr . inet_proto . inet_service . ipv4_addr`, each key with each source range it admits.
 * - set `pod-cidrs-ipv4` (interval), only when local pods are recognised by source CIDR.
 * - chain `prerouting` (nat, hook prerouting, priority -110), per family:
 *   `<local-pod match> ip daddr . meta l4proto . th dport @mappings-ipv4 fib daddr type local
 *    goto translate-ipv4`
 * - chain `output` (nat, hook output, priority -110): the same with `fib saddr type local` as the
 *   match, going to `translate-masquerade-ipv4`.
 * - chains `translate-ipv4` and `translate-masquerade-ipv4`: leave a restricted key from a source
 *   it does not admit untranslated (`... @restricted-ipv4 ... . ip saddr != @allowed-ipv4 return`),
 *   then DNAT through the map; the second one first sets the masquerade mark. Pod traffic goes to
 *   the first, so an endpoint sees the pod's own address, unless the ruleset marks pod traffic too.
 *
 * A packet to anything else costs the one membership test of the map: the locality guard, the
 * source check and the DNAT run only for a key we translate, and only on a connection's first
 * packet (nat chains see no other). A lookup miss ends the rule without a verdict, so traffic to
 * anything else passes untouched, and no packet is marked that is not translated.
 *
 * `fib daddr type local` confines translation to nodes where the bug exists: kube-proxy's IPVS
 * mode binds every LoadBalancer IP and externalIP to `kube-ipvs0`, so there they are local
 * addresses. Where kube-proxy runs in nftables or iptables mode those IPs are virtual; a DNAT of
 * ours would run before kube-proxy's chains, which are then skipped for the connection, and route
 * the cluster IP off the node.
 *
 * A source that a restriction does not admit is left alone rather than dropped: the packet then
 * meets kube-proxy's own source-range firewall for the LoadBalancer IP, as it would without us.
 */
import {
  cidrRange,
  type FamilyRuleset,
  type IpFamily,
  type LocalPodMatch,
  type Mapping,
  outermostCIDRs,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
} from "@ipvs-node-controller/core";
import type {
  NftChain,
  NftCommand,
  NftConcat,
  NftDocument,
  NftMapElement,
  NftMatch,
  NftPrefix,
  NftReference,
  NftSetElement,
  NftStatement,
} from "./nft-json.js";

/** Hook priority of both chains: before iptables' and kube-proxy's nat (-100), after conntrack. */
export const CHAIN_PRIORITY = -110;

/** The base chains, hooked at prerouting and output. */
export const CHAINS = { prerouting: "prerouting", output: "output" } as const;

/** The map holding one family's translations. */
export function mapName(family: IpFamily): string {
  return `mappings-${family}`;
}

/** The set of the keys of one family's mappings that admit only some sources. */
export function restrictedSetName(family: IpFamily): string {
  return `restricted-${family}`;
}

/** The interval set of (key . source range) that the restricted keys of one family admit. */
export function allowedSetName(family: IpFamily): string {
  return `allowed-${family}`;
}

/** The interval set of one family's pod CIDRs. */
export function podSetName(family: IpFamily): string {
  return `pod-cidrs-${family}`;
}

/** The regular chain that translates one family's packets, with or without the mark. */
export function translateChainName(family: IpFamily, marked: boolean): string {
  return marked ? `translate-masquerade-${family}` : `translate-${family}`;
}

/** `@name`: a reference to a set or map of our table. */
function reference(name: string): NftReference {
  return `@${name}`;
}

const NFT_PROTOCOL: Record<IpFamily, { payload: "ip" | "ip6"; addressType: string }> = {
  ipv4: { payload: "ip", addressType: "ipv4_addr" },
  ipv6: { payload: "ip6", addressType: "ipv6_addr" },
};

/** The nft type of a family's addresses: `ipv4_addr` or `ipv6_addr`. */
export function addressType(family: IpFamily): string {
  return NFT_PROTOCOL[family].addressType;
}

/**
 * `namespace/name` for an element comment. Both parts are DNS labels (the core's
 * `validateRuleset` refuses anything else), so the text can never leave the quotes `nft list`
 * prints it in, and at 127 characters it fits the kernel's 128-byte comment.
 */
export function elementComment(service: Mapping["service"]): string {
  return `${service.namespace}/${service.name}`;
}

function lookupKey(family: IpFamily): NftConcat {
  return {
    concat: [
      { payload: { protocol: NFT_PROTOCOL[family].payload, field: "daddr" } },
      { meta: { key: "l4proto" } },
      { payload: { protocol: "th", field: "dport" } },
    ],
  };
}

/** The key of a map element: external IP . protocol . port. */
function elementKey(mapping: Mapping): NftConcat {
  return { concat: [mapping.externalIP, mapping.protocol, mapping.port] };
}

/** A map element with its comment: `[{elem: {val, comment}}, clusterIP]`. */
function mapElement(mapping: Mapping): NftMapElement {
  return [
    { elem: { val: elementKey(mapping), comment: elementComment(mapping.service) } },
    mapping.clusterIP,
  ];
}

/** The element of `restricted-<family>` for a restricted mapping, with its owner as comment. */
function restrictedElement(mapping: Mapping): NftSetElement {
  return { elem: { val: elementKey(mapping), comment: elementComment(mapping.service) } };
}

function cidrElement(cidr: string): NftPrefix {
  const [addr = "", len = ""] = cidr.split("/");
  return { prefix: { addr, len: Number(len) } };
}

/** The elements of `allowed-<family>` for a mapping: one per source range it admits. */
function allowedElements(mapping: Mapping): NftConcat[] {
  return (mapping.allowedSources ?? []).map((cidr) => ({
    concat: [mapping.externalIP, mapping.protocol, mapping.port, cidrElement(cidr)],
  }));
}

/** The external IP is an address of this node, as kube-proxy's IPVS mode makes it. */
const DESTINATION_LOCAL: NftMatch = {
  match: { op: "==", left: { fib: { result: "type", flags: ["daddr"] } }, right: "local" },
};

const HOST_ORIGINATED: NftMatch = {
  match: { op: "==", left: { fib: { result: "type", flags: ["saddr"] } }, right: "local" },
};

/** Membership of the packet's key in the family's map: the one lookup every packet costs. */
function translated(family: IpFamily): NftMatch {
  return { match: { op: "==", left: lookupKey(family), right: reference(mapName(family)) } };
}

/** Leaves a restricted key untranslated for a source it does not admit. */
function unadmittedSourceReturns(family: IpFamily): NftStatement[] {
  const { payload } = NFT_PROTOCOL[family];
  const keyWithSource: NftConcat = {
    concat: [...lookupKey(family).concat, { payload: { protocol: payload, field: "saddr" } }],
  };
  return [
    { match: { op: "==", left: lookupKey(family), right: reference(restrictedSetName(family)) } },
    { match: { op: "!=", left: keyWithSource, right: reference(allowedSetName(family)) } },
    { return: null },
  ];
}

function dnat(family: IpFamily): NftStatement {
  return {
    dnat: {
      family: NFT_PROTOCOL[family].payload,
      addr: { map: { key: lookupKey(family), data: reference(mapName(family)) } },
    },
  };
}

function setMark(mark: number): NftStatement {
  return {
    mangle: { key: { meta: { key: "mark" } }, value: { "|": [{ meta: { key: "mark" } }, mark] } },
  };
}

function localPodMatch(family: IpFamily, match: LocalPodMatch): NftMatch {
  switch (match.kind) {
    case "sourceCIDRs":
      return {
        match: {
          op: "==",
          left: { payload: { protocol: NFT_PROTOCOL[family].payload, field: "saddr" } },
          right: reference(podSetName(family)),
        },
      };
    case "inputInterface":
      // Validated to contain no "*", so this is an exact name.
      return { match: { op: "==", left: { meta: { key: "iifname" } }, right: match.name } };
    case "inputInterfacePrefix":
      // A trailing "*" in an interface name is nft's prefix wildcard.
      return { match: { op: "==", left: { meta: { key: "iifname" } }, right: `${match.prefix}*` } };
  }
}

/** One chain of our table: a base chain when it has a hook, a regular one otherwise. */
export interface ChainSpec {
  readonly name: string;
  readonly hook?: "prerouting" | "output";
  /** The rule expressions, in order, exactly as `nft -j list` prints them back. */
  readonly rules: readonly (readonly NftStatement[])[];
}

/**
 * Every chain of the table and its rules, in the order they are created (a chain that others go
 * to comes first). They depend only on the settings, never on the mappings.
 */
export function tableChains(settings: RulesetSettings): ChainSpec[] {
  const regular: ChainSpec[] = [];
  const prerouting: NftStatement[][] = [];
  const output: NftStatement[][] = [];
  for (const { family, localPods } of settings.families) {
    const podChain = translateChainName(family, settings.markPodTraffic);
    const hostChain = translateChainName(family, true);
    if (podChain !== hostChain) {
      regular.push({ name: podChain, rules: [unadmittedSourceReturns(family), [dnat(family)]] });
    }
    regular.push({
      name: hostChain,
      rules: [unadmittedSourceReturns(family), [setMark(settings.masqueradeMark), dnat(family)]],
    });
    prerouting.push([
      localPodMatch(family, localPods),
      translated(family),
      DESTINATION_LOCAL,
      { goto: { target: podChain } },
    ]);
    output.push([
      HOST_ORIGINATED,
      translated(family),
      DESTINATION_LOCAL,
      { goto: { target: hostChain } },
    ]);
  }
  return [
    ...regular,
    { name: CHAINS.prerouting, hook: "prerouting", rules: prerouting },
    { name: CHAINS.output, hook: "output", rules: output },
  ];
}

/** One set or map of our table, as nft lists it back (elements aside). */
export interface CollectionSpec {
  readonly name: string;
  /** True for a map (`map` is then the type of its values). */
  readonly isMap: boolean;
  readonly type: string | readonly string[];
  readonly map?: string;
  readonly flags?: readonly "interval"[];
}

/** Every set and map of the table, in the order they are created. */
export function tableCollections(settings: RulesetSettings): CollectionSpec[] {
  const collections: CollectionSpec[] = [];
  for (const { family, localPods } of settings.families) {
    const address = addressType(family);
    if (localPods.kind === "sourceCIDRs") {
      collections.push({
        name: podSetName(family),
        isMap: false,
        type: address,
        flags: ["interval"],
      });
    }
    const key = [address, "inet_proto", "inet_service"];
    collections.push(
      { name: mapName(family), isMap: true, type: key, map: address },
      { name: restrictedSetName(family), isMap: false, type: key },
      { name: allowedSetName(family), isMap: false, type: [...key, address], flags: ["interval"] },
    );
  }
  return collections;
}

/** A closed interval of addresses. */
export interface AddressInterval {
  readonly first: bigint;
  readonly last: bigint;
}

/** The address interval covered by a canonical CIDR (validated by the core before it gets here). */
export function cidrInterval(cidr: string): AddressInterval {
  const range = cidrRange(cidr);
  if (range === undefined) throw new RangeError(`not a CIDR: ${JSON.stringify(cidr)}`);
  return range;
}

/** Sorts intervals and merges overlapping or adjacent ones: a canonical form of a set of addresses. */
export function mergeIntervals(intervals: readonly AddressInterval[]): AddressInterval[] {
  const sorted = [...intervals].sort((a, b) =>
    a.first < b.first ? -1 : a.first > b.first ? 1 : 0,
  );
  const merged: AddressInterval[] = [];
  for (const interval of sorted) {
    const previous = merged.at(-1);
    if (previous && interval.first <= previous.last + 1n) {
      if (interval.last > previous.last)
        merged[merged.length - 1] = { ...previous, last: interval.last };
    } else {
      merged.push(interval);
    }
  }
  return merged;
}

/** The elements of each set of one family that has elements, by name (the map's aside). */
function familySetElements(family: FamilyRuleset): Map<string, readonly NftSetElement[]> {
  const elements = new Map<string, readonly NftSetElement[]>();
  if (family.localPods.kind === "sourceCIDRs" && family.localPods.cidrs.length > 0) {
    elements.set(
      podSetName(family.family),
      outermostCIDRs(family.localPods.cidrs).map(cidrElement),
    );
  }
  const restricted = family.mappings.filter((mapping) => mapping.allowedSources !== undefined);
  if (restricted.length > 0) {
    elements.set(restrictedSetName(family.family), restricted.map(restrictedElement));
    elements.set(allowedSetName(family.family), restricted.flatMap(allowedElements));
  }
  return elements;
}

/** The elements of a family's map: every mapping's, or a stand-in for them (see fullSyncJson). */
type MapElements = (family: FamilyRuleset) => readonly NftMapElement[];

const everyMapElement: MapElements = (family) => family.mappings.map(mapElement);

/** The definitions of everything inside the table. */
function tableContents(ruleset: Ruleset, table: string, mapElements: MapElements): NftCommand[] {
  const base = { family: "inet", table } as const;
  const commands: NftCommand[] = [];
  for (const family of ruleset.families) {
    const setElements = familySetElements(family);
    for (const { name, isMap, type, map, flags } of tableCollections({
      ...ruleset,
      families: [family],
    })) {
      const options = flags === undefined ? {} : { flags };
      if (isMap) {
        const elem = family.mappings.length > 0 ? mapElements(family) : undefined;
        commands.push({
          add: {
            map: {
              ...base,
              name,
              type,
              map: map ?? "",
              ...options,
              ...(elem === undefined ? {} : { elem }),
            },
          },
        });
      } else {
        const elem = setElements.get(name);
        commands.push({
          add: {
            set: { ...base, name, type, ...options, ...(elem === undefined ? {} : { elem }) },
          },
        });
      }
    }
  }
  const chains = tableChains(ruleset);
  for (const { name, hook } of chains) {
    const chain: NftChain =
      hook === undefined
        ? { ...base, name }
        : { ...base, name, type: "nat", hook, prio: CHAIN_PRIORITY, policy: "accept" };
    commands.push({ add: { chain } });
  }
  for (const chain of chains) {
    for (const expr of chain.rules) {
      commands.push({ add: { rule: { ...base, chain: chain.name, expr } } });
    }
  }
  return commands;
}

/**
 * The full sync: one transaction that creates the table if missing, deletes it with everything in it,
 * and builds it again. Atomic: the kernel switches from the old table to the new one in one step.
 */
export function fullSyncDocument(ruleset: Ruleset, table: string): NftDocument {
  return fullSync(ruleset, table, everyMapElement);
}

function fullSync(ruleset: Ruleset, table: string, mapElements: MapElements): NftDocument {
  const tableObject = { table: { family: "inet", name: table } } as const;
  return {
    nftables: [
      { add: tableObject },
      { delete: tableObject },
      { add: tableObject },
      ...tableContents(ruleset, table, mapElements),
    ],
  };
}

/**
 * Stands in for a family's map elements until they are serialised: one element whose key no
 * mapping can have (JSON escapes U+0000, so its text cannot occur in any other value).
 */
const elementsPlaceholder = (family: FamilyRuleset): readonly NftMapElement[] => [
  [`\u0000elements-${family.family}`, ""],
];

/**
 * `JSON.stringify(fullSyncDocument(ruleset, table))`, built one map element at a time: the whole
 * tree of objects for 30,000 elements (about 9 MB at 10,000 Services) never exists at once, which
 * keeps the controller's memory flat through a full sync.
 */
export function fullSyncJson(ruleset: Ruleset, table: string): string {
  let text = JSON.stringify(fullSync(ruleset, table, elementsPlaceholder));
  for (const family of ruleset.families) {
    if (family.mappings.length === 0) continue;
    const parts: string[] = [];
    for (const mapping of family.mappings) parts.push(JSON.stringify(mapElement(mapping)));
    text = text.replace(JSON.stringify(elementsPlaceholder(family)), () => `[${parts.join(",")}]`);
  }
  return text;
}

/**
 * An incremental sync: element changes only, so that its cost follows the change. (Rewriting the
 * chains' rules too would make nft fetch every element of the maps they reference: 41 ms instead
 * of 23 ms at 10,000 Services.) A changed mapping is deleted and added again, with its source
 * restriction. Deleting an element that is gone, or adding one to a collection that is gone,
 * fails the whole transaction, which the caller answers with a full sync; rules that someone
 * flushed are found by `verify`.
 */
export function incrementalDocument(diff: RulesetDiff, table: string): NftDocument {
  const base = { family: "inet", table } as const;
  const deletions = [...diff.removed, ...diff.changed.map(({ before }) => before)];
  const additions = [...diff.added, ...diff.changed.map(({ after }) => after)];
  const commands: NftCommand[] = [];
  const elementCommands = (verb: "add" | "delete", mappings: readonly Mapping[]) => {
    for (const family of ["ipv4", "ipv6"] as const) {
      const own = mappings.filter((mapping) => mapping.family === family);
      const restricted = own.filter((mapping) => mapping.allowedSources !== undefined);
      const lists: [string, readonly (NftSetElement | NftMapElement)[]][] = [
        [mapName(family), verb === "add" ? own.map(mapElement) : own.map(elementKey)],
        [
          restrictedSetName(family),
          verb === "add" ? restricted.map(restrictedElement) : restricted.map(elementKey),
        ],
        [allowedSetName(family), restricted.flatMap(allowedElements)],
      ];
      for (const [name, elem] of lists) {
        const element = { element: { ...base, name, elem } };
        if (elem.length > 0) commands.push(verb === "add" ? { add: element } : { delete: element });
      }
    }
  };
  elementCommands("delete", deletions);
  elementCommands("add", additions);
  return { nftables: commands };
}

/**
 * JSON with two-space indentation, except that any array or object that fits on one line of
 * `width` characters is printed on one line: maps of thousands of elements stay readable.
 */
export function formatJson(value: unknown, width = 100, indent = ""): string {
  const compact = JSON.stringify(value);
  if (compact === undefined) return "null";
  if (typeof value !== "object" || value === null || compact.length + indent.length <= width) {
    return compact;
  }
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    const items = value.map((item) => inner + formatJson(item, width, inner));
    return `[\n${items.join(",\n")}\n${indent}]`;
  }
  const entries = Object.entries(value).map(
    ([key, item]) => `${inner}${JSON.stringify(key)}: ${formatJson(item, width, inner)}`,
  );
  return `{\n${entries.join(",\n")}\n${indent}}`;
}
