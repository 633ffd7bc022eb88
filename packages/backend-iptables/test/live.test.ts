/**
 * Reading our rules back, without a kernel: DNAT rules as translations, and the differences
 * between what a save lists and what a sync writes, named one by one.
 */

import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/backend";
import {
  compareMappings,
  type FamilyRuleset,
  type Mapping,
  quote,
  settingsOf,
} from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import {
  CHAINS,
  detectIptablesVariant,
  dnatRule,
  familyTarget,
  iptablesLiveRules,
  parseDnatRule,
  parseNatSave,
  type TargetState,
} from "../src/index.js";
import { family, mapping, ruleset } from "./fixtures.js";

const POD_CIDRS = { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] } as const;
const web = mapping("192.0.2.10", 80, "10.96.0.10");
const dns = mapping("192.0.2.53", 53, "10.96.0.53", { protocol: "udp", name: "dns" });
const web6 = mapping("2001:db8::10", 443, "fd00:96::10");
const desired = ruleset([
  family("ipv4", POD_CIDRS, [web, dns]),
  family("ipv6", { kind: "sourceCIDRs", cidrs: [] }, [web6]),
]);
const settings = settingsOf(desired);

/** What `iptables-save -t nat` prints for a table holding `target` (and optionally more). */
function saveOf(target: TargetState, edit: (lines: string[]) => string[] = (lines) => lines) {
  const lines = [
    ":PREROUTING ACCEPT [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ...[...target.chains.keys()].map((name) => `:${name} - [0:0]`),
    ...target.jumps.map((jump) => `-A ${jump.chain} ${jump.spec}`),
    ...[...target.chains].flatMap(([name, rules]) => rules.map((rule) => `-A ${name} ${rule}`)),
  ];
  return parseNatSave(["*nat", ...edit(lines), "COMMIT", ""].join("\n"));
}

const live = (mapping: Mapping, owner = `${mapping.service.namespace}/${mapping.service.name}`) => {
  const { service: _service, ...rest } = mapping;
  return { ...rest, owner };
};

describe("parseDnatRule", () => {
  it.each([web, dns, web6, mapping("2001:db8::1", 9, "fd00::9", { protocol: "sctp" })])(
    "reads back what a sync writes: %o",
    (wanted) => {
      expect(parseDnatRule(dnatRule(wanted), wanted.family)).toEqual(live(wanted));
    },
  );

  it("accepts a rule without a comment, with no owner", () => {
    expect(
      parseDnatRule(
        "-d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.96.0.10:80",
        "ipv4",
      ),
    ).toEqual(live(web, ""));
  });

  it.each([
    [
      "another match",
      "-s 10.0.0.0/8 -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.96.0.10:80",
    ],
    [
      "a network",
      "-d 192.0.2.0/24 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.96.0.10:80",
    ],
    [
      "another port out",
      "-d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.96.0.10:8080",
    ],
    ["another target", "-d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j ACCEPT"],
    ["no port", "-d 192.0.2.10/32 -p tcp -j DNAT --to-destination 10.96.0.10:80"],
    [
      "the other family",
      "-d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00::1]:80",
    ],
    [
      "a bad protocol",
      "-d 192.0.2.10/32 -p icmp -m icmp --dport 80 -j DNAT --to-destination 10.96.0.10:80",
    ],
    ["port 0", "-d 192.0.2.10/32 -p tcp -m tcp --dport 0 -j DNAT --to-destination 10.96.0.10:0"],
  ])("refuses %s", (_what, spec) => {
    expect(parseDnatRule(spec, "ipv4")).toBeUndefined();
  });
});

