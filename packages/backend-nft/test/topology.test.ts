import {
  ADDRESS_PLAN,
  createTopology,
  eventually,
  hostRunner,
  kernelTestsEnabled,
  netnsSupport,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

const kernel = await kernelTestsEnabled("network-namespace topology tests");

// The fixture must reproduce the bug before any product code is involved.
describe.skipIf(!kernel)("test topology reproduces the IPVS Local-policy hole", () => {
  let topology: Topology;
  const lb = { ipv4: "203.0.113.10", ipv6: "2001:db8:ffff::10" };
  const cluster = { ipv4: "10.96.0.10", ipv6: "fd00:10:96::10" };

  beforeAll(async () => {
    topology = await createTopology({ prefix: "fixture" });
    await topology.addNodeAddresses([lb.ipv4, lb.ipv6, cluster.ipv4, cluster.ipv6]);
    await topology.listen([
      { ip: cluster.ipv4, port: 80, protocol: "tcp", reply: "web" },
      { ip: cluster.ipv6, port: 80, protocol: "tcp", reply: "web6" },
      { ip: cluster.ipv4, port: 53, protocol: "udp", reply: "dns" },
      { ip: cluster.ipv6, port: 53, protocol: "udp", reply: "dns6" },
    ]);
  }, 30_000);
  afterAll(async () => {
    await topology?.destroy();
  });

  for (const family of ["ipv4", "ipv6"] as const) {
    it(`${family}: pod -> cluster IP answers, pod -> LB IP is refused (tcp and udp)`, async () => {
      expect(await topology.connect("pod", cluster[family], 80, "tcp")).toEqual({
        ok: true,
        reply: family === "ipv4" ? "web" : "web6",
      });
      expect(await topology.connect("pod", cluster[family], 53, "udp")).toEqual({
        ok: true,
        reply: family === "ipv4" ? "dns" : "dns6",
      });
      expect(await topology.connect("pod", lb[family], 80, "tcp")).toEqual({
        ok: false,
        error: "refused",
      });
      expect(await topology.connect("pod", lb[family], 53, "udp")).toEqual({
        ok: false,
        error: "refused",
      });
    });

    it(`${family}: host network and remote host are refused on the LB IP too`, async () => {
      expect(await topology.connect("node", lb[family], 80, "tcp")).toEqual({
        ok: false,
        error: "refused",
      });
      expect(await topology.connect("remote", lb[family], 80, "tcp")).toEqual({
        ok: false,
        error: "refused",
      });
      expect(await topology.connect("remote", cluster[family], 80, "tcp")).toMatchObject({
        ok: true,
      });
    });
  }

  it("the mark counter starts at zero and sees no unmarked traffic", async () => {
    const counter = await topology.markCounter();
    await topology.connect("pod", cluster.ipv4, 80, "tcp");
    expect(await counter.read()).toBe(0);
  });

  it("puts the pod inside the pod CIDR and names its namespaces uniquely", () => {
    expect(ADDRESS_PLAN.pod.ipv4.startsWith("10.244.1.")).toBe(true);
    expect(topology.namespaces.node).toContain(String(process.pid));
    expect(new Set(Object.values(topology.namespaces)).size).toBe(3);
  });

  it("destroy removes every namespace and can be called twice", async () => {
    const extra = await createTopology({ prefix: "fixture" });
    await extra.listen([
      { ip: ADDRESS_PLAN.nodePodSide.ipv4, port: 8080, protocol: "tcp", reply: "x" },
    ]);
    await extra.destroy();
    await extra.destroy();
    const listed = await hostRunner("ip", ["netns", "list"]);
    for (const name of Object.values(extra.namespaces)) expect(listed.stdout).not.toContain(name);
  });

  it("builds the node around a process's own namespace, which outlives destroy", async () => {
    const { spawn } = await import("node:child_process");
    const { readlinkSync } = await import("node:fs");
    // A process with a network namespace of its own, as a container's first process has.
    const holder = spawn("unshare", ["--net", "sleep", "60"], { stdio: "ignore" });
    const exited = new Promise((resolve) => holder.once("exit", resolve));
    const pid = String(holder.pid);
    try {
      await eventually(
        "the process is in its own namespace",
        () => readlinkSync(`/proc/${pid}/ns/net`) !== readlinkSync("/proc/self/ns/net"),
      );
      const around = await createTopology({ prefix: "fixture", nodePid: holder.pid });
      await around.addNodeAddresses([cluster.ipv4]);
      await around.listen([{ ip: cluster.ipv4, port: 80, protocol: "tcp", reply: "held" }]);
      expect(await around.connect("pod", cluster.ipv4, 80, "tcp")).toEqual({
        ok: true,
        reply: "held",
      });
      const inHolder = (...args: string[]) =>
        hostRunner("nsenter", ["-t", pid, "-n", "ip", ...args]);
      expect((await inHolder("-o", "link")).stdout).toContain(ADDRESS_PLAN.podInterface);

      await around.destroy();
      const listed = await hostRunner("ip", ["netns", "list"]);
      for (const name of Object.values(around.namespaces)) {
        expect(listed.stdout).not.toContain(name);
      }
      // Only the name went: the process's namespace keeps what was bound in it.
      expect((await inHolder("-o", "addr")).stdout).toContain(cluster.ipv4);
    } finally {
      holder.kill("SIGKILL");
      await exited;
    }
  }, 30_000);
});

describe("kernel test gate without root", () => {
  afterEach(() => {
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
  });

  it("names the reason, warns loudly and skips outside CI", async () => {
    vi.spyOn(process, "getuid").mockReturnValue(1000);
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    vi.stubEnv("CI", "");
    expect(await netnsSupport()).toEqual({
      ok: false,
      reason: "network namespace tests need root (running as uid 1000)",
    });
    expect(await kernelTestsEnabled("some suite")).toBe(false);
    expect(warn).toHaveBeenCalledWith(
      expect.stringContaining("SKIPPING some suite: network namespace tests need root"),
    );
  });

  it("fails instead of skipping when CI=true", async () => {
    vi.spyOn(process, "getuid").mockReturnValue(1000);
    vi.stubEnv("CI", "true");
    await expect(kernelTestsEnabled("some suite")).rejects.toThrow(
      /CI=true forbids skipping: .*need root/,
    );
  });
});
