/**
 * The documents of incremental changes, without the kernel (the kernel suite proves on both
 * variants that changes land where a full sync would put them).
 */
import { diffRulesets, type IpFamily, type Ruleset } from "@ipvs-node-controller/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RuleOrder } from "../src/applied.js";
import { changeDocument, deleteScanCost, inverseChange, planChanges } from "../src/changes.js";
import { dnatRule, rulesetPlans, sourceChain } from "../src/render.js";
import { family, mapping, ruleset, rulesetArbitrary } from "./fixtures.js";

const POD_CIDRS = { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] } as const;
const FAMILIES: readonly IpFamily[] = ["ipv4", "ipv6"];

describe("change documents", () => {
  // Buckets 0A (web, api) and 14 (other).
  const web = mapping("192.0.2.10", 80, "10.96.0.10", { name: "web" });
  const api = mapping("192.0.2.10", 8080, "10.96.0.80", { name: "api" });
  const other = mapping("192.0.2.20", 80, "10.96.0.20", { name: "other" });
  const before = ruleset([family("ipv4", POD_CIDRS, [web, api, other])]);
  const stateOf = (r: typeof before) => RuleOrder.of(rulesetPlans(r));
  const documentFor = (next: typeof before, from = before) => {
    const state = stateOf(from);
    return planChanges(diffRulesets(from, next)).map((change) =>
      changeDocument(change, state.buckets(change.family)),
    );
  };
  const doc = (...lines: string[]) => ["*nat", ...lines, "COMMIT", ""].join("\n");

  it("deletes a retargeted rule by its spec and inserts the new one at its place in its bucket", () => {
    const moved = { ...web, clusterIP: "10.96.0.11" };
    expect(documentFor(ruleset([family("ipv4", POD_CIDRS, [moved, api, other])]))).toEqual([
      doc(`-D IPVSNC-DNAT-0A ${dnatRule(web)}`, `-I IPVSNC-DNAT-0A 1 ${dnatRule(moved)}`),
    ]);
  });

  it("appends past the last rule of a bucket and inserts before the first", () => {
    const first = mapping("192.0.2.10", 22, "10.96.0.9", { name: "first" });
    const last = mapping("192.0.2.10", 9090, "10.96.0.100", { name: "last" });
    expect(
      documentFor(ruleset([family("ipv4", POD_CIDRS, [first, web, api, last, other])])),
    ).toEqual([
      doc(`-I IPVSNC-DNAT-0A 1 ${dnatRule(first)}`, `-A IPVSNC-DNAT-0A ${dnatRule(last)}`),
    ]);
  });

  it("creates the buckets that appear, jumps to them in order, and removes those that empty", () => {
    const between = mapping("198.51.100.15", 80, "10.96.0.15", { name: "between" });
    const after = mapping("192.0.2.30", 80, "10.96.0.30", { name: "after" });
    expect(documentFor(ruleset([family("ipv4", POD_CIDRS, [other, after, between])]))).toEqual([
      doc(
        "-N IPVSNC-DNAT-0F",
        "-N IPVSNC-DNAT-1E",
        `-A IPVSNC-DNAT-0F ${dnatRule(between)}`,
        `-A IPVSNC-DNAT-1E ${dnatRule(after)}`,
        // 0A goes, leaving 14; 0F goes before it, 1E after it.
        "-D IPVSNC-DNAT -d 0.0.0.10/0.0.0.255 -g IPVSNC-DNAT-0A",
        "-I IPVSNC-DNAT 1 -d 0.0.0.15/0.0.0.255 -g IPVSNC-DNAT-0F",
        "-A IPVSNC-DNAT -d 0.0.0.30/0.0.0.255 -g IPVSNC-DNAT-1E",
        "-F IPVSNC-DNAT-0A",
        "-X IPVSNC-DNAT-0A",
      ),
    ]);
  });

  it("places IPv6 buckets by the last byte, printed the way ip6tables-save prints it", () => {
    const v6 = (...mappings: ReturnType<typeof mapping>[]) =>
      ruleset([family("ipv6", { kind: "sourceCIDRs", cidrs: [] }, mappings)]);
    const a = mapping("2001:db8::1:a", 80, "fd00::a");
    const zero = mapping("2001:db8::100", 80, "fd00::1");
    const ff = mapping("2001:db8::ff", 80, "fd00::ff");
    expect(documentFor(v6(a, zero, ff), v6(a))).toEqual([
      doc(
        "-N IPVSNC-DNAT-00",
        "-N IPVSNC-DNAT-FF",
        `-A IPVSNC-DNAT-00 ${dnatRule(zero)}`,
        `-A IPVSNC-DNAT-FF ${dnatRule(ff)}`,
        "-I IPVSNC-DNAT 1 -d ::/::ff -g IPVSNC-DNAT-00",
        "-A IPVSNC-DNAT -d ::ff/::ff -g IPVSNC-DNAT-FF",
      ),
    ]);
  });

  it("counts the rules iptables-nft decodes to find the deleted ones, and none for a bucket that empties", () => {
    const tls = mapping("192.0.2.10", 443, "10.96.0.10", { name: "tls" });
    const from = ruleset([family("ipv4", POD_CIDRS, [web, tls, api, other])]);
    const cost = (next: typeof from) => {
      const state = stateOf(from);
      const [change] = planChanges(diffRulesets(from, next));
      return change ? deleteScanCost(change, state.buckets("ipv4")) : 0;
    };
    const moved = { ...other, externalIP: "192.0.2.21" };
    // Two deletes from bucket 0A, which holds 3 rules; bucket 14 empties.
    expect(cost(ruleset([family("ipv4", POD_CIDRS, [api, moved])]))).toBe(6);
    // All of 0A goes, but a rule comes back into it: the chain stays, so each delete reads it.
    expect(cost(ruleset([family("ipv4", POD_CIDRS, [{ ...web, port: 81 }, other])]))).toBe(9);
    expect(cost(ruleset([family("ipv4", POD_CIDRS, [other])]))).toBe(0);
  });

  it("creates, refills and removes the source chain of a restricted mapping with its rule", () => {
    const restricted = { ...web, allowedSources: ["10.244.0.0/16"] };
    const narrowed = { ...web, allowedSources: ["10.244.1.0/24"] };
    const withWeb = (m: typeof web) => ruleset([family("ipv4", POD_CIDRS, [m, api, other])]);
    const [created] = documentFor(withWeb(restricted));
    const chain = sourceChain(web);
    expect(created).toBe(
      doc(
        `-N ${chain}`,
        `-A ${chain} -s 10.244.0.0/16 -p tcp -j DNAT --to-destination 10.96.0.10:80`,
        `-D IPVSNC-DNAT-0A ${dnatRule(web)}`,
        `-I IPVSNC-DNAT-0A 1 ${dnatRule(restricted)}`,
      ),
    );
    expect(documentFor(withWeb(narrowed), withWeb(restricted))).toEqual([
      doc(
        `-F ${chain}`,
        `-A ${chain} -s 10.244.1.0/24 -p tcp -j DNAT --to-destination 10.96.0.10:80`,
        `-D IPVSNC-DNAT-0A ${dnatRule(restricted)}`,
        `-I IPVSNC-DNAT-0A 1 ${dnatRule(narrowed)}`,
      ),
    ]);
    expect(documentFor(withWeb(web), withWeb(restricted))).toEqual([
      doc(
        `-D IPVSNC-DNAT-0A ${dnatRule(restricted)}`,
        `-I IPVSNC-DNAT-0A 1 ${dnatRule(web)}`,
        `-F ${chain}`,
        `-X ${chain}`,
      ),
    ]);
  });

  it("keeps the applied state equal to a fresh one of the resulting ruleset", () => {
    fc.assert(
      fc.property(rulesetArbitrary, rulesetArbitrary, (a, b) => {
        const state = stateOf(a);
        for (const change of planChanges(diffRulesets(a, b))) state.commit(change);
        const fresh = stateOf(b);
        for (const f of ["ipv4", "ipv6"] as const) {
          expect(state.buckets(f).list()).toEqual(fresh.buckets(f).list());
        }
      }),
      { numRuns: 300 },
    );
  });
});

