import { diffRulesets, type LocalPodMatch } from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import {
  CHAIN_PRIORITY,
  elementComment,
  formatJson,
  fullSyncDocument,
  incrementalDocument,
  tableChains,
} from "../src/compile.js";
import type { NftStatement } from "../src/nft-json.js";
import { mapping, ruleset } from "./helpers.js";

/** A JSON object of a document, read without its schema, as the assertions below walk it. */
type NftObject = Record<string, unknown>;

const TABLE = "ipvs-node-controller";
const web4 = mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10" });
const dns4 = mapping({
  externalIP: "203.0.113.10",
  clusterIP: "10.96.0.10",
  protocol: "udp",
  port: 53,
});
const web6 = mapping({ externalIP: "2001:db8::10", clusterIP: "fd00::10" });

/** The rules of one chain of the table a sync of `rules` creates. */
function rulesOf(
  rules: Parameters<typeof tableChains>[0],
  chain: string,
): readonly (readonly NftStatement[])[] {
  return tableChains(rules).find((spec) => spec.name === chain)?.rules ?? [];
}

const KEY4 = {
  concat: [
    { payload: { protocol: "ip", field: "daddr" } },
    { meta: { key: "l4proto" } },
    { payload: { protocol: "th", field: "dport" } },
  ],
};

/** The commands of a document with the given verb and object, e.g. ("add", "map"). */
function commands(
  document: { readonly nftables: readonly NftObject[] },
  verb: string,
  object: string,
): NftObject[] {
  return document.nftables
    .map((command) => (command[verb] as NftObject | undefined)?.[object] as NftObject | undefined)
    .filter((value): value is NftObject => value !== undefined);
}

describe("full sync document", () => {
  const document = fullSyncDocument(ruleset([web4, dns4, web6]), TABLE);

  it("replaces the table atomically: add, delete, add, then its contents", () => {
    expect(document.nftables.slice(0, 3)).toEqual([
      { add: { table: { family: "inet", name: TABLE } } },
      { delete: { table: { family: "inet", name: TABLE } } },
      { add: { table: { family: "inet", name: TABLE } } },
    ]);
  });

  it("creates regular translation chains, then nat chains on prerouting and output at -110", () => {
    expect(CHAIN_PRIORITY).toBe(-110);
    const base = { family: "inet", table: TABLE };
    const hooked = { type: "nat", prio: -110, policy: "accept" };
    expect(commands(document, "add", "chain")).toEqual([
      { ...base, name: "translate-ipv4" },
      { ...base, name: "translate-masquerade-ipv4" },
      { ...base, name: "translate-ipv6" },
      { ...base, name: "translate-masquerade-ipv6" },
      { ...base, name: "prerouting", ...hooked, hook: "prerouting" },
      { ...base, name: "output", ...hooked, hook: "output" },
    ]);
  });

  it("puts each family's mappings in its own concatenated-key map with comments", () => {
    const maps = commands(document, "add", "map");
    expect(maps.map((map) => [map.name, map.type, map.map])).toEqual([
      ["mappings-ipv4", ["ipv4_addr", "inet_proto", "inet_service"], "ipv4_addr"],
      ["mappings-ipv6", ["ipv6_addr", "inet_proto", "inet_service"], "ipv6_addr"],
    ]);
    expect(maps[0]?.elem).toEqual([
      [
        { elem: { val: { concat: ["203.0.113.10", "tcp", 80] }, comment: "default/web" } },
        "10.96.0.10",
      ],
      [
        { elem: { val: { concat: ["203.0.113.10", "udp", 53] }, comment: "default/web" } },
        "10.96.0.10",
      ],
    ]);
  });

  it("leaves out the element list of a family without mappings", () => {
    const maps = commands(fullSyncDocument(ruleset([web4]), TABLE), "add", "map");
    expect(maps[1]).not.toHaveProperty("elem");
  });

  it("goes to the translation chain only after a membership test and the locality guard", () => {
    const [rule] = rulesOf(ruleset([web4], { families: ["ipv4"] }), "output");
    expect(rule).toEqual([
      { match: { op: "==", left: { fib: { result: "type", flags: ["saddr"] } }, right: "local" } },
      { match: { op: "==", left: KEY4, right: "@mappings-ipv4" } },
      { match: { op: "==", left: { fib: { result: "type", flags: ["daddr"] } }, right: "local" } },
      { goto: { target: "translate-masquerade-ipv4" } },
    ]);
  });

  it("leaves a restricted key from a source it does not admit, then marks and DNATs", () => {
    const rules = rulesOf(ruleset([web4], { families: ["ipv4"] }), "translate-masquerade-ipv4");
    const dnat = { dnat: { family: "ip", addr: { map: { key: KEY4, data: "@mappings-ipv4" } } } };
    expect(rules).toEqual([
      [
        { match: { op: "==", left: KEY4, right: "@restricted-ipv4" } },
        {
          match: {
            op: "!=",
            left: { concat: [...KEY4.concat, { payload: { protocol: "ip", field: "saddr" } }] },
            right: "@allowed-ipv4",
          },
        },
        { return: null },
      ],
      [
        {
          mangle: {
            key: { meta: { key: "mark" } },
            value: { "|": [{ meta: { key: "mark" } }, 0x4000] },
          },
        },
        dnat,
      ],
    ]);
    const unmarked = rulesOf(ruleset([web4], { families: ["ipv4"] }), "translate-ipv4");
    expect(unmarked).toEqual([rules[0], [dnat]]);
  });

  it("keeps pod traffic unmarked unless the ruleset marks it", () => {
    const target = (markPodTraffic: boolean) =>
      rulesOf(ruleset([web4], { families: ["ipv4"], markPodTraffic }), "prerouting")[0]?.at(-1);
    expect(target(false)).toEqual({ goto: { target: "translate-ipv4" } });
    expect(target(true)).toEqual({ goto: { target: "translate-masquerade-ipv4" } });
    const names = tableChains(ruleset([], { families: ["ipv4"], markPodTraffic: true })).map(
      (chain) => chain.name,
    );
    expect(names).toEqual(["translate-masquerade-ipv4", "prerouting", "output"]);
  });

  it("uses the ruleset's mark", () => {
    const rules = tableChains(ruleset([web6], { families: ["ipv6"], mark: 0x80000000 }));
    expect(JSON.stringify(rules)).toContain('{"|":[{"meta":{"key":"mark"}},2147483648]}');
    expect(JSON.stringify(rules)).toContain('"dnat":{"family":"ip6"');
  });
});