describe("iptablesLiveRules", () => {
  const [ipv4, ipv6] = desired.families as [FamilyRuleset, FamilyRuleset];
  const target4 = familyTarget(ipv4, desired);
  const target6 = familyTarget(ipv6, desired);

  it("finds every translation and nothing wrong in what a sync writes", () => {
    const result = iptablesLiveRules(
      new Map([
        ["ipv4", saveOf(target4)],
        ["ipv6", saveOf(target6)],
      ]),
      settings,
    );
    expect(result).toMatchObject({ backend: "iptables", present: true, problems: [] });
    expect(result.mappings).toEqual([live(web), live(dns), live(web6)]);
  });

  it("reports nothing present for tables without our chains", () => {
    expect(iptablesLiveRules(new Map(), settings)).toMatchObject({
      present: false,
      mappings: [],
      problems: [],
    });
  });

  it("names every difference around the translations, family by family", () => {
    const tampered = saveOf(target4, (lines) => [
      ...lines.filter(
        (line) =>
          !line.startsWith("-A OUTPUT ") &&
          !line.startsWith(`-A ${CHAINS.output} `) &&
          !line.includes("--dport 53"),
      ),
      "-A PREROUTING -j IPVSNC-PREROUTING",
      "-A POSTROUTING -j IPVSNC-SERVICES",
      `-A ${CHAINS.dnat} -j ACCEPT`,
      ":IPVSNC-EXTRA - [0:0]",
    ]);
    const result = iptablesLiveRules(new Map([["ipv4", tampered]]), settings);
    expect(result.mappings).toEqual([live(web)]);
    expect(result.problems).toEqual([
      'ipv4: a rule in IPVSNC-DNAT is not a jump into a bucket: "-j ACCEPT"',
      "ipv4: 2 jumps from nat PREROUTING into our chains",
      "ipv4: no jump from nat OUTPUT into IPVSNC-OUTPUT",
      "ipv4: nat POSTROUTING jumps into our chains, which a sync never does",
      "ipv4: chain IPVSNC-OUTPUT holds other rules than a sync writes",
      "ipv4: chain IPVSNC-EXTRA is not one a sync creates",
    ]);
  });

  it("names damaged and foreign bucket structure, and still lists every translation", () => {
    const seven = mapping("192.0.2.7", 80, "10.96.0.7", { name: "seven" });
    const misplaced = mapping("192.0.2.99", 80, "10.96.0.99", { name: "misplaced" });
    const older = mapping("192.0.2.8", 80, "10.96.0.8", { name: "older" });
    const tampered = saveOf(target4, (lines) => [
      ...lines.filter((line) => line !== "-A IPVSNC-DNAT -d 0.0.0.53/0.0.0.255 -g IPVSNC-DNAT-35"),
      ":IPVSNC-DNAT-07 - [0:0]",
      ":IPVSNC-DNAT-08 - [0:0]",
      ":IPVSNC-DNAT-7 - [0:0]",
      "-A IPVSNC-DNAT -d 0.0.0.10/0.0.0.255 -g IPVSNC-DNAT-0A",
      "-A IPVSNC-DNAT -d 0.0.0.7/0.0.0.255 -g IPVSNC-DNAT-07",
      "-A IPVSNC-DNAT -d 0.0.0.8/0.0.0.255 -j IPVSNC-DNAT-08",
      `-A IPVSNC-DNAT ${dnatRule(older)}`,
      `-A IPVSNC-DNAT-07 ${dnatRule(seven)}`,
      `-A IPVSNC-DNAT-0A ${dnatRule(misplaced)}`,
      "-A IPVSNC-DNAT-0A -j RETURN",
    ]);
    const result = iptablesLiveRules(new Map([["ipv4", tampered]]), settings);
    expect(result.mappings).toEqual(
      [web, dns, seven, misplaced, older].map((m) => live(m)).sort(compareMappings),
    );
    expect(result.problems).toEqual([
      'ipv4: a rule in IPVSNC-DNAT is not a jump into a bucket: "-d 0.0.0.8/0.0.0.255 -j IPVSNC-DNAT-08"',
      `ipv4: IPVSNC-DNAT holds a translation itself instead of a jump into its bucket: ${quote(dnatRule(older))}`,
      "ipv4: 2 jumps from IPVSNC-DNAT into IPVSNC-DNAT-0A",
      "ipv4: the jumps in IPVSNC-DNAT are not in the order of their buckets",
      `ipv4: IPVSNC-DNAT-0A holds a translation of 192.0.2.99, whose packets go to IPVSNC-DNAT-63: ${quote(dnatRule(misplaced))}`,
      'ipv4: a rule in IPVSNC-DNAT-0A is not a translation: "-j RETURN"',
      "ipv4: nothing jumps from IPVSNC-DNAT into IPVSNC-DNAT-35: its rules are never reached",
      "ipv4: chain IPVSNC-DNAT-7 is not one a sync creates",
    ]);
  });

  it("lets a bucket that lost its last translation pass: the missing translation says it all", () => {
    const emptied = saveOf(target4, (lines) =>
      lines.filter((line) => !line.includes("--dport 53")),
    );
    const result = iptablesLiveRules(
      new Map([
        ["ipv4", emptied],
        ["ipv6", saveOf(target6)],
      ]),
      settings,
    );
    expect(result.problems).toEqual([]);
    expect(result.mappings).toEqual([live(web), live(web6)]);
  });

  it("notices a jump that is not the first rule, and a family that is not enabled", () => {
    const pushedDown = saveOf(target4, (lines) => [
      ...lines.filter((line) => !line.startsWith("-A PREROUTING ")),
      "-A PREROUTING -j KUBE-SERVICES",
      ...lines.filter((line) => line.startsWith("-A PREROUTING ")),
    ]);
    const ipv4Only = settingsOf(ruleset([family("ipv4", POD_CIDRS, [web, dns])]));
    const result = iptablesLiveRules(
      new Map([
        ["ipv4", pushedDown],
        ["ipv6", saveOf(target6)],
      ]),
      ipv4Only,
    );
    expect(result.problems).toEqual([
      "ipv4: the jump from nat PREROUTING is rule 2, not the first",
      "ipv6: our chains are in the nat table although ipv6 is not enabled",
    ]);
    // The translations left in a family that is not enabled are still reported: no Service wants them.
    expect(result.mappings).toContainEqual(live(web6));
  });

  it("compares the local-pod match with the settings it is given", () => {
    const other = settingsOf(
      ruleset([
        family("ipv4", { kind: "sourceCIDRs", cidrs: ["10.244.2.0/24"] }, []),
        family("ipv6", { kind: "sourceCIDRs", cidrs: [] }, []),
      ]),
    );
    const result = iptablesLiveRules(
      new Map([
        ["ipv4", saveOf(target4)],
        ["ipv6", saveOf(target6)],
      ]),
      other,
    );
    expect(result.problems).toEqual([
      "ipv4: chain IPVSNC-PREROUTING holds other rules than a sync writes",
    ]);
  });
});

