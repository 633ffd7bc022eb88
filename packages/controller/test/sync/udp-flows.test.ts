/**
 * Long-lived UDP flows across mapping changes, on the real kernel: one socket per flow sending a
 * numbered datagram every 100 ms to an LB IP, from a pod and from the host, in both families.
 * kube-ipvs0 is emulated (LB IPs and cluster IPs on the node's `lo`, a listener on each cluster
 * IP answering with its name and the datagram's number), and the rules come from the sync loop
 * with the nft backend, as in `ipvs-node-controller run`.
 *
 * NAT is decided on a flow's first packet; later packets follow the conntrack entry. So without
 * help a flow that started before its mapping was added stays untranslated (refused), and one
 * that started before a mapping was re-pointed or removed keeps its old cluster IP, as long as it
 * keeps sending. The first suite shows exactly that on this kernel; the second shows that with
 * the conntrack cleaner every datagram sent after the sync that applied a change follows it, and
 * that the entries of other destinations (another LB IP, another port of the same LB IP) are
 * never deleted.
 */
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import { RulesetEngine, type ServiceInput } from "@ipvs-node-controller/core";
import {
  ADDRESS_PLAN,
  createTopology,
  eventually,
  type Host,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { execa, type ResultPromise } from "execa";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ControllerMetrics, createConntrackCleaner, SyncLoop } from "../../src/index.js";

const enabled = await kernelTestsEnabled("UDP flow tests");

const LB = { ipv4: "192.0.2.53", ipv6: "2001:db8::53" } as const;
const OTHER_LB = "192.0.2.54";
const CLUSTER = {
  a: { ipv4: "10.96.0.53", ipv6: "fd00:10:96::53" },
  b: { ipv4: "10.96.0.54", ipv6: "fd00:10:96::54" },
} as const;
const OTHER_CLUSTER = "10.96.0.55";

/** Answers each datagram with `NAME NUMBER`. */
const ECHO_PROGRAM = `
const dgram = require("node:dgram");
const specs = JSON.parse(process.argv[1]);
let pending = specs.length;
for (const s of specs) {
  const socket = dgram.createSocket(s.ip.includes(":") ? "udp6" : "udp4");
  socket.on("message", (msg, peer) => socket.send(s.name + " " + msg, peer.port, peer.address));
  socket.bind(s.port, s.ip, () => { if (--pending === 0) process.stdout.write("ready\\n"); });
}
`;

/** Sends datagram N every 100 ms from one socket; prints each send and each answer as JSON. */
const FLOW_PROGRAM = `
const dgram = require("node:dgram");
const [ip, port] = JSON.parse(process.argv[1]);
const socket = dgram.createSocket(ip.includes(":") ? "udp6" : "udp4");
const print = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
socket.on("error", () => {});
socket.on("message", (msg) => {
  const [name, n] = msg.toString().split(" ");
  print({ answer: Number(n), name });
});
let n = 0;
socket.bind(0, () => setInterval(() => { n += 1; print({ sent: n, at: Date.now() }); socket.send(String(n), port, ip); }, 100));
`;

/** Datagrams sent after `from` and no later than `to` (ms since the epoch). */
interface Window {
  readonly from: number;
  readonly to: number;
}

/** One running flow: what it sent when, and what answered each datagram. */
class Flow {
  readonly sentAt = new Map<number, number>();
  readonly answers = new Map<number, string>();
  private buffer = "";

  constructor(
    readonly label: string,
    readonly process: ResultPromise,
  ) {
    process.stdout?.on("data", (chunk: Buffer) => {
      this.buffer += chunk.toString();
      const lines = this.buffer.split("\n");
      this.buffer = lines.pop() ?? "";
      for (const line of lines) {
        const event = JSON.parse(line) as {
          sent?: number;
          at?: number;
          answer?: number;
          name?: string;
        };
        if (event.sent !== undefined) this.sentAt.set(event.sent, event.at as number);
        if (event.answer !== undefined) this.answers.set(event.answer, event.name as string);
      }
    });
  }

  /** Datagrams sent after `time` (ms since the epoch). */
  sentAfter(time: number): number[] {
    return [...this.sentAt].filter(([, at]) => at > time).map(([n]) => n);
  }

  /** What answered each datagram sent in the window: a name, or `-` for none. */
  outcomes(window: Window): string[] {
    return [...this.sentAt]
      .filter(([, at]) => at > window.from && at <= window.to)
      .map(([n]) => this.answers.get(n) ?? "-");
  }
}