/**
 * Runs a change document on `chains` the way iptables-restore does with the commands a change
 * uses, refusing what the kernel refuses (an existing chain created, a missing rule deleted, a
 * position past the end, a chain deleted while it holds rules or something jumps to it), and
 * all or nothing.
 */
function runDocument(chains: Map<string, string[]>, document: string): void {
  const next = new Map([...chains].map(([name, rules]) => [name, [...rules]]));
  const chain = (name: string) => {
    const rules = next.get(name);
    if (rules === undefined) throw new Error(`no chain ${name}`);
    return rules;
  };
  for (const line of document.split("\n")) {
    if (line === "*nat" || line === "COMMIT" || line === "") continue;
    const [, command, name, rest] = /^-([NAIDFX]) (\S+) ?(.*)$/.exec(line) ?? [];
    if (command === undefined || name === undefined || rest === undefined) {
      throw new Error(`unexpected line: ${line}`);
    }
    if (command === "N") {
      if (next.has(name)) throw new Error(`${name} exists`);
      next.set(name, []);
    } else if (command === "A") {
      chain(name).push(rest);
    } else if (command === "I") {
      const [, position, spec] = /^(\d+) (.*)$/.exec(rest) ?? [];
      const rules = chain(name);
      if (Number(position) < 1 || Number(position) > rules.length + 1) {
        throw new Error(`${line}: index of insertion too big`);
      }
      rules.splice(Number(position) - 1, 0, spec as string);
    } else if (command === "D") {
      const rules = chain(name);
      const index = rules.indexOf(rest);
      if (index < 0) throw new Error(`${line}: no such rule`);
      rules.splice(index, 1);
    } else if (command === "F") {
      chain(name).length = 0;
    } else {
      if (chain(name).length > 0) throw new Error(`${line}: chain not empty`);
      const referenced = [...next.values()].some((rules) =>
        rules.some((spec) => spec.endsWith(` ${name}`)),
      );
      if (referenced) throw new Error(`${line}: chain in use`);
      next.delete(name);
    }
  }
  chains.clear();
  for (const [name, rules] of next) chains.set(name, rules);
}

