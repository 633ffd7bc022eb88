import { describe, expect, it } from "vitest";
import { main } from "../src/cli.js";

const fixture = (name: string) => new URL(`fixtures/${name}`, import.meta.url).pathname;

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (text) => out.push(text), err: (text) => err.push(text) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("ipvs-node-controller CLI", () => {
  it("renders nft JSON for a Services file and reports the skipped Service on stderr", async () => {
    const { code, out, err } = await cli(
      "render",
      "--backend",
      "nft",
      "--services",
      fixture("services.yaml"),
      "--pod-cidr",
      "10.244.1.0/24",
    );
    expect(code).toBe(0);
    const document = JSON.parse(out);
    expect(JSON.stringify(document)).toContain("192.0.2.10");
    expect(JSON.stringify(document)).toContain("10.96.0.10");
    expect(err).toMatch(/skipped shop\/broken: InvalidIP: .*"192.0.2.300"/);
  });

  it("renders iptables-restore input with the Service named in a comment", async () => {
    const { code, out } = await cli(
      "render",
      "--backend",
      "iptables",
      "--services",
      fixture("services.yaml"),
      "--node",
      fixture("node.json"),
    );
    expect(code).toBe(0);
    expect(out).toMatch(/\*nat/);
    expect(out).toContain("shop/web");
    expect(out).toContain("10.244.1.0/24");
  });

  it.each([
    [["render", "--backend", "pf", "--services", "x"], /--backend/],
    [["render"], /--services/],
    [["render", "--services", "x", "--net-stack", "ipv5"], /"ipv5"/],
    [["render", "--services", "x", "--masquerade-bit", "32"], /--masquerade-bit: "32"/],
    [["render", "--services", "x", "--detect-local-mode", "ClusterCIDR"], /needs --cluster-cidr/],
    [
      [
        "render",
        "--services",
        "x",
        "--detect-local-mode",
        "BridgeInterface",
        "--pod-bridge-interface",
        "cni0;x",
      ],
      /not a valid interface name/,
    ],
    [["run"], /--node-name/],
    [["run", "--node-name", "n", "--sync-period", "soon"], /--sync-period: "soon"/],
    [["run", "--node-name", "n", "--metrics-bind-address", "nowhere"], /--metrics-bind-address/],
    [["frobnicate"], /unknown command/],
    [["cleanup", "--backend", "pf"], /--backend/],
  ])("exits 2 with a one-line error for %j", async (argv, message) => {
    const { code, err } = await cli(...argv);
    expect(code).toBe(2);
    expect(err).toMatch(message);
    expect(err.trim().split("\n")).toHaveLength(1);
  });

  it("exits 1 with a one-line error naming an unreadable file", async () => {
    const { code, err } = await cli("render", "--services", "/nonexistent.yaml");
    expect(code).toBe(1);
    expect(err).toBe(
      "error: cannot read /nonexistent.yaml: ENOENT: no such file or directory, open '/nonexistent.yaml'",
    );
  });

  it("prints its version", async () => {
    const { code, out } = await cli("--version");
    expect(code).toBe(0);
    expect(out).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("takes the net stack from NET_STACK", async () => {
    process.env.NET_STACK = "ipv4,ipv6";
    try {
      const { out } = await cli(
        "render",
        "--backend",
        "nft",
        "--services",
        fixture("services.yaml"),
      );
      expect(out).toContain("ip6");
    } finally {
      delete process.env.NET_STACK;
    }
  });
});
