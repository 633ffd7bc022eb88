/**
 * Compiles a {@link Ruleset} to libnftables JSON (`nft -j -f -`).
 *
 * Layout of the one `inet` table (names for a table called `ipvs-node-controller`):
 *
 * - map `mappings-ipv4`: `ipv4_addr . inet_proto . inet_service : ipv4_addr`, external IP, protocol
 *   and port to cluster IP (same for `-ipv6`). One lookup per packet whatever the number of Services.
 * - set `pod-cidrs-ipv4` (interval), only when local pods are recognised by source CIDR.
 * - chain `prerouting` (nat, hook prerouting, priority -110): per family,
 *   `<local-pod match> ip daddr . meta l4proto . th dport @mappings-ipv4 fib daddr type local
 *    meta mark set meta mark | MARK dnat ip to ip daddr . meta l4proto . th dport map @mappings-ipv4`
 * - chain `output` (nat, hook output, priority -110): the same with `fib saddr type local` as the match.
 *
 * The membership test before the mark keeps untranslated packets unmarked; a lookup miss ends the
 * rule without a verdict, so traffic to anything else passes untouched.
 *
 * `fib daddr type local` confines translation to nodes where the bug exists: kube-proxy's IPVS
 * mode binds every LoadBalancer IP and externalIP to `kube-ipvs0`, so there they are local
 * addresses. Where kube-proxy runs in nftables or iptables mode those IPs are virtual; a DNAT of
 * ours would run before kube-proxy's chains, which are then skipped for the connection, and route
 * the cluster IP off the node. The route lookup comes after the map lookup, so a packet to any
 * other destination still costs one hash lookup.
 */
import {
  cidrRange,
  type FamilyRuleset,
  type IpFamily,
  type LocalPodMatch,
  type Mapping,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
} from "@ipvs-node-controller/core";

/** One libnftables JSON command or object; the schema is nft's, see libnftables-json(5). */
export type NftObject = Record<string, unknown>;

/** A complete `nft -j -f` document. */
export interface NftDocument {
  nftables: NftObject[];
}

/** Hook priority of both chains: before iptables' and kube-proxy's nat (-100), after conntrack. */
export const CHAIN_PRIORITY = -110;

/** Names of the objects inside our table. */
export const CHAINS = { prerouting: "prerouting", output: "output" } as const;

/** The map holding one family's translations. */
export function mapName(family: IpFamily): string {
  return `mappings-${family}`;
}

/** The interval set of one family's pod CIDRs. */
export function podSetName(family: IpFamily): string {
  return `pod-cidrs-${family}`;
}

const NFT_PROTOCOL: Record<IpFamily, { payload: "ip" | "ip6"; addressType: string }> = {
  ipv4: { payload: "ip", addressType: "ipv4_addr" },
  ipv6: { payload: "ip6", addressType: "ipv6_addr" },
};

/**
 * `namespace/name` for an element comment. Both parts are DNS labels (the core's
 * `validateRuleset` refuses anything else), so the text can never leave the quotes `nft list`
 * prints it in, and at 127 characters it fits the kernel's 128-byte comment.
 */
export function elementComment(service: Mapping["service"]): string {
  return `${service.namespace}/${service.name}`;
}

function lookupKey(family: IpFamily): NftObject {
  return {
    concat: [
      { payload: { protocol: NFT_PROTOCOL[family].payload, field: "daddr" } },
      { meta: { key: "l4proto" } },
      { payload: { protocol: "th", field: "dport" } },
    ],
  };
}

/** The key of a map element: external IP . protocol . port. */
function elementKey(mapping: Mapping): NftObject {
  return { concat: [mapping.externalIP, mapping.protocol, mapping.port] };
}

/** A map element with its comment: `[{elem: {val, comment}}, clusterIP]`. */
function mapElement(mapping: Mapping): unknown[] {
  return [
    { elem: { val: elementKey(mapping), comment: elementComment(mapping.service) } },
    mapping.clusterIP,
  ];
}