describe("change documents on a simulated nat table", () => {
  const chainsOf = (r: Ruleset, f: IpFamily) =>
    new Map(
      [...(rulesetPlans(r).get(f)?.target.chains ?? [])].map(([name, rules]) => [name, [...rules]]),
    );
  /** Chains by name: iptables-save lists them sorted, so their order carries no meaning. */
  const sorted = (chains: Map<string, string[]>) =>
    new Map([...chains].sort(([a], [b]) => (a < b ? -1 : 1)));

  it("leave every chain where a full sync of the result would, and the inverse puts it back", () => {
    let buckets = 0;
    fc.assert(
      fc.property(
        rulesetArbitrary,
        fc.array(rulesetArbitrary, { minLength: 1, maxLength: 4 }),
        (first, steps) => {
          const state = RuleOrder.of(rulesetPlans(first));
          const kernel = new Map(FAMILIES.map((f) => [f, chainsOf(first, f)]));
          let previous = first;
          for (const next of steps) {
            for (const change of planChanges(diffRulesets(previous, next))) {
              const chains = kernel.get(change.family) as Map<string, string[]>;
              const before = sorted(chains);
              const document = changeDocument(change, state.buckets(change.family));
              if (/^-[NX] /m.test(document)) buckets++;
              runDocument(chains, document);
              state.commit(change);
              // The roll-back of a change, as the backend sends it when the other family fails.
              const undo = new Map(chains);
              runDocument(
                undo,
                changeDocument(inverseChange(change), state.buckets(change.family)),
              );
              expect(sorted(undo)).toEqual(before);
            }
            previous = next;
            for (const f of FAMILIES) {
              expect(sorted(kernel.get(f) as Map<string, string[]>)).toEqual(
                sorted(chainsOf(next, f)),
              );
            }
          }
        },
      ),
      { numRuns: 500 },
    );
    // Buckets must actually appear and empty, or the property proves little about them.
    expect(buckets).toBeGreaterThan(200);
  });
});