describe("source restrictions", () => {
  const restricted = { ...web4, allowedSources: ["10.244.0.0/16", "203.0.113.10/32"] };
  const document = fullSyncDocument(ruleset([restricted, dns4], { families: ["ipv4"] }), TABLE);
  const set = (name: string) => commands(document, "add", "set").find((s) => s.name === name);

  it("lists the restricted key with its owner, and each source it admits as an interval", () => {
    expect(set("restricted-ipv4")).toEqual({
      family: "inet",
      table: TABLE,
      name: "restricted-ipv4",
      type: ["ipv4_addr", "inet_proto", "inet_service"],
      elem: [{ elem: { val: { concat: ["203.0.113.10", "tcp", 80] }, comment: "default/web" } }],
    });
    expect(set("allowed-ipv4")).toEqual({
      family: "inet",
      table: TABLE,
      name: "allowed-ipv4",
      type: ["ipv4_addr", "inet_proto", "inet_service", "ipv4_addr"],
      flags: ["interval"],
      elem: [
        { concat: ["203.0.113.10", "tcp", 80, { prefix: { addr: "10.244.0.0", len: 16 } }] },
        { concat: ["203.0.113.10", "tcp", 80, { prefix: { addr: "203.0.113.10", len: 32 } }] },
      ],
    });
  });

  it("keeps every restricted mapping in the one map as well, for the one lookup", () => {
    const [map] = commands(document, "add", "map");
    expect(map?.elem).toHaveLength(2);
  });

  it("changes a restriction by deleting and adding the key's elements", () => {
    const narrower = { ...restricted, allowedSources: ["10.244.1.0/24"] };
    const before = ruleset([restricted], { families: ["ipv4"] });
    const after = ruleset([narrower], { families: ["ipv4"] });
    const changes = incrementalDocument(diffRulesets(before, after), TABLE);
    expect(changes.nftables.map((command) => Object.keys(command)[0])).toEqual([
      "delete",
      "delete",
      "delete",
      "add",
      "add",
      "add",
    ]);
    expect(commands(changes, "add", "element").at(-1)?.elem).toEqual([
      { concat: ["203.0.113.10", "tcp", 80, { prefix: { addr: "10.244.1.0", len: 24 } }] },
    ]);
  });
});