function dns(cluster: "a" | "b"): ServiceInput {
  return {
    metadata: { namespace: "default", name: "dns" },
    spec: {
      type: "LoadBalancer",
      clusterIP: CLUSTER[cluster].ipv4,
      clusterIPs: [CLUSTER[cluster].ipv4, CLUSTER[cluster].ipv6],
      ports: [{ port: 53, protocol: "UDP" }],
    },
    status: { loadBalancer: { ingress: [{ ip: LB.ipv4 }, { ip: LB.ipv6 }] } },
  };
}

/** Two other destinations: another LB IP, and another port of dns's LB IP. */
const NEIGHBOURS: Record<string, ServiceInput> = {
  other: {
    metadata: { namespace: "default", name: "other" },
    spec: {
      type: "LoadBalancer",
      clusterIP: OTHER_CLUSTER,
      ports: [{ port: 53, protocol: "UDP" }],
    },
    status: { loadBalancer: { ingress: [{ ip: OTHER_LB }] } },
  },
  side: {
    metadata: { namespace: "default", name: "side" },
    spec: {
      type: "LoadBalancer",
      clusterIP: OTHER_CLUSTER,
      ports: [{ port: 54, protocol: "UDP" }],
    },
    status: { loadBalancer: { ingress: [{ ip: LB.ipv4 }] } },
  },
};

