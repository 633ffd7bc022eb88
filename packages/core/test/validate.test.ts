import { describe, expect, it } from "vitest";
import {
  addressValue,
  cidrRange,
  InvalidRulesetError,
  type Mapping,
  type Ruleset,
  validateRuleset,
  validateUpdate,
} from "../src/index.js";

function mapping(fields: Partial<Mapping> & Pick<Mapping, "externalIP" | "clusterIP">): Mapping {
  return {
    family: fields.externalIP.includes(":") ? "ipv6" : "ipv4",
    protocol: "tcp",
    port: 80,
    service: { namespace: "default", name: "web" },
    ...fields,
  };
}

function ruleset(mappings: readonly Mapping[]): Ruleset {
  return {
    masqueradeMark: 0x4000,
    markPodTraffic: false,
    families: (["ipv4", "ipv6"] as const).map((family) => ({
      family,
      localPods: {
        kind: "sourceCIDRs",
        cidrs: [family === "ipv4" ? "10.244.1.0/24" : "fd00:10:244:1::/64"],
      },
      mappings: mappings.filter((m) => m.family === family),
    })),
  };
}

const web = mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10" });

describe("validateRuleset", () => {
  const valid = ruleset([web, mapping({ externalIP: "2001:db8::1", clusterIP: "fd00::1" })]);
  const cases: [string, (r: Ruleset) => unknown, RegExp][] = [
    ["mark out of range", (r) => ({ ...r, masqueradeMark: 2 ** 32 }), /masqueradeMark 4294967296/],
    ["mark not an integer", (r) => ({ ...r, masqueradeMark: 1.5 }), /masqueradeMark 1.5/],
    [
      "unknown family",
      (r) => ({ ...r, families: [{ ...r.families[0], family: "ipx" }] }),
      /"ipx" is not ipv4 or ipv6/,
    ],
    [
      "repeated family",
      (r) => ({ ...r, families: [r.families[0], r.families[0]] }),
      /ipv4 is listed twice/,
    ],
    [
      "non-canonical IPv6",
      (r) => withMapping(r, 1, { externalIP: "2001:DB8::1" }),
      /not canonical \(expected "2001:db8::1"\)/,
    ],
    [
      "IPv4 in the IPv6 family",
      (r) => withMapping(r, 1, { clusterIP: "10.0.0.1" }),
      /is not an ipv6 address/,
    ],
    ["garbage address", (r) => withMapping(r, 0, { clusterIP: '1.2.3.4" }' }), /clusterIP/],
    [
      "unknown protocol",
      (r) => withMapping(r, 0, { protocol: "icmp" }),
      /"icmp" is not tcp, udp or sctp/,
    ],
    ["port 0", (r) => withMapping(r, 0, { port: 0 }), /port 0 is not a port/],
    [
      "family mismatch",
      (r) => withMapping(r, 0, { family: "ipv6" }),
      /differs from its family ipv4/,
    ],
    [
      "interface with a wildcard",
      (r) => ({
        ...r,
        families: [{ ...r.families[0], localPods: { kind: "inputInterface", name: "eth*" } }],
      }),
      /"eth\*" is not an interface name/,
    ],
    [
      "interface name too long",
      (r) => ({
        ...r,
        families: [
          { ...r.families[0], localPods: { kind: "inputInterface", name: "a".repeat(16) } },
        ],
      }),
      /is not an interface name \(1-15/,
    ],
    [
      "interface prefix too long for the wildcard",
      (r) => ({
        ...r,
        families: [
          { ...r.families[0], localPods: { kind: "inputInterfacePrefix", prefix: "a".repeat(15) } },
        ],
      }),
      /"a{15}" is not an interface prefix \(1-14/,
    ],
    [
      "CIDR with host bits",
      (r) => ({
        ...r,
        families: [
          { ...r.families[0], localPods: { kind: "sourceCIDRs", cidrs: ["10.244.1.7/24"] } },
        ],
      }),
      /not canonical \(expected "10.244.1.0\/24"\)/,
    ],
    [
      "unknown local-pod kind",
      (r) => ({ ...r, families: [{ ...r.families[0], localPods: { kind: "magic" } }] }),
      /"magic" is not a known local-pod match/,
    ],
    [
      "duplicate key",
      (r) => ({
        ...r,
        families: [{ ...r.families[0], mappings: [web, { ...web, clusterIP: "10.96.0.99" }] }],
      }),
      /repeats the key ipv4\|203.0.113.10\|tcp\|80/,
    ],
  ];

  function withMapping(r: Ruleset, familyIndex: number, fields: Record<string, unknown>): unknown {
    return {
      ...r,
      families: r.families.map((family, index) =>
        index === familyIndex
          ? { ...family, mappings: [{ ...family.mappings[0], ...fields }] }
          : family,
      ),
    };
  }

  it("accepts a valid ruleset", () => {
    expect(() => validateRuleset(valid)).not.toThrow();
  });

  it.each(cases)("rejects %s", (_name, corrupt, message) => {
    expect(() => validateRuleset(corrupt(valid) as Ruleset)).toThrow(message);
    expect(() => validateRuleset(corrupt(valid) as Ruleset)).toThrow(InvalidRulesetError);
  });
});

describe("validateRuleset and the owners that reach rule comments", () => {
  it.each([
    ["namespace", { namespace: 'x" ; flush ruleset', name: "web" }],
    ["name", { namespace: "default", name: "Web_1" }],
    ["name", { namespace: "default", name: "" }],
  ])("refuses a %s that is not a DNS label", (part, service) => {
    const bad = ruleset([{ ...web, service }]);
    expect(() => validateRuleset(bad)).toThrow(InvalidRulesetError);
    expect(() => validateRuleset(bad)).toThrow(`families[0].mappings[0].service.${part}`);
  });

  it("names the field and the problem on the error", () => {
    const error = (() => {
      try {
        validateRuleset(ruleset([{ ...web, port: 70000 }]));
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toMatchObject({
      name: "InvalidRulesetError",
      field: "families[0].mappings[0].port",
      problem: "70000 is not a port (1-65535)",
      message: "invalid ruleset: families[0].mappings[0].port 70000 is not a port (1-65535)",
    });
  });
});

describe("validateUpdate", () => {
  const settings = {
    masqueradeMark: 0x4000,
    markPodTraffic: false,
    families: ruleset([]).families.map(({ family, localPods }) => ({ family, localPods })),
  };
  const update = (fields: Record<string, unknown>) =>
    ({ mappings: [], removed: [], settings, ...fields }) as never;
  const key = { family: "ipv4", externalIP: "203.0.113.10", protocol: "tcp", port: 80 };

  it("accepts a well-formed update", () => {
    expect(() =>
      validateUpdate(update({ mappings: [web], removed: [{ ...key, port: 81 }] })),
    ).not.toThrow();
  });

  it.each([
    [
      "a mapping with a bad address",
      { mappings: [{ ...web, externalIP: "203.0.113.010" }] },
      /mappings\[0\]\.externalIP/,
    ],
    ["a removed key with a bad port", { removed: [{ ...key, port: -1 }] }, /removed\[0\]\.port/],
    [
      "a removed key with a hostile address",
      { removed: [{ ...key, externalIP: '1.2.3.4"; flush ruleset' }] },
      /removed\[0\]\.externalIP/,
    ],
    [
      "a mapping of a family that is not enabled",
      { mappings: [web], settings: { ...settings, families: settings.families.slice(1) } },
      /mappings\[0\]\.family "ipv4" is not an enabled family/,
    ],
    [
      "restricted sources out of order",
      { mappings: [{ ...web, allowedSources: ["10.1.0.0/16", "10.0.0.0/16"] }] },
      /allowedSources\[1\].*out of address order/,
    ],
    [
      "restricted sources inside another",
      { mappings: [{ ...web, allowedSources: ["10.0.0.0/8", "10.1.0.0/16"] }] },
      /allowedSources\[1\].*inside the CIDR before it/,
    ],
    [
      "an empty restriction",
      { mappings: [{ ...web, allowedSources: [] }] },
      /allowedSources is empty/,
    ],
    ["bad settings", { settings: { ...settings, masqueradeMark: 0 } }, /masqueradeMark 0/],
  ])("refuses %s", (_name, fields, message) => {
    expect(() => validateUpdate(update(fields))).toThrow(InvalidRulesetError);
    expect(() => validateUpdate(update(fields))).toThrow(message);
  });
});

describe("address arithmetic", () => {
  it.each([
    ["10.0.0.1", "ipv4", 0x0a000001n],
    ["255.255.255.255", "ipv4", 0xffffffffn],
    ["2001:db8::1", "ipv6", 0x20010db8000000000000000000000001n],
    ["::", "ipv6", 0n],
  ])("addressValue(%s) is the %s value %s", (text, family, value) => {
    expect(addressValue(text)).toEqual({ family, value });
  });

  it.each(["10.0.0.01", "10.0.0", "fe80::1%eth0", "", 7])(
    "addressValue(%j) is undefined",
    (text) => {
      expect(addressValue(text)).toBeUndefined();
    },
  );

  it("cidrRange covers exactly the CIDR, host bits or not", () => {
    expect(cidrRange("10.244.1.7/24")).toEqual({
      family: "ipv4",
      first: 0x0af40100n,
      last: 0x0af401ffn,
    });
    expect(cidrRange("::/0")).toEqual({ family: "ipv6", first: 0n, last: (1n << 128n) - 1n });
    expect(cidrRange("10.0.0.0/33")).toBeUndefined();
  });
});