describe("detectIptablesVariant and the legacy tables that exist", () => {
  const calls: string[] = [];
  /** A runner whose kernel lists `tables` as existing legacy tables of both families. */
  const runnerWith =
    (tables: string[]): CommandRunner =>
    async (file, args) => {
      calls.push([file, ...args].join(" "));
      if (file === "cat") return { stdout: tables.join("\n"), stderr: "", exitCode: 0 };
      return { stdout: "", stderr: "", exitCode: 0 };
    };

  it("names the legacy mangle table only when it exists", async () => {
    calls.length = 0;
    await detectIptablesVariant(runnerWith(["nat"]));
    expect(calls.filter((call) => call.includes("-t mangle"))).toEqual([
      "iptables-nft-save -t mangle",
    ]);
    calls.length = 0;
    await detectIptablesVariant(runnerWith(["mangle"]));
    expect(calls).toContain("iptables-legacy-save -t mangle");
  });

  it("still fails when none of the programs it tried can start", async () => {
    const missing: CommandRunner = async (file) => {
      if (file === "cat") return { stdout: "", stderr: "", exitCode: 0 };
      throw new ToolNotStartedError(file, "ENOENT");
    };
    await expect(detectIptablesVariant(missing)).rejects.toThrow(/none of .* could be started/);
  });
});
