/**
 * `ipvs-node-controller doctor` on the real kernel, inside a node network namespace that emulates
 * kube-proxy's IPVS mode (LB IPs and cluster IPs bound on the node, listeners on the cluster IPs
 * only), with each backend: its verdict, its exit code and its probes before and after
 * `sync --once`, on a node where no LB IP is local, after rules drifted, with the other backend's
 * rules left behind, and without its program.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DoctorReport } from "../../src/index.js";
import { CLI } from "../support/controller-process.js";

const enabled = await kernelTestsEnabled("doctor kernel tests");

const service = (name: string, lbIP: string, clusterIP: string, port = 80) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { namespace: "default", name },
  spec: {
    type: "LoadBalancer",
    externalTrafficPolicy: "Local",
    clusterIP,
    ports: [{ port, protocol: "TCP" }],
  },
  status: { loadBalancer: { ingress: [{ ip: lbIP }] } },
});

/** Services of the IPVS node: both LB IPs are bound on the node, as kube-ipvs0 would hold them. */
const IPVS_SERVICES = {
  apiVersion: "v1",
  kind: "List",
  items: [
    service("web", "192.0.2.10", "10.96.0.10"),
    service("api", "192.0.2.11", "10.96.0.11"),
    {
      ...service("elb", "192.0.2.12", "10.96.0.12"),
      status: { loadBalancer: { ingress: [{ hostname: "lb.example.com" }] } },
    },
  ],
};
/** A Service whose LB IP the node does not own: a load balancer elsewhere (the remote host) serves it. */
const VIRTUAL_SERVICES = [service("virtual", "203.0.113.20", "10.96.0.20")];