describe.skipIf(!enabled)("long-lived UDP flows across mapping changes", () => {
  let topology: Topology;
  let engine: RulesetEngine;
  let loop: SyncLoop;
  let metrics: ControllerMetrics;
  const processes: ResultPromise[] = [];

  const start = (host: Host, program: string, argument: string): ResultPromise => {
    const child = execa(
      "ip",
      ["netns", "exec", topology.namespaces[host], process.execPath, "-e", program, argument],
      { reject: false, buffer: false, stdin: "ignore" },
    );
    processes.push(child);
    return child;
  };

  const startFlow = (host: Host, ip: string, port = 53) =>
    new Flow(`${host} -> ${ip}:${port}`, start(host, FLOW_PROGRAM, JSON.stringify([ip, port])));

  const syncs = async () =>
    (await metrics.syncs.get()).values.reduce((sum, value) => sum + value.value, 0);

  /** Changes the engine, wakes the loop, and returns when exactly one more sync has finished. */
  async function change(update: () => void): Promise<number> {
    const before = await syncs();
    update();
    loop.markDirty();
    await eventually("the change is synced", async () => (await syncs()) > before);
    expect(await syncs()).toBe(before + 1);
    return Date.now();
  }

  /**
   * Waits until every flow has sent `count` datagrams after `from`, then one period more, so
   * that the answers to the datagrams of the window it returns are in.
   */
  async function settle(flows: readonly Flow[], from: number, count = 5): Promise<Window> {
    await eventually(`${count} datagrams sent by every flow`, () =>
      flows.every((flow) => flow.sentAfter(from).length >= count),
    );
    const to = Date.now();
    await eventually("one more datagram each", () =>
      flows.every((flow) => flow.sentAfter(to).length >= 1),
    );
    return { from, to };
  }

  /** Conntrack ids of the entries towards `ip`:`port` (UDP) in the node namespace. */
  async function entryIds(ip: string, port: number): Promise<string[]> {
    const listed = await topology.runner("node")("conntrack", [
      "-L",
      "-p",
      "udp",
      "--orig-dst",
      ip,
      "--dport",
      String(port),
      "-o",
      "id",
    ]);
    if (listed.exitCode !== 0) throw new Error(`conntrack -L: ${listed.stderr}`);
    return [...listed.stdout.matchAll(/id=(\d+)/g)].map((match) => match[1] as string).sort();
  }

  async function startLoop(withCleaner: boolean): Promise<void> {
    const log = pino({ level: "silent" });
    const node = topology.runner("node");
    metrics = new ControllerMetrics();
    engine = new RulesetEngine({
      config: {
        families: ["ipv4", "ipv6"],
        extraPodCIDRs: [ADDRESS_PLAN.podCIDR.ipv4, ADDRESS_PLAN.podCIDR.ipv6],
      },
    });
    for (const [name, service] of Object.entries(NEIGHBOURS)) engine.setService(name, service);
    loop = new SyncLoop({
      backend: createNftBackend({ runner: node }),
      state: engine,
      minSyncPeriodMs: 0,
      // No periodic verify during a test: every sync is one of ours.
      syncPeriodMs: 600_000,
      metrics,
      log,
      conntrack: withCleaner
        ? createConntrackCleaner({ runner: node, log, registry: metrics.registry })
        : undefined,
    });
    loop.start();
    await eventually("the first sync", async () => (await syncs()) === 1);
  }

  beforeEach(async () => {
    topology = await createTopology({ prefix: "udp" });
    await topology.addNodeAddresses([
      LB.ipv4,
      LB.ipv6,
      OTHER_LB,
      CLUSTER.a.ipv4,
      CLUSTER.a.ipv6,
      CLUSTER.b.ipv4,
      CLUSTER.b.ipv6,
      OTHER_CLUSTER,
    ]);
    const echo = start(
      "node",
      ECHO_PROGRAM,
      JSON.stringify([
        { ip: CLUSTER.a.ipv4, port: 53, name: "a" },
        { ip: CLUSTER.a.ipv6, port: 53, name: "a" },
        { ip: CLUSTER.b.ipv4, port: 53, name: "b" },
        { ip: CLUSTER.b.ipv6, port: 53, name: "b" },
        { ip: OTHER_CLUSTER, port: 53, name: "other" },
        { ip: OTHER_CLUSTER, port: 54, name: "side" },
      ]),
    );
    await new Promise<void>((resolve) => echo.stdout?.once("data", () => resolve()));
  });

  afterEach(async () => {
    await loop?.stop();
    for (const child of processes.splice(0)) child.kill("SIGKILL");
    await topology?.destroy();
  });

  it("without conntrack cleanup, a flow keeps the translation its first packet got", async () => {
    await startLoop(false);
    let flows = [startFlow("pod", LB.ipv4), startFlow("node", LB.ipv4), startFlow("pod", LB.ipv6)];
    await settle(flows, Date.now());
    const expectAll = (window: Window, outcome: string) => {
      for (const flow of flows) {
        expect(new Set(flow.outcomes(window)), flow.label).toEqual(new Set([outcome]));
      }
    };

    // Added after the flow started: still refused...
    expectAll(await settle(flows, await change(() => engine.setService("dns", dns("a")))), "-");
    // ...while a new flow is translated.
    const fresh = startFlow("pod", LB.ipv4);
    await eventually("a new flow is answered by a", () =>
      [...fresh.answers.values()].includes("a"),
    );

    flows = [startFlow("pod", LB.ipv4), startFlow("node", LB.ipv4), startFlow("pod", LB.ipv6)];
    await settle(flows, Date.now());
    // Re-pointed: still the old cluster IP.
    expectAll(await settle(flows, await change(() => engine.setService("dns", dns("b")))), "a");
    // Removed: still translated.
    expectAll(await settle(flows, await change(() => engine.setService("dns", undefined))), "a");
  }, 60_000);

  it("with conntrack cleanup, every datagram sent after the sync follows the change", async () => {
    await startLoop(true);
    const neighbours = [startFlow("pod", OTHER_LB), startFlow("pod", LB.ipv4, 54)];
    await eventually("the neighbours are answered", () =>
      neighbours.every((flow) => flow.answers.size > 0),
    );
    const neighbourIds = [await entryIds(OTHER_LB, 53), await entryIds(LB.ipv4, 54)];
    expect(neighbourIds.map((ids) => ids.length)).toEqual([1, 1]);

    const flows = [
      startFlow("pod", LB.ipv4),
      startFlow("node", LB.ipv4),
      startFlow("pod", LB.ipv6),
    ];
    await settle(flows, Date.now());
    for (const flow of flows) expect(flow.answers.size, flow.label).toBe(0);

    const switched: number[] = [];
    for (const [step, update, expected] of [
      ["added", () => engine.setService("dns", dns("a")), "a"],
      ["re-pointed", () => engine.setService("dns", dns("b")), "b"],
      ["removed", () => engine.setService("dns", undefined), "-"],
    ] as const) {
      const changed = Date.now();
      const window = await settle(flows, await change(update));
      for (const flow of flows) {
        expect(new Set(flow.outcomes(window)), `${step}: ${flow.label}`).toEqual(
          new Set([expected]),
        );
        const first = flow
          .sentAfter(changed)
          .find((n) => (flow.answers.get(n) ?? "-") === expected);
        switched.push((flow.sentAt.get(first as number) as number) - changed);
      }
    }

    // The other destinations' entries were never deleted, and every datagram of theirs that had
    // time to be answered was answered.
    expect([await entryIds(OTHER_LB, 53), await entryIds(LB.ipv4, 54)]).toEqual(neighbourIds);
    for (const flow of neighbours) {
      const answered = Math.max(...flow.answers.keys());
      const unanswered = flow.sentAfter(0).filter((n) => n < answered && !flow.answers.has(n));
      expect(unanswered, flow.label).toEqual([]);
    }
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/ipvs_node_controller_conntrack_deleted_entries_total [1-9]/);
    expect(text).toMatch(/ipvs_node_controller_conntrack_failures_total 0/);
    console.log(
      `UDP flows followed the change from the first datagram sent that long after it (ms): ${switched.join(", ")}`,
    );
  }, 60_000);
});
