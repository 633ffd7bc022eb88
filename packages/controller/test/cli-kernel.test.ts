/**
 * The built CLI on the real kernel, inside a throwaway network namespace: exit codes, one-line
 * errors, and that a failed sync leaves the rules that were there.
 */
import { chmod, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI } from "./support/controller-process.js";

const enabled = await kernelTestsEnabled("CLI kernel tests");

const service = (name: string, lbIP: string, clusterIP: string) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { namespace: "default", name },
  spec: { type: "LoadBalancer", clusterIP, ports: [{ port: 80, protocol: "TCP" }] },
  status: { loadBalancer: { ingress: [{ ip: lbIP }] } },
});

// Each test starts several Node processes inside the namespace: give them room on a busy machine.
describe.skipIf(!enabled)("ipvs-node-controller CLI in a network namespace", () => {
  let topology: Topology;
  let dir: string;
  const cli = async (...args: string[]) => {
    const result = await topology.runner("node")(process.execPath, [CLI, ...args]);
    return { ...result, stderrLines: result.stderr.trim().split("\n") };
  };
  const answers = async (ip: string, reply: string) => {
    const result = await topology.connect("pod", ip, 80, "tcp");
    return result.ok && result.reply === reply;
  };

  beforeAll(async () => {
    topology = await createTopology({ prefix: "cli" });
    dir = await mkdtemp(join(tmpdir(), "cli-kernel-"));
    await topology.addNodeAddresses(["192.0.2.10", "192.0.2.11", "10.96.0.10", "10.96.0.11"]);
    await topology.listen([
      { ip: "10.96.0.10", port: 80, protocol: "tcp", reply: "web" },
      { ip: "10.96.0.11", port: 80, protocol: "tcp", reply: "api" },
    ]);
    await writeFile(
      join(dir, "one.json"),
      JSON.stringify(service("web", "192.0.2.10", "10.96.0.10")),
    );
    await writeFile(
      join(dir, "two.yaml"),
      [service("web", "192.0.2.10", "10.96.0.10"), service("api", "192.0.2.11", "10.96.0.11")]
        .map((object) => JSON.stringify(object))
        .join("\n---\n"),
    );
    // Stands in for a kernel that refuses the document: nft's own wording, exit 1.
    await writeFile(
      join(dir, "refusing-nft"),
      "#!/bin/sh\necho 'Error: Could not process rule: Operation not supported' >&2\nexit 1\n",
    );
    await chmod(join(dir, "refusing-nft"), 0o755);
  }, 60_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  it("sync --once applies, reports, and exits 0", async () => {
    const result = await cli(
      "sync",
      "--once",
      "--backend=nft",
      `--services=${join(dir, "one.json")}`,
      "--pod-cidr=10.244.1.0/24",
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/applied 1 mappings with nft/);
    expect(await answers("192.0.2.10", "web")).toBe(true);
  }, 30_000);

  it("exits 1 with one line when the kernel refuses, and the previous rules keep working", async () => {
    const result = await cli(
      "sync",
      "--once",
      "--backend=nft",
      `--nft-path=${join(dir, "refusing-nft")}`,
      `--services=${join(dir, "two.yaml")}`,
      "--pod-cidr=10.244.1.0/24",
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderrLines.filter((line) => line.startsWith("error:"))).toHaveLength(1);
    expect(result.stderr).toMatch(/Operation not supported/);
    expect(await answers("192.0.2.10", "web")).toBe(true);
    expect(await answers("192.0.2.11", "api")).toBe(false);
  }, 30_000);

  it("exits 1 with one line naming a missing binary or an unreadable file", async () => {
    const missing = await cli(
      "sync",
      "--once",
      "--backend=nft",
      "--nft-path=/nonexistent/nft",
      `--services=${join(dir, "two.yaml")}`,
    );
    expect(missing.exitCode).toBe(1);
    expect(missing.stderrLines.filter((line) => line.startsWith("error:"))).toEqual([
      "error: /nonexistent/nft could not be started: ENOENT",
    ]);
    const unreadable = await cli(
      "sync",
      "--once",
      "--backend=nft",
      `--services=${join(dir, "nope.yaml")}`,
    );
    expect(unreadable.exitCode).toBe(1);
    expect(unreadable.stderrLines).toHaveLength(1);
    expect(unreadable.stderr).toMatch(/^error: cannot read .*nope\.yaml/);
    expect(await answers("192.0.2.10", "web")).toBe(true);
  }, 30_000);

  it("cleanup removes our rules, succeeds when there is nothing left, and tolerates a missing tool with all", async () => {
    const first = await cli("cleanup", "--backend=nft");
    expect(first.exitCode).toBe(0);
    expect(first.stderr).toMatch(/removed the nft rules/);
    expect(await answers("192.0.2.10", "web")).toBe(false);
    const again = await cli("cleanup", "--backend=nft");
    expect(again.exitCode).toBe(0);
    expect(again.stderr).toMatch(/no nft rules to remove/);
    const all = await cli("cleanup", "--backend=all", "--nft-path=/nonexistent/nft");
    expect(all.exitCode, all.stderr).toBe(0);
    expect(all.stderr).toMatch(
      /no nft rules to remove \(\/nonexistent\/nft could not be started: ENOENT/,
    );
    expect(all.stderr).toMatch(/no iptables rules to remove/);
    const strict = await cli("cleanup", "--backend=nft", "--nft-path=/nonexistent/nft");
    expect(strict.exitCode).toBe(1);
    const iptables = await cli("cleanup", "--backend=iptables", "--iptables-bin-dir=/nonexistent");
    expect(iptables.exitCode).toBe(1);
    expect(iptables.stderr).toMatch(/^error: .*\/nonexistent\/iptables-/);
  }, 30_000);
});
