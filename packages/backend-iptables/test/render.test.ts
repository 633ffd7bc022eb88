import {
  computeRuleset,
  InvalidRulesetError,
  type LocalPodMatch,
  parseIP,
} from "@ipvs-node-controller/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  bucketChain,
  bucketJump,
  CHAINS,
  EMPTY_STATE,
  EMPTY_TARGET,
  familyTarget,
  normalizeSpec,
  parseNatSave,
  planTransition,
  renderRuleset,
  rulesetTargets,
  tokenize,
} from "../src/index.js";
import { family, hostileString, mapping, ruleset, SETTINGS, serviceArbitrary } from "./fixtures.js";

const POD_CIDRS: LocalPodMatch = { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] };

describe("renderRuleset", () => {
  it("renders one labelled document per family, in the format iptables-save prints", () => {
    const text = renderRuleset(
      ruleset([
        family("ipv4", POD_CIDRS, [
          mapping("192.0.2.10", 80, "10.96.0.10", { name: "web" }),
          mapping("192.0.2.10", 53, "10.96.0.53", { protocol: "udp", name: "dns" }),
          mapping("198.51.100.7", 443, "10.96.0.7", { name: "api" }),
        ]),
        family("ipv6", { kind: "inputInterfacePrefix", prefix: "cali" }, [
          mapping("2001:db8::10", 443, "fd00:96::10", { protocol: "sctp", namespace: "team-a" }),
          mapping("2001:db8::100", 80, "fd00:96::100", { name: "zero" }),
        ]),
      ]),
    );
    expect(text).toBe(
      [
        "# ipv4: iptables-restore --noflush -w",
        "*nat",
        ":IPVSNC-PREROUTING - [0:0]",
        ":IPVSNC-OUTPUT - [0:0]",
        ":IPVSNC-PODS - [0:0]",
        ":IPVSNC-SERVICES - [0:0]",
        ":IPVSNC-DNAT - [0:0]",
        ":IPVSNC-DNAT-07 - [0:0]",
        ":IPVSNC-DNAT-0A - [0:0]",
        "-A IPVSNC-PREROUTING -s 10.244.1.0/24 -j IPVSNC-PODS",
        "-A IPVSNC-OUTPUT -m addrtype --src-type LOCAL -j IPVSNC-SERVICES",
        // Pod traffic keeps its source address: no mark.
        "-A IPVSNC-PODS -m addrtype ! --dst-type LOCAL -j RETURN",
        "-A IPVSNC-PODS -j IPVSNC-DNAT",
        "-A IPVSNC-SERVICES -m addrtype ! --dst-type LOCAL -j RETURN",
        "-A IPVSNC-SERVICES -m mark --mark 0x4000/0x4000 -j IPVSNC-DNAT",
        "-A IPVSNC-SERVICES -m mark --mark 0x4000/0x4000 -j RETURN",
        "-A IPVSNC-SERVICES -j MARK --set-xmark 0x4000/0x4000",
        "-A IPVSNC-SERVICES -j IPVSNC-DNAT",
        "-A IPVSNC-SERVICES -j MARK --set-xmark 0x0/0x4000",
        // Buckets in the order of the address's last byte, not of the address.
        "-A IPVSNC-DNAT -d 0.0.0.7/0.0.0.255 -g IPVSNC-DNAT-07",
        "-A IPVSNC-DNAT -d 0.0.0.10/0.0.0.255 -g IPVSNC-DNAT-0A",
        '-A IPVSNC-DNAT-07 -d 198.51.100.7/32 -p tcp -m tcp --dport 443 -m comment --comment "default/api" -j DNAT --to-destination 10.96.0.7:443',
        '-A IPVSNC-DNAT-0A -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -m comment --comment "default/web" -j DNAT --to-destination 10.96.0.10:80',
        '-A IPVSNC-DNAT-0A -d 192.0.2.10/32 -p udp -m udp --dport 53 -m comment --comment "default/dns" -j DNAT --to-destination 10.96.0.53:53',
        "-I PREROUTING 1 -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING",
        "-I OUTPUT 1 -m comment --comment ipvs-node-controller -j IPVSNC-OUTPUT",
        "COMMIT",
        "",
        "# ipv6: ip6tables-restore --noflush -w",
        "*nat",
        ":IPVSNC-PREROUTING - [0:0]",
        ":IPVSNC-OUTPUT - [0:0]",
        ":IPVSNC-PODS - [0:0]",
        ":IPVSNC-SERVICES - [0:0]",
        ":IPVSNC-DNAT - [0:0]",
        ":IPVSNC-DNAT-00 - [0:0]",
        ":IPVSNC-DNAT-10 - [0:0]",
        "-A IPVSNC-PREROUTING -i cali+ -j IPVSNC-PODS",
        "-A IPVSNC-OUTPUT -m addrtype --src-type LOCAL -j IPVSNC-SERVICES",
        "-A IPVSNC-PODS -m addrtype ! --dst-type LOCAL -j RETURN",
        "-A IPVSNC-PODS -j IPVSNC-DNAT",
        "-A IPVSNC-SERVICES -m addrtype ! --dst-type LOCAL -j RETURN",
        "-A IPVSNC-SERVICES -m mark --mark 0x4000/0x4000 -j IPVSNC-DNAT",
        "-A IPVSNC-SERVICES -m mark --mark 0x4000/0x4000 -j RETURN",
        "-A IPVSNC-SERVICES -j MARK --set-xmark 0x4000/0x4000",
        "-A IPVSNC-SERVICES -j IPVSNC-DNAT",
        "-A IPVSNC-SERVICES -j MARK --set-xmark 0x0/0x4000",
        "-A IPVSNC-DNAT -d ::/::ff -g IPVSNC-DNAT-00",
        "-A IPVSNC-DNAT -d ::10/::ff -g IPVSNC-DNAT-10",
        '-A IPVSNC-DNAT-00 -d 2001:db8::100/128 -p tcp -m tcp --dport 80 -m comment --comment "default/zero" -j DNAT --to-destination [fd00:96::100]:80',
        '-A IPVSNC-DNAT-10 -d 2001:db8::10/128 -p sctp -m sctp --dport 443 -m comment --comment "team-a/web" -j DNAT --to-destination [fd00:96::10]:443',
        "-I PREROUTING 1 -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING",
        "-I OUTPUT 1 -m comment --comment ipvs-node-controller -j IPVSNC-OUTPUT",
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  it("keeps every chain name within iptables' 28 characters", () => {
    const buckets = Array.from({ length: 256 }, (_, byte) =>
      bucketChain(byte.toString(16).padStart(2, "0")),
    );
    expect(new Set(buckets).size).toBe(256);
    for (const name of [...Object.values(CHAINS), ...buckets]) {
      expect(name.length).toBeLessThanOrEqual(28);
    }
    // iptables-save lists chains by name: the buckets right after IPVSNC-DNAT, in bucket order.
    expect([...buckets, CHAINS.dnat, CHAINS.output].sort()).toEqual([
      CHAINS.dnat,
      ...buckets,
      CHAINS.output,
    ]);
  });

  it.each([
    ["ipv4", "00", "-d 0.0.0.0/0.0.0.255 -g IPVSNC-DNAT-00"],
    ["ipv4", "0a", "-d 0.0.0.10/0.0.0.255 -g IPVSNC-DNAT-0A"],
    ["ipv4", "ff", "-d 0.0.0.255/0.0.0.255 -g IPVSNC-DNAT-FF"],
    ["ipv6", "00", "-d ::/::ff -g IPVSNC-DNAT-00"],
    ["ipv6", "0a", "-d ::a/::ff -g IPVSNC-DNAT-0A"],
    ["ipv6", "ff", "-d ::ff/::ff -g IPVSNC-DNAT-FF"],
  ] as const)("writes the %s jump into bucket %s as iptables-save prints it", (f, bucket, spec) => {
    expect(bucketJump(f, bucket)).toBe(spec);
  });

  it("renders an enabled family without mappings as chains with an empty DNAT list", () => {
    const target = familyTarget(family("ipv4", POD_CIDRS, []), SETTINGS);
    expect(target.chains.get(CHAINS.dnat)).toEqual([]);
    expect([...target.chains.keys()]).toEqual(Object.values(CHAINS));
    expect(target.chains.get(CHAINS.prerouting)).toHaveLength(1);
  });

  it("renders nothing at all for a ruleset without families", () => {
    expect(renderRuleset(ruleset([]))).toBe("");
  });
});

describe("local-pod matching", () => {
  const cases: { name: string; localPods: LocalPodMatch; rules: string[] }[] = [
    {
      name: "one CIDR per rule",
      localPods: { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24", "10.245.0.0/16"] },
      rules: ["-s 10.244.1.0/24 -j IPVSNC-PODS", "-s 10.245.0.0/16 -j IPVSNC-PODS"],
    },
    {
      name: "no CIDR: no pod traffic recognised",
      localPods: { kind: "sourceCIDRs", cidrs: [] },
      rules: [],
    },
    {
      name: "a /0 CIDR is printed without -s, as iptables-save does",
      localPods: { kind: "sourceCIDRs", cidrs: ["0.0.0.0/0"] },
      rules: ["-j IPVSNC-PODS"],
    },
    {
      name: "a bridge interface",
      localPods: { kind: "inputInterface", name: "cni0" },
      rules: ["-i cni0 -j IPVSNC-PODS"],
    },
    {
      name: "an interface prefix",
      localPods: { kind: "inputInterfacePrefix", prefix: "veth" },
      rules: ["-i veth+ -j IPVSNC-PODS"],
    },
  ];
  it.each(cases)("$name", ({ localPods, rules }) => {
    expect(
      familyTarget(family("ipv4", localPods, []), SETTINGS).chains.get(CHAINS.prerouting),
    ).toEqual(rules);
  });

  it("sends pod traffic through the marking chain when the ruleset marks it", () => {
    const target = familyTarget(family("ipv4", POD_CIDRS, []), {
      ...SETTINGS,
      markPodTraffic: true,
    });
    expect(target.chains.get(CHAINS.prerouting)).toEqual(["-s 10.244.1.0/24 -j IPVSNC-SERVICES"]);
    expect(target.chains.has(CHAINS.pods)).toBe(false);
  });

  it("matches IPv6 pod CIDRs in the IPv6 document", () => {
    const target = familyTarget(
      family("ipv6", { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64", "::/0"] }, []),
      SETTINGS,
    );
    expect(target.chains.get(CHAINS.prerouting)).toEqual([
      "-s fd00:10:244:1::/64 -j IPVSNC-PODS",
      "-j IPVSNC-PODS",
    ]);
  });
});

describe("masquerade mark", () => {
  it.each([
    [0x4000, "0x4000"],
    [0x1, "0x1"],
    [0x80000000, "0x80000000"],
  ])("prints mark %i as %s", (mark, printed) => {
    const services = familyTarget(family("ipv4", POD_CIDRS, []), {
      ...SETTINGS,
      masqueradeMark: mark,
    }).chains.get(CHAINS.services);
    expect(services).toContain(`-j MARK --set-xmark ${printed}/${printed}`);
    expect(services).toContain(`-j MARK --set-xmark 0x0/${printed}`);
    expect(services).toContain(`-m mark --mark ${printed}/${printed} -j RETURN`);
  });
});

describe("refusing values that could break the document", () => {
  const good = mapping("192.0.2.10", 80, "10.96.0.10");
  const cases: { field: string; build: () => unknown }[] = [
    { field: "externalIP", build: () => ({ ...good, externalIP: '192.0.2.1" -j ACCEPT "' }) },
    { field: "externalIP", build: () => ({ ...good, externalIP: "192.0.2.1\n-A INPUT -j DROP" }) },
    { field: "externalIP", build: () => ({ ...good, externalIP: "192.0.2.01" }) },
    { field: "externalIP", build: () => ({ ...good, externalIP: "2001:db8::1" }) },
    { field: "clusterIP", build: () => ({ ...good, clusterIP: "10.96.0.10 -j ACCEPT" }) },
    { field: "protocol", build: () => ({ ...good, protocol: "icmp" }) },
    { field: "protocol", build: () => ({ ...good, protocol: "tcp -j ACCEPT" }) },
    { field: "port", build: () => ({ ...good, port: 0 }) },
    { field: "port", build: () => ({ ...good, port: 65536 }) },
    { field: "port", build: () => ({ ...good, port: 1.5 }) },
    { field: "port", build: () => ({ ...good, port: "80" }) },
    {
      field: "namespace",
      build: () => ({ ...good, service: { namespace: 'a" -j DROP "', name: "x" } }),
    },
    { field: "name", build: () => ({ ...good, service: { namespace: "a", name: "x\nCOMMIT" } }) },
    { field: "name", build: () => ({ ...good, service: { namespace: "a", name: "x\\" } }) },
    { field: "name", build: () => ({ ...good, service: { namespace: "a" } }) },
    { field: "family", build: () => ({ ...good, family: "ipv6" }) },
  ];
  it.each(cases)("refuses a bad $field", ({ field, build }) => {
    const bad = ruleset([family("ipv4", POD_CIDRS, [build() as never])]);
    expect(() => renderRuleset(bad)).toThrow(InvalidRulesetError);
    expect(() => renderRuleset(bad)).toThrow(new RegExp(`mappings\\[0\\]\\.(service\\.)?${field}`));
  });

  const localCases: { what: string; localPods: unknown }[] = [
    { what: "cidrs[0]", localPods: { kind: "sourceCIDRs", cidrs: ["10.244.1.1/24"] } },
    { what: "cidrs[0]", localPods: { kind: "sourceCIDRs", cidrs: ["10.244.1.0/33"] } },
    { what: "cidrs[0]", localPods: { kind: "sourceCIDRs", cidrs: ["fd00::/64"] } },
    { what: "cidrs[0]", localPods: { kind: "sourceCIDRs", cidrs: ["10.0.0.0/8 -j DROP"] } },
    { what: "name", localPods: { kind: "inputInterface", name: "eth0 -j DROP" } },
    { what: "name", localPods: { kind: "inputInterface", name: "eth0+" } },
    { what: "prefix", localPods: { kind: "inputInterfacePrefix", prefix: "abcdefghijklmno" } },
    { what: "kind", localPods: { kind: "everything" } },
  ];
  it.each(localCases)("refuses localPods.$what in $localPods", ({ what, localPods }) => {
    const bad = ruleset([family("ipv4", localPods as LocalPodMatch, [])]);
    expect(() => renderRuleset(bad)).toThrow(
      new RegExp(`localPods\\.${what.replace(/[[\]]/g, "\\$&")}`),
    );
  });

  it.each([0, -1, 2 ** 32, 0.5, Number.NaN])("refuses masquerade mark %s", (mark) => {
    expect(() => renderRuleset(ruleset([family("ipv4", POD_CIDRS, [])], mark))).toThrow(
      /masqueradeMark/,
    );
  });

  it("refuses a family listed twice and an unknown family", () => {
    expect(() =>
      renderRuleset(ruleset([family("ipv4", POD_CIDRS, []), family("ipv4", POD_CIDRS, [])])),
    ).toThrow(/ipv4 is listed twice/);
    expect(() => renderRuleset(ruleset([family("ipx" as never, POD_CIDRS, [])]))).toThrow(
      /families\[0\]\.family/,
    );
  });

  it("refuses a mapping key listed twice", () => {
    const twice = ruleset([
      family("ipv4", POD_CIDRS, [
        mapping("192.0.2.1", 80, "10.96.0.1"),
        mapping("192.0.2.1", 80, "10.96.0.2"),
      ]),
    ]);
    expect(() => renderRuleset(twice)).toThrow(/repeats the key ipv4\|192.0.2.1\|tcp\|80/);
  });
});

/** The only shapes of line a rendered document may contain. */
const LINE_GRAMMAR = [
  /^# ipv[46]: ip6?tables-restore --noflush -w$/,
  /^\*nat$/,
  /^:IPVSNC-(PREROUTING|OUTPUT|PODS|SERVICES|DNAT|DNAT-[0-9A-F]{2}|SRC-[0-9A-F]{16}) - \[0:0\]$/,
  /^-A IPVSNC-PREROUTING (-s [0-9a-f.:]+\/\d+ |-i [A-Za-z0-9_.-]+\+? )?-j IPVSNC-(PODS|SERVICES)$/,
  /^-A IPVSNC-PODS (-m addrtype ! --dst-type LOCAL -j RETURN|-j IPVSNC-DNAT)$/,
  /^-A IPVSNC-OUTPUT -m addrtype --src-type LOCAL -j IPVSNC-SERVICES$/,
  /^-A IPVSNC-SERVICES (-m addrtype ! --dst-type LOCAL -j RETURN|-m mark --mark 0x[0-9a-f]+\/0x[0-9a-f]+ -j (IPVSNC-DNAT|RETURN)|-j MARK --set-xmark 0x[0-9a-f]+\/0x[0-9a-f]+|-j IPVSNC-DNAT)$/,
  /^-A IPVSNC-DNAT -d (0\.0\.0\.\d{1,3}\/0\.0\.0\.255|::[0-9a-f]{0,2}\/::ff) -g IPVSNC-DNAT-[0-9A-F]{2}$/,
  /^-A IPVSNC-DNAT-[0-9A-F]{2} -d [0-9a-f.:]+\/(32|128) -p (tcp|udp|sctp) -m (tcp|udp|sctp) --dport \d+ -m comment --comment "[a-z0-9-]+\/[a-z0-9-]+" (-j DNAT --to-destination (\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+|-g IPVSNC-SRC-[0-9A-F]{16})$/,
  /^-A IPVSNC-SRC-[0-9A-F]{16} -s [0-9a-f.:]+\/\d+ -p (tcp|udp|sctp) -j DNAT --to-destination (\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+$/,
  /^-I (PREROUTING|OUTPUT) 1 -m comment --comment ipvs-node-controller -j IPVSNC-(PREROUTING|OUTPUT)$/,
  /^COMMIT$/,
  /^$/,
];

/**
 * Checks a rendered document line by line and returns its DNAT rules. Also checks the buckets:
 * each family's jumps go to distinct buckets in ascending order, each bucket chain is declared,
 * jumped to and not empty, and each rule sits in the bucket of its address's last byte.
 */
function dnatLines(text: string): string[] {
  for (const line of text.split("\n")) {
    if (!LINE_GRAMMAR.some((re) => re.test(line))) throw new Error(`unexpected line: ${line}`);
  }
  const rules: string[] = [];
  for (const document of text.split(/^# ipv[46]: .*$/m).slice(1)) {
    const lines = document.split("\n");
    const declared = lines.filter((l) => /^:IPVSNC-DNAT-/.test(l)).map((l) => l.slice(1, 15));
    const jumps = lines.filter((l) => l.startsWith("-A IPVSNC-DNAT ")).map((l) => l.slice(-14));
    expect(jumps).toEqual([...new Set(jumps)].sort());
    expect(jumps).toEqual(declared);
    const filled = new Set<string>();
    for (const line of lines.filter((l) => l.startsWith("-A IPVSNC-DNAT-"))) {
      const chain = line.slice(3, 17);
      const parsed = parseIP(tokenize(line)[3]?.split("/")[0]);
      expect(parsed.ok).toBe(true);
      if (parsed.ok) expect(chain).toBe(bucketChain(parsed.value.sortKey.slice(-2)));
      filled.add(chain);
      rules.push(line);
    }
    expect([...filled].sort()).toEqual(jumps);
  }
  return rules;
}

describe("properties", () => {
  /** Mostly valid, one field in ~4 mappings hostile. */
  const rarely = <T>(valid: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 25, arbitrary: valid }, { weight: 1, arbitrary: hostileString });
  const hostileMapping = fc
    .record({
      externalIP: rarely(fc.integer({ min: 1, max: 254 }).map((d) => `192.0.2.${d}`)),
      clusterIP: rarely(fc.constant("10.96.0.1")),
      protocol: rarely(fc.constantFrom("tcp", "udp", "sctp")),
      port: fc.oneof(
        { weight: 25, arbitrary: fc.integer({ min: 1, max: 65535 }) },
        { weight: 1, arbitrary: fc.constantFrom(0, -1, 65536, 2.5) },
      ),
      namespace: rarely(fc.constantFrom("default", "a-b")),
      name: rarely(fc.constantFrom("web", "x1")),
    })
    .map((m) => ({
      family: "ipv4" as const,
      externalIP: m.externalIP,
      clusterIP: m.clusterIP,
      protocol: m.protocol as "tcp",
      port: m.port,
      service: { namespace: m.namespace, name: m.name },
    }));

  it("a hostile value is either refused with an InvalidRulesetError or cannot leave its slot", () => {
    let refused = 0;
    let rendered = 0;
    fc.assert(
      fc.property(fc.array(hostileMapping, { maxLength: 6 }), (mappings) => {
        let text: string;
        try {
          text = renderRuleset(ruleset([family("ipv4", POD_CIDRS, mappings)]));
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidRulesetError);
          refused++;
          return;
        }
        expect(dnatLines(text)).toHaveLength(mappings.length);
        if (mappings.length > 0) rendered++;
      }),
      { numRuns: 500 },
    );
    // Both outcomes must actually occur, or the property proves nothing.
    expect(refused).toBeGreaterThan(20);
    expect(rendered).toBeGreaterThan(20);
  });

  it("every mapping computed by the core appears exactly once, with its own comment and target", () => {
    let mappings = 0;
    fc.assert(
      fc.property(fc.array(serviceArbitrary, { maxLength: 8 }), (services) => {
        const { ruleset: computed } = computeRuleset({
          services,
          node: { spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] } },
          config: { families: ["ipv4", "ipv6"] },
        });
        const lines = dnatLines(renderRuleset(computed));
        const all = computed.families.flatMap((f) => f.mappings);
        mappings += all.length;
        expect(lines).toHaveLength(all.length);
        for (const m of all) {
          const host = m.family === "ipv4" ? `${m.externalIP}/32` : `${m.externalIP}/128`;
          const to =
            m.family === "ipv4" ? `${m.clusterIP}:${m.port}` : `[${m.clusterIP}]:${m.port}`;
          const matching = lines.filter(
            (line) =>
              line.includes(` -d ${host} -p ${m.protocol} `) &&
              line.includes(` --dport ${m.port} `) &&
              line.endsWith(` --to-destination ${to}`),
          );
          expect(matching).toHaveLength(1);
          expect(tokenize(matching[0] as string)).toContain(
            `${m.service.namespace}/${m.service.name}`,
          );
        }
      }),
      { numRuns: 200 },
    );
    expect(mappings).toBeGreaterThan(200);
  });
});

describe("tokenize", () => {
  it.each([
    ['-m comment --comment "a b" -j X', ["-m", "comment", "--comment", "a b", "-j", "X"]],
    ['--comment "say \\"hi\\""', ["--comment", 'say "hi"']],
    ["--comment plain   -j  X", ["--comment", "plain", "-j", "X"]],
    ['--comment ""', ["--comment", ""]],
  ])("splits %s", (spec, words) => {
    expect(tokenize(spec)).toEqual(words);
  });

  it("treats quoted and unquoted spellings of the same comment as equal", () => {
    expect(normalizeSpec('-m comment --comment "abc" -j X')).toBe(
      normalizeSpec("-m comment --comment abc -j X"),
    );
  });
});

/** iptables-save output of a node running kube-proxy in IPVS mode, plus our chains. */
const KUBE_SAVE = `# Generated by iptables-save v1.8.9 on Sat Nov 28 12:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:IPVSNC-DNAT - [0:0]
:IPVSNC-OLD - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment ipvs-node-controller -j IPVSNC-OUTPUT
-A KUBE-SERVICES -j IPVSNC-OLD
-A IPVSNC-DNAT -d 192.0.2.1/32 -p tcp -m tcp --dport 80 -m comment --comment "default/web" -j DNAT --to-destination 10.96.0.1:80
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j IPVSNC-FILTER
COMMIT
`;

describe("parseNatSave", () => {
  it("finds our chains and every jump into them in the nat table only", () => {
    const state = parseNatSave(KUBE_SAVE);
    expect([...state.chains.keys()]).toEqual(["IPVSNC-DNAT", "IPVSNC-OLD"]);
    expect(state.chains.get("IPVSNC-DNAT")).toHaveLength(1);
    expect(state.jumps).toEqual([
      {
        chain: "PREROUTING",
        spec: "-m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING",
        index: 0,
      },
      {
        chain: "OUTPUT",
        spec: "-m comment --comment ipvs-node-controller -j IPVSNC-OUTPUT",
        index: 1,
      },
      { chain: "KUBE-SERVICES", spec: "-j IPVSNC-OLD", index: 0 },
    ]);
  });
});

describe("planTransition", () => {
  const target = familyTarget(
    family("ipv4", POD_CIDRS, [mapping("192.0.2.1", 80, "10.96.0.1")]),
    SETTINGS,
  );
  const applied = (): string => {
    // What iptables-save prints after the target went into an empty table.
    const lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"];
    for (const name of target.chains.keys()) lines.push(`:${name} - [0:0]`);
    for (const jump of target.jumps) lines.push(`-A ${jump.chain} ${jump.spec}`);
    for (const [name, rules] of target.chains) for (const r of rules) lines.push(`-A ${name} ${r}`);
    lines.push("COMMIT");
    return lines.join("\n");
  };

  it("declares, fills and inserts jumps into an empty table", () => {
    const plan = planTransition(EMPTY_STATE, target);
    expect(plan.upToDate).toBe(false);
    expect(plan.document).not.toMatch(/^-D /m);
    expect(plan.document.match(/^-I /gm)).toHaveLength(2);
  });

  it("reports up to date when the live state equals the target, and keeps the jumps", () => {
    const plan = planTransition(parseNatSave(applied()), target);
    expect(plan.upToDate).toBe(true);
    expect(plan.document).not.toMatch(/^-[DI] /m);
  });

  it("is not up to date when one rule differs", () => {
    const drifted = applied().replace("10.96.0.1:80", "10.96.0.2:80");
    expect(planTransition(parseNatSave(drifted), target).upToDate).toBe(false);
  });

  it("deletes duplicate and misplaced jumps and inserts one at the top", () => {
    const save = applied()
      .replace(
        "-A OUTPUT -m comment",
        "-A OUTPUT -j KUBE-SERVICES\n-A OUTPUT -m comment --comment ipvs-node-controller -j IPVSNC-OUTPUT\n-A OUTPUT -m comment",
      )
      .replace(
        "-A PREROUTING -m comment",
        "-A PREROUTING -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING\n-A PREROUTING -m comment",
      );
    const plan = planTransition(parseNatSave(save), target);
    expect(plan.upToDate).toBe(false);
    expect(plan.document.match(/^-D PREROUTING /gm)).toHaveLength(2);
    expect(plan.document.match(/^-D OUTPUT /gm)).toHaveLength(2);
    expect(plan.document.match(/^-I PREROUTING 1 /gm)).toHaveLength(1);
    expect(plan.document.match(/^-I OUTPUT 1 /gm)).toHaveLength(1);
    expect(plan.document).not.toMatch(/KUBE-SERVICES/);
  });

  it("drops chains of ours the target lacks, after deleting the jumps into them", () => {
    const plan = planTransition(parseNatSave(KUBE_SAVE), target);
    const lines = plan.document.split("\n");
    expect(lines).toContain(":IPVSNC-OLD - [0:0]");
    expect(lines).toContain("-D KUBE-SERVICES -j IPVSNC-OLD");
    expect(lines.indexOf("-X IPVSNC-OLD")).toBeGreaterThan(
      lines.indexOf("-D KUBE-SERVICES -j IPVSNC-OLD"),
    );
  });

  it("removes bucket chains the target lacks and keeps those it has", () => {
    const save = applied().replace(
      "COMMIT",
      [
        ":IPVSNC-DNAT-07 - [0:0]",
        "-A IPVSNC-DNAT -d 0.0.0.7/0.0.0.255 -g IPVSNC-DNAT-07",
        "-A IPVSNC-DNAT-07 -d 192.0.2.7/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.96.0.7:80",
        "COMMIT",
      ].join("\n"),
    );
    const plan = planTransition(parseNatSave(save), target);
    expect(plan.upToDate).toBe(false);
    const lines = plan.document.split("\n");
    // Declaring IPVSNC-DNAT flushes it, which removes the jump before the chain is deleted.
    expect(lines.indexOf(":IPVSNC-DNAT - [0:0]")).toBeLessThan(lines.indexOf("-X IPVSNC-DNAT-07"));
    expect(lines).toContain(":IPVSNC-DNAT-07 - [0:0]");
    expect(lines.filter((line) => line.startsWith("-X "))).toEqual(["-X IPVSNC-DNAT-07"]);
    expect(lines).toContain("-A IPVSNC-DNAT -d 0.0.0.1/0.0.0.255 -g IPVSNC-DNAT-01");
  });

  it("rewrites a DNAT list of the older layout, which held the translations itself", () => {
    const rule = target.chains.get(bucketChain("01"))?.[0] as string;
    const older = applied()
      .split("\n")
      .filter((line) => !line.includes("IPVSNC-DNAT-01"))
      .join("\n")
      .replace("COMMIT", `-A IPVSNC-DNAT ${rule}\nCOMMIT`);
    const plan = planTransition(parseNatSave(older), target);
    expect(plan.upToDate).toBe(false);
    expect(plan.document.split("\n")).toEqual(
      expect.arrayContaining([
        ":IPVSNC-DNAT - [0:0]",
        ":IPVSNC-DNAT-01 - [0:0]",
        "-A IPVSNC-DNAT -d 0.0.0.1/0.0.0.255 -g IPVSNC-DNAT-01",
        `-A IPVSNC-DNAT-01 ${rule}`,
      ]),
    );
  });

  it("removes everything of ours and nothing else for the empty target", () => {
    const plan = planTransition(parseNatSave(KUBE_SAVE), EMPTY_TARGET);
    expect(plan.document).toBe(
      [
        "*nat",
        ":IPVSNC-DNAT - [0:0]",
        ":IPVSNC-OLD - [0:0]",
        "-D PREROUTING -m comment --comment ipvs-node-controller -j IPVSNC-PREROUTING",
        "-D OUTPUT -m comment --comment ipvs-node-controller -j IPVSNC-OUTPUT",
        "-D KUBE-SERVICES -j IPVSNC-OLD",
        "-X IPVSNC-DNAT",
        "-X IPVSNC-OLD",
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  it("needs nothing to clean up in a table without anything of ours", () => {
    expect(planTransition(EMPTY_STATE, EMPTY_TARGET).upToDate).toBe(true);
  });
});

describe("rulesetTargets", () => {
  it("keeps IPv4 and IPv6 apart", () => {
    const targets = rulesetTargets(
      ruleset([
        family("ipv4", POD_CIDRS, [mapping("192.0.2.1", 80, "10.96.0.1")]),
        family("ipv6", { kind: "sourceCIDRs", cidrs: [] }, [mapping("2001:db8::1", 80, "fd00::1")]),
      ]),
    );
    expect(targets.get("ipv4")?.chains.get(bucketChain("01"))?.[0]).toContain("10.96.0.1:80");
    expect(targets.get("ipv6")?.chains.get(bucketChain("01"))?.[0]).toContain("[fd00::1]:80");
  });
});