describe.skipIf(!enabled).each(["nft", "iptables"] as const)("doctor --backend %s", (backend) => {
  let topology: Topology;
  let dir: string;
  const other = backend === "nft" ? "iptables" : "nft";
  const file = (name: string) => join(dir, name);
  const inNode = (program: string, ...args: string[]) => topology.runner("node")(program, args);
  const cli = (...args: string[]) => inNode(process.execPath, CLI, ...args, `--backend=${backend}`);
  const common = ["--pod-cidr=10.244.1.0/24", "--probe", "--probe-timeout=2s"];
  /** Runs doctor with `--output json` and returns its exit code and report. */
  const doctor = async (services: string, ...args: string[]) => {
    const result = await cli(
      "doctor",
      `--services=${services}`,
      ...common,
      "--output=json",
      ...args,
    );
    expect(result.stderr).toBe("");
    return { code: result.exitCode, report: JSON.parse(result.stdout) as DoctorReport };
  };
  const mappingsOf = (report: DoctorReport) =>
    report.services.flatMap(({ service: name, mappings }) =>
      mappings.map((m) => ({
        service: name,
        externalIP: m.externalIP,
        rule: m.rule,
        probe: m.probe,
      })),
    );
  const sync = async (services: string) => {
    const result = await cli(
      "sync",
      "--once",
      `--services=${services}`,
      "--pod-cidr=10.244.1.0/24",
    );
    expect(result.exitCode, result.stderr).toBe(0);
  };
  const ok = async (...command: string[]) => {
    const [program = "", ...args] = command;
    const result = await inNode(program, ...args);
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout;
  };

  beforeAll(async () => {
    topology = await createTopology({ prefix: `doc${backend[0]}` });
    dir = await mkdtemp(join(tmpdir(), "doctor-kernel-"));
    await topology.addNodeAddresses(["192.0.2.10", "192.0.2.11", "10.96.0.10", "10.96.0.11"]);
    await topology.listen([
      { ip: "10.96.0.10", port: 80, protocol: "tcp", reply: "web" },
      { ip: "10.96.0.11", port: 80, protocol: "tcp", reply: "api" },
    ]);
    await topology.addRemoteAddresses(["203.0.113.20"]);
    await topology.listen(
      [{ ip: "203.0.113.20", port: 80, protocol: "tcp", reply: "load balancer" }],
      "remote",
    );
    await writeFile(file("ipvs.json"), JSON.stringify(IPVS_SERVICES));
    await writeFile(
      file("virtual.yaml"),
      VIRTUAL_SERVICES.map((s) => JSON.stringify(s)).join("\n---\n"),
    );
  }, 120_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it("calls a node where no LB IP is local inert, with or without the rules, and exits 0", async () => {
    const before = await doctor(file("virtual.yaml"));
    expect(before.code).toBe(0);
    expect(before.report.verdict).toBe("inert");
    expect(before.report.summary).toMatch(/^not affected: 0 of 1 external IP is a local address/);
    expect(before.report.notes.map((note) => note.code)).toEqual(["InertRuleMissing"]);
    // The host reaches the load balancer itself.
    expect(mappingsOf(before.report)).toEqual([
      {
        service: "default/virtual",
        externalIP: "203.0.113.20",
        rule: "missing",
        probe: { result: "ok" },
      },
    ]);

    await sync(file("virtual.yaml"));
    const after = await doctor(file("virtual.yaml"));
    expect(after.code).toBe(0);
    expect(after.report).toMatchObject({ verdict: "inert", problems: [], notes: [] });
    expect(mappingsOf(after.report)[0]).toMatchObject({ rule: "present", probe: { result: "ok" } });

    const text = await cli("doctor", `--services=${file("virtual.yaml")}`, ...common);
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toMatch(/^verdict: not affected: .* the rules are inert here, by design/m);
    await ok(process.execPath, CLI, "cleanup", `--backend=${backend}`);
  }, 120_000);

  it("finds an IPVS node broken before sync --once (probes refused) and working after it (probes ok)", async () => {
    const before = await doctor(file("ipvs.json"));
    expect(before.code).toBe(1);
    expect(before.report.verdict).toBe("broken");
    expect(before.report.node.externalIPs).toEqual([{ family: "ipv4", total: 2, local: 2 }]);
    expect(before.report.problems.map((problem) => problem.message)).toEqual([
      "default/web: no rule translates 192.0.2.10 tcp/80 to 10.96.0.10, a local address of this node; the host's connection: refused",
      "default/api: no rule translates 192.0.2.11 tcp/80 to 10.96.0.11, a local address of this node; the host's connection: refused",
    ]);
    expect(mappingsOf(before.report)).toEqual([
      {
        service: "default/api",
        externalIP: "192.0.2.11",
        rule: "missing",
        probe: { result: "refused", clusterIP: { result: "ok" } },
      },
      {
        service: "default/web",
        externalIP: "192.0.2.10",
        rule: "missing",
        probe: { result: "refused", clusterIP: { result: "ok" } },
      },
    ]);
    expect(before.report.skipped).toEqual([
      expect.objectContaining({ service: "default/elb", reason: "HostnameOnlyIngress" }),
    ]);

    await sync(file("ipvs.json"));
    const after = await doctor(file("ipvs.json"));
    expect(after.code).toBe(0);
    expect(after.report).toMatchObject({
      ok: true,
      verdict: "working",
      problems: [],
      staleRules: [],
    });
    expect(after.report.summary).toMatch(/^affected, and the fix works: 2 of 2 external IPs/);
    expect(mappingsOf(after.report).map(({ rule, probe }) => ({ rule, probe }))).toEqual([
      { rule: "present", probe: { result: "ok" } },
      { rule: "present", probe: { result: "ok" } },
    ]);
    expect(after.report.rules).toMatchObject({ backend, present: true, mappings: 2, problems: [] });
    expect(after.report.otherBackendRules).toMatchObject({ backend: other, present: false });
    expect(after.report.podTraffic.families).toEqual([
      {
        family: "ipv4",
        match: "sourceCIDRs",
        cidrs: [{ cidr: "10.244.1.0/24", sources: ["--pod-cidr"] }],
      },
    ]);
    if (backend === "nft") {
      // Reading the iptables side (the other backend) created no iptables-legacy table.
      expect(await ok("cat", "/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")).toBe("");
    }
  }, 120_000);

  it("names a deleted translation and a rule no Service wants, exits 1, and 0 once a sync repaired them", async () => {
    if (backend === "nft") {
      const table = ["inet", "ipvs-node-controller", "mappings-ipv4"];
      await ok("nft", "delete", "element", ...table, "{ 192.0.2.11 . tcp . 80 }");
      await ok("nft", "add", "element", ...table, "{ 192.0.2.10 . tcp . 8080 : 10.96.0.10 }");
    } else {
      const rule = (ip: string, port: number) =>
        `-d ${ip}/32 -p tcp -m tcp --dport ${port} -j DNAT --to-destination 10.96.0.10:${port}`.split(
          " ",
        );
      const iptables = async (...args: string[]) => ok("iptables", "-w", "-t", "nat", ...args);
      // api's LB IP ends in 11: bucket 0B; web's in 10: bucket 0A.
      const listed = await iptables("-S", "IPVSNC-DNAT-0B");
      const api = listed.split("\n").find((line) => line.includes("192.0.2.11/32"));
      expect(api).toBeDefined();
      await iptables("-D", "IPVSNC-DNAT-0B", String(listed.split("\n").indexOf(api as string)));
      await iptables("-A", "IPVSNC-DNAT-0A", ...rule("192.0.2.10", 8080));
    }
    const drifted = await doctor(file("ipvs.json"));
    expect(drifted.code).toBe(1);
    expect(drifted.report.problems).toEqual([
      {
        code: "RuleMissing",
        message:
          "default/api: no rule translates 192.0.2.11 tcp/80 to 10.96.0.11, a local address of this node; the host's connection: refused",
      },
      {
        code: "StaleRule",
        message:
          "a rule (no Service named) translates 192.0.2.10 tcp/8080 to 10.96.0.10, which no Service wants",
      },
    ]);
    expect(drifted.report.staleRules).toEqual([
      {
        family: "ipv4",
        externalIP: "192.0.2.10",
        protocol: "tcp",
        port: 8080,
        clusterIP: "10.96.0.10",
        owner: "",
        local: true,
      },
    ]);

    const text = await cli("doctor", `--services=${file("ipvs.json")}`, ...common);
    expect(text.exitCode).toBe(1);
    expect(text.stdout).toMatch(
      /^ {4}192\.0\.2\.11 tcp\/80 +-> +10\.96\.0\.11 +local +rule missing +probe refused \(cluster IP: ok\)$/m,
    );
    expect(text.stdout).toMatch(
      /^ {2}192\.0\.2\.10 tcp\/8080 +-> +10\.96\.0\.10 +local +\(no owner named\)$/m,
    );

    await sync(file("ipvs.json"));
    expect((await doctor(file("ipvs.json"))).code).toBe(0);
  }, 120_000);

  it("names damage around the translations", async () => {
    if (backend === "nft")
      await ok("nft", "flush", "chain", "inet", "ipvs-node-controller", "output");
    else await ok("iptables", "-w", "-t", "nat", "-D", "OUTPUT", "1");
    const damaged = await doctor(file("ipvs.json"));
    expect(damaged.code).toBe(1);
    expect(damaged.report.problems.map((problem) => problem.code)).toContain("RulesDamaged");
    expect(damaged.report.problems.find((p) => p.code === "RulesDamaged")?.message).toBe(
      backend === "nft"
        ? "the nft rules differ from what a sync writes: chain output lacks 1 rule of the 1 a sync writes"
        : "the iptables rules differ from what a sync writes: ipv4: no jump from nat OUTPUT into IPVSNC-OUTPUT",
    );
    // Without the output hook the host's own connections are no longer translated.
    expect(damaged.report.problems.filter((p) => p.code === "ProbeFailed")).toHaveLength(2);
    await sync(file("ipvs.json"));
    expect((await doctor(file("ipvs.json"))).code).toBe(0);
  }, 120_000);

  it("finds the other backend's rules left behind, until cleanup removes them", async () => {
    await ok(
      process.execPath,
      CLI,
      "sync",
      "--once",
      `--backend=${other}`,
      `--services=${file("ipvs.json")}`,
    );
    const both = await doctor(file("ipvs.json"));
    expect(both.code).toBe(1);
    expect(both.report.problems).toEqual([
      expect.objectContaining({
        code: "OtherBackendRules",
        message: expect.stringContaining(
          `the ${other} backend's rules are in the kernel too (2 translations)`,
        ),
      }),
    ]);
    await ok(process.execPath, CLI, "cleanup", `--backend=${other}`);
    expect((await doctor(file("ipvs.json"))).code).toBe(0);
  }, 120_000);

  it("says clearly that its program cannot be started, and exits 1", async () => {
    const missing =
      backend === "nft" ? "--nft-path=/nonexistent/nft" : "--iptables-bin-dir=/nonexistent";
    const result = await doctor(file("ipvs.json"), missing);
    expect(result.code).toBe(1);
    expect(result.report.problems).toEqual([
      {
        code: "RulesUnreadable",
        message:
          backend === "nft"
            ? "cannot read the nft rules: /nonexistent/nft could not be started: ENOENT"
            : expect.stringMatching(
                /^cannot read the iptables rules: \/nonexistent\/iptables-nft-save could not be started: /,
              ),
      },
    ]);
    expect(result.report.rules).toMatchObject({ present: null });
    // The translations themselves still work, and the probes say so.
    expect(mappingsOf(result.report).map(({ rule, probe }) => ({ rule, probe }))).toEqual([
      { rule: "unknown", probe: { result: "ok" } },
      { rule: "unknown", probe: { result: "ok" } },
    ]);
    const text = await cli("doctor", `--services=${file("ipvs.json")}`, ...common, missing);
    expect(text.exitCode).toBe(1);
    expect(text.stdout).toMatch(
      /^ {2}- RulesUnreadable: cannot read the (nft|iptables) rules: .*could not be started/m,
    );
  }, 120_000);
});