describe("local-pod match in prerouting", () => {
  const cases: [string, "ipv4" | "ipv6", LocalPodMatch, NftObject, boolean][] = [
    [
      "IPv4 source CIDRs",
      "ipv4",
      { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] },
      {
        match: {
          op: "==",
          left: { payload: { protocol: "ip", field: "saddr" } },
          right: "@pod-cidrs-ipv4",
        },
      },
      true,
    ],
    [
      "IPv6 source CIDRs",
      "ipv6",
      { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64"] },
      {
        match: {
          op: "==",
          left: { payload: { protocol: "ip6", field: "saddr" } },
          right: "@pod-cidrs-ipv6",
        },
      },
      true,
    ],
    [
      "bridge interface",
      "ipv4",
      { kind: "inputInterface", name: "cni0" },
      { match: { op: "==", left: { meta: { key: "iifname" } }, right: "cni0" } },
      false,
    ],
    [
      "interface prefix",
      "ipv6",
      { kind: "inputInterfacePrefix", prefix: "cali" },
      { match: { op: "==", left: { meta: { key: "iifname" } }, right: "cali*" } },
      false,
    ],
  ];

  it.each(cases)("%s", (_name, family, localPods, expected, needsSet) => {
    const rules = ruleset([], { families: [family], localPods: () => localPods });
    expect(rulesOf(rules, "prerouting")[0]?.[0]).toEqual(expected);
    const sets = commands(fullSyncDocument(rules, TABLE), "add", "set");
    expect(sets.filter((set) => String(set.name).startsWith("pod-cidrs")).length).toBe(
      needsSet ? 1 : 0,
    );
  });

  it("loads pod CIDRs as prefixes, dropping the ones another CIDR contains", () => {
    const rules = ruleset([], {
      families: ["ipv4"],
      localPods: () => ({
        kind: "sourceCIDRs",
        cidrs: ["10.244.1.0/24", "10.0.0.0/8", "192.0.2.0/24"],
      }),
    });
    const [set] = commands(fullSyncDocument(rules, TABLE), "add", "set");
    expect(set).toMatchObject({ name: "pod-cidrs-ipv4", type: "ipv4_addr", flags: ["interval"] });
    expect(set?.elem).toEqual([
      { prefix: { addr: "10.0.0.0", len: 8 } },
      { prefix: { addr: "192.0.2.0", len: 24 } },
    ]);
  });

  it("creates an empty set when the node has no pod CIDR of the family", () => {
    const rules = ruleset([], {
      families: ["ipv6"],
      localPods: () => ({ kind: "sourceCIDRs", cidrs: [] }),
    });
    const [set] = commands(fullSyncDocument(rules, TABLE), "add", "set");
    expect(set).toEqual({
      family: "inet",
      table: TABLE,
      name: "pod-cidrs-ipv6",
      type: "ipv6_addr",
      flags: ["interval"],
    });
  });
});

describe("element comments", () => {
  it("name the owning Service as namespace/name", () => {
    expect(elementComment({ namespace: "kube-system", name: "dns" })).toBe("kube-system/dns");
  });
});

describe("incremental document", () => {
  const before = ruleset([web4, dns4, web6]);
  const moved = { ...dns4, clusterIP: "10.96.0.99" };
  const extra = mapping({ externalIP: "2001:db8::11", clusterIP: "fd00::11", port: 443 });
  const after = ruleset([moved, web6, extra]);
  const document = incrementalDocument(diffRulesets(before, after), TABLE);

  it("holds element changes and nothing else, so its size follows the change", () => {
    expect(
      document.nftables.every((command) => "element" in (Object.values(command)[0] as object)),
    ).toBe(true);
    expect(commands(document, "add", "rule")).toHaveLength(0);
    expect(document.nftables).toHaveLength(3);
  });

  it("deletes removed and changed keys, then adds added and changed elements", () => {
    expect(commands(document, "delete", "element")).toEqual([
      {
        family: "inet",
        table: TABLE,
        name: "mappings-ipv4",
        elem: [{ concat: ["203.0.113.10", "tcp", 80] }, { concat: ["203.0.113.10", "udp", 53] }],
      },
    ]);
    expect(commands(document, "add", "element")).toEqual([
      {
        family: "inet",
        table: TABLE,
        name: "mappings-ipv4",
        elem: [
          [
            { elem: { val: { concat: ["203.0.113.10", "udp", 53] }, comment: "default/web" } },
            "10.96.0.99",
          ],
        ],
      },
      {
        family: "inet",
        table: TABLE,
        name: "mappings-ipv6",
        elem: [
          [
            { elem: { val: { concat: ["2001:db8::11", "tcp", 443] }, comment: "default/web" } },
            "fd00::11",
          ],
        ],
      },
    ]);
  });
});

describe("formatJson", () => {
  it("round-trips and keeps short values on one line", () => {
    const document = fullSyncDocument(ruleset([web4, dns4, web6]), TABLE);
    const text = formatJson(document);
    expect(JSON.parse(text)).toEqual(document);
    expect(text).toContain(
      '  {"add":{"table":{"family":"inet","name":"ipvs-node-controller"}}},\n',
    );
    expect(text.split("\n").every((line) => line.length <= 120)).toBe(true);
  });
});