/** The external IP is an address of this node, as kube-proxy's IPVS mode makes it. */
const DESTINATION_LOCAL: NftObject = {
  match: { op: "==", left: { fib: { result: "type", flags: ["daddr"] } }, right: "local" },
};

/** The statements shared by both chains: membership test, locality guard, mark, DNAT from the map. */
function translate(family: IpFamily, mark: number): NftObject[] {
  const map = `@${mapName(family)}`;
  return [
    { match: { op: "==", left: lookupKey(family), right: map } },
    DESTINATION_LOCAL,
    {
      mangle: { key: { meta: { key: "mark" } }, value: { "|": [{ meta: { key: "mark" } }, mark] } },
    },
    {
      dnat: {
        family: NFT_PROTOCOL[family].payload,
        addr: { map: { key: lookupKey(family), data: map } },
      },
    },
  ];
}

function localPodMatch(family: IpFamily, match: LocalPodMatch): NftObject {
  switch (match.kind) {
    case "sourceCIDRs":
      return {
        match: {
          op: "==",
          left: { payload: { protocol: NFT_PROTOCOL[family].payload, field: "saddr" } },
          right: `@${podSetName(family)}`,
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

const HOST_ORIGINATED: NftObject = {
  match: { op: "==", left: { fib: { result: "type", flags: ["saddr"] } }, right: "local" },
};

/**
 * The rule expressions of each chain, in order, exactly as `nft -j list` prints them back. They
 * depend only on the settings, never on the mappings.
 */
export function chainRules(settings: RulesetSettings): Record<keyof typeof CHAINS, NftObject[][]> {
  return {
    prerouting: settings.families.map(({ family, localPods }) => [
      localPodMatch(family, localPods),
      ...translate(family, settings.masqueradeMark),
    ]),
    output: settings.families.map(({ family }) => [
      HOST_ORIGINATED,
      ...translate(family, settings.masqueradeMark),
    ]),
  };
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

/**
 * Drops CIDRs contained in another one of the list (and duplicates) and sorts the rest by address.
 * nft refuses overlapping intervals in one set; CIDRs never partially overlap, so this is all it
 * takes. The order makes the document independent of the order of the input.
 */
export function outermostCIDRs(cidrs: readonly string[]): string[] {
  const withIntervals = cidrs.map((cidr) => ({ cidr, interval: cidrInterval(cidr) }));
  const coveredByAnother = (interval: AddressInterval, index: number) =>
    withIntervals.some((other, otherIndex) => {
      if (otherIndex === index) return false;
      const covers = other.interval.first <= interval.first && other.interval.last >= interval.last;
      const same = other.interval.first === interval.first && other.interval.last === interval.last;
      // Of two equal CIDRs the first one stays.
      return covers && (!same || otherIndex < index);
    });
  return withIntervals
    .filter(({ interval }, index) => !coveredByAnother(interval, index))
    .sort((a, b) => (a.interval.first < b.interval.first ? -1 : 1))
    .map(({ cidr }) => cidr);
}

function cidrElement(cidr: string): NftObject {
  const [addr = "", len = ""] = cidr.split("/");
  return { prefix: { addr, len: Number(len) } };
}

/**
 * The definitions of everything inside the table. `elements` turns a family's mappings into the
 * map's `elem` value: the elements themselves, or a placeholder that {@link fullSyncJson} fills.
 */
function tableContents(
  ruleset: Ruleset,
  table: string,
  elements: (family: FamilyRuleset) => unknown = (family) => family.mappings.map(mapElement),
): NftObject[] {
  const base = { family: "inet", table };
  const commands: NftObject[] = [];
  for (const family of ruleset.families) {
    const addressType = NFT_PROTOCOL[family.family].addressType;
    if (family.localPods.kind === "sourceCIDRs") {
      const cidrs = outermostCIDRs(family.localPods.cidrs);
      commands.push({
        add: {
          set: {
            ...base,
            name: podSetName(family.family),
            type: addressType,
            flags: ["interval"],
            ...(cidrs.length > 0 ? { elem: cidrs.map(cidrElement) } : {}),
          },
        },
      });
    }
    commands.push({
      add: {
        map: {
          ...base,
          name: mapName(family.family),
          type: [addressType, "inet_proto", "inet_service"],
          map: addressType,
          ...(family.mappings.length > 0 ? { elem: elements(family) } : {}),
        },
      },
    });
  }
  for (const [chain, hook] of [
    [CHAINS.prerouting, "prerouting"],
    [CHAINS.output, "output"],
  ] as const) {
    commands.push({
      add: {
        chain: { ...base, name: chain, type: "nat", hook, prio: CHAIN_PRIORITY, policy: "accept" },
      },
    });
  }
  commands.push(...ruleCommands(ruleset, table));
  return commands;
}

function ruleCommands(settings: RulesetSettings, table: string): NftObject[] {
  const rules = chainRules(settings);
  return (Object.keys(rules) as (keyof typeof rules)[]).flatMap((chain) =>
    rules[chain].map((expr) => ({ add: { rule: { family: "inet", table, chain, expr } } })),
  );
}

/**
 * The full sync: one transaction that creates the table if missing, deletes it with everything in it,
 * and builds it again. Atomic: the kernel switches from the old table to the new one in one step.
 */
export function fullSyncDocument(
  ruleset: Ruleset,
  table: string,
  elements?: (family: FamilyRuleset) => unknown,
): NftDocument {
  const tableObject = { table: { family: "inet", name: table } };
  return {
    nftables: [
      { add: tableObject },
      { delete: tableObject },
      { add: tableObject },
      ...tableContents(ruleset, table, elements),
    ],
  };
}

/** Stands in for a map's elements until they are serialised; JSON escapes U+0000, so no value can. */
const ELEMENTS_PLACEHOLDER = (family: string) => `\u0000elements-${family}`;

/**
 * `JSON.stringify(fullSyncDocument(ruleset, table))`, built one map element at a time: the whole
 * tree of objects for 30,000 elements (about 9 MB at 10,000 Services) never exists at once, which
 * keeps the controller's memory flat through a full sync.
 */
export function fullSyncJson(ruleset: Ruleset, table: string): string {
  const skeleton = JSON.stringify(
    fullSyncDocument(ruleset, table, (family) => ELEMENTS_PLACEHOLDER(family.family)),
  );
  let text = skeleton;
  for (const family of ruleset.families) {
    if (family.mappings.length === 0) continue;
    const parts: string[] = [];
    for (const mapping of family.mappings) parts.push(JSON.stringify(mapElement(mapping)));
    text = text.replace(
      JSON.stringify(ELEMENTS_PLACEHOLDER(family.family)),
      () => `[${parts.join(",")}]`,
    );
  }
  return text;
}

/**
 * An incremental sync: element changes only, plus the few rules rewritten (flush + add), which
 * repairs tampered rules cheaply and, because `flush chain` fails on a missing table or chain,
 * turns a vanished table into an error the caller answers with a full sync. Deleting an element
 * that is gone fails the same way. Its size follows the change, not the ruleset.
 */
export function incrementalDocument(diff: RulesetDiff, table: string): NftDocument {
  const base = { family: "inet", table };
  const commands: NftObject[] = [
    { flush: { chain: { ...base, name: CHAINS.prerouting } } },
    { flush: { chain: { ...base, name: CHAINS.output } } },
    ...ruleCommands(diff.settings, table),
  ];
  const deletions = [...diff.removed, ...diff.changed.map(({ before }) => before)];
  const additions = [...diff.added, ...diff.changed.map(({ after }) => after)];
  for (const family of ["ipv4", "ipv6"] as const) {
    const deleted = deletions.filter((mapping) => mapping.family === family);
    if (deleted.length > 0) {
      commands.push({
        delete: { element: { ...base, name: mapName(family), elem: deleted.map(elementKey) } },
      });
    }
  }
  for (const family of ["ipv4", "ipv6"] as const) {
    const added = additions.filter((mapping) => mapping.family === family);
    if (added.length > 0) {
      commands.push({
        add: { element: { ...base, name: mapName(family), elem: added.map(mapElement) } },
      });
    }
  }
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
