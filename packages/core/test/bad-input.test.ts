import { describe, expect, it } from "vitest";
import { computeRuleset, parseCIDR, parseExternalIP, parseIP } from "../src/index.js";
import { lbService } from "./fixtures.js";

describe("parseIP", () => {
  it.each([
    ["192.0.2.1", "ipv4", "192.0.2.1"],
    ["2001:DB8:0:0:0:0:0:1", "ipv6", "2001:db8::1"],
    ["2001:db8::0:1", "ipv6", "2001:db8::1"],
    ["fd00:0:0:1::a", "ipv6", "fd00:0:0:1::a"],
  ])("canonicalises %s", (text, family, address) => {
    expect(parseIP(text)).toMatchObject({ ok: true, value: { family, address } });
  });

  it.each([
    ["", /empty/],
    ["192.0.2.300", /not a valid/],
    ["192.0.2", /not a valid/],
    ["192.0.2.01", /not a valid/], // leading zero: octal in some parsers
    ["0x7f.0.0.1", /not a valid/],
    ["::ffff:192.0.2.1", /IPv4-mapped/],
    ["fe80::1%eth0", /zone suffix/],
    ["2001:db8::1 ", /not a valid IPv6/],
    ["2001:db8::g", /not a valid IPv6/],
    ['192.0.2.1"; flush ruleset', /not a valid/],
    ["192.0.2.1\n-A INPUT -j DROP", /not a valid/],
    ["192.0.2.1;", /not a valid/],
    ["192.0.2.1 # comment", /not a valid/],
    [42, /not a string/],
    [null, /not a string/],
  ])("rejects %j", (text, message) => {
    const parsed = parseIP(text);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.error).toMatch(message);
  });

  it.each(["0.0.0.0", "::", "127.0.0.1", "::1", "224.0.0.1", "ff02::1", "255.255.255.255"])(
    "refuses %s as an external IP",
    (text) => {
      expect(parseExternalIP(text).ok).toBe(false);
    },
  );
});

describe("parseCIDR", () => {
  it.each([
    ["10.244.1.0/24", "10.244.1.0/24"],
    ["10.244.1.7/24", "10.244.1.0/24"],
    ["FD00:10:244:1::/64", "fd00:10:244:1::/64"],
    ["0.0.0.0/0", "0.0.0.0/0"],
  ])("canonicalises %s to %s", (text, cidr) => {
    expect(parseCIDR(text)).toMatchObject({ ok: true, value: { cidr } });
  });

  it.each([
    "10.0.0.0",
    "10.0.0.0/33",
    "10.0.0.0/024",
    "10.0.0.0/-1",
    "fd00::/129",
    "10.0.0.0/8;",
    "x/8",
  ])("rejects %s", (text) => {
    expect(parseCIDR(text).ok).toBe(false);
  });
});

describe("one bad Service never affects another", () => {
  const good = lbService({ name: "good", ingress: [{ ip: "192.0.2.1" }], clusterIP: "10.96.0.1" });

  it.each<[string, Parameters<typeof lbService>[0], string]>([
    ["an invalid ingress IP", { ingress: [{ ip: "192.0.2.999" }] }, "InvalidIP"],
    ["an injected ingress IP", { ingress: [{ ip: '192.0.2.2" ; flush ruleset' }] }, "InvalidIP"],
    ["an IPv4-mapped IPv6 ingress IP", { ingress: [{ ip: "::ffff:192.0.2.2" }] }, "InvalidIP"],
    ["a zone suffix", { ingress: [{ ip: "fe80::1%eth0" }] }, "InvalidIP"],
    ["an invalid cluster IP", { clusterIP: "10.96.0.300" }, "InvalidIP"],
    ["a port out of range", { ports: [{ port: 70000 }] }, "InvalidPort"],
    ["a port of 0", { ports: [{ port: 0 }] }, "InvalidPort"],
    ["a port as text", { ports: [{ port: "80" }] }, "InvalidPort"],
    ["an unknown protocol", { ports: [{ port: 80, protocol: "ICMP" }] }, "InvalidPort"],
    ["an injected protocol", { ports: [{ port: 80, protocol: "tcp\n-A INPUT" }] }, "InvalidPort"],
    ["a name with a quote", { name: 'web"x' }, "InvalidMetadata"],
    ["a namespace with a newline", { namespace: "a\nb" }, "InvalidMetadata"],
    ["a name with a semicolon", { name: "web;x" }, "InvalidMetadata"],
    ["a name with #", { name: "web#x" }, "InvalidMetadata"],
    ["an upper-case name", { name: "Web" }, "InvalidMetadata"],
  ])("%s", (_, options, reason) => {
    const bad = lbService({
      name: "bad",
      ingress: [{ ip: "192.0.2.2" }],
      clusterIP: "10.96.0.2",
      ...options,
    });
    const result = computeRuleset({ services: [bad, good] });
    expect(result.skipped.map((s) => s.reason)).toContain(reason);
    const mappings = result.ruleset.families.flatMap((f) => f.mappings);
    expect(mappings.map((m) => m.service.name)).toEqual(["good"]);
    const text = JSON.stringify(result.ruleset);
    expect(text).not.toMatch(/flush|INPUT|;|#|\\n/);
  });

  it("keeps the sound parts of a Service with one bad entry", () => {
    const service = lbService({
      ingress: [{ ip: "192.0.2.10" }, { ip: "not-an-ip" }],
      ports: [{ port: 80 }, { port: 99999 }],
    });
    const result = computeRuleset({ services: [service] });
    expect(result.ruleset.families[0]?.mappings.map((m) => `${m.externalIP}:${m.port}`)).toEqual([
      "192.0.2.10:80",
    ]);
    expect(result.skipped.map((s) => s.reason).sort()).toEqual(["InvalidIP", "InvalidPort"]);
  });

  it("names the offending value in the report, safely quoted", () => {
    const service = lbService({ ingress: [{ ip: "192.0.2.1\nx" }] });
    const [entry] = computeRuleset({ services: [service] }).skipped;
    expect(entry?.detail).toContain('"192.0.2.1\\nx"');
    expect(entry?.detail).not.toContain("\n");
  });

  it("never throws for garbage objects", () => {
    const garbage = [
      null,
      42,
      {},
      { metadata: null },
      { metadata: { name: "x" }, spec: null },
      {
        metadata: { name: "x" },
        spec: { type: "LoadBalancer", ports: "80" },
        status: { loadBalancer: { ingress: "x" } },
      },
      {
        metadata: { name: "x" },
        spec: { type: "LoadBalancer", clusterIPs: [1, null] },
        status: { loadBalancer: { ingress: [null, 5] } },
      },
      { metadata: { name: {} }, spec: { externalIPs: [{}, []] } },
    ];
    const result = computeRuleset({ services: [...(garbage as never[]), good] });
    expect(result.ruleset.families[0]?.mappings.map((m) => m.service.name)).toEqual(["good"]);
  });
});
