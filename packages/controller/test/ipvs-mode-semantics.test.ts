/**
 * What kube-proxy's IPVS mode means for a LoadBalancer IP, kept by the controller: on an emulated
 * IPVS node (LB IPs bound locally, as on kube-ipvs0; IPVS's forwarding to an endpoint emulated by
 * routing the cluster IP to the endpoint's namespace) with the rules IPVS mode writes around it
 * (its source-range firewall, its loop-back and mark masquerade; see test-support's ipvs-mode),
 * the controller's translation, from `sync --once` of Services and a Node as the API returns them:
 *
 * - admits exactly the sources the firewall admits, and the others stay blocked;
 * - lets the endpoint see the pod's own address for pod traffic, and a node address for the
 *   host's (or the node's for pods too, with --masquerade-pod-traffic);
 * - lets a pod reach its own endpoint through its LB IP, through IPVS mode's loop-back masquerade;
 * - leaves traffic from outside the node alone.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ADDRESS_PLAN,
  createTopology,
  type Host,
  installIpvsModeRules,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI } from "./support/controller-process.js";

const enabled = await kernelTestsEnabled("IPVS-mode semantics tests");

const PORT = 80;
const POD = ADDRESS_PLAN.pod;
const NODE_IP = ADDRESS_PLAN.nodeRemoteSide;

/** The Services, dual-stack where IPv6 matters, each with its endpoint's place. */
const SERVICES = [
  { name: "open", lb: ["192.0.2.60"], cluster: ["10.96.1.60"], endpoint: "remote" },
  {
    name: "pods",
    lb: ["192.0.2.61", "2001:db8:6::61"],
    cluster: ["10.96.1.61", "fd00:10:96:1::61"],
    endpoint: "remote",
    ranges: [ADDRESS_PLAN.podCIDR.ipv4, ADDRESS_PLAN.podCIDR.ipv6],
  },
  {
    // The node's InternalIP is inside: host traffic is admitted, pods are not.
    name: "node",
    lb: ["192.0.2.62", "2001:db8:6::62"],
    cluster: ["10.96.1.62", "fd00:10:96:1::62"],
    endpoint: "remote",
    ranges: ["198.51.100.0/24", "2001:db8:100::/64"],
  },
  {
    name: "nobody",
    lb: ["192.0.2.63"],
    cluster: ["10.96.1.63"],
    endpoint: "remote",
    ranges: ["203.0.113.0/24"],
  },
  // Its only endpoint is the client pod itself.
  { name: "self", lb: ["192.0.2.64"], cluster: ["10.96.1.64"], endpoint: "pod" },
] as const satisfies readonly {
  name: string;
  lb: readonly string[];
  cluster: readonly string[];
  endpoint: "remote" | "pod";
  ranges?: readonly string[];
}[];

function serviceObject(service: (typeof SERVICES)[number]) {
  const ranges = "ranges" in service ? { loadBalancerSourceRanges: service.ranges } : {};
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace: "default", name: service.name },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      clusterIP: service.cluster[0],
      clusterIPs: service.cluster,
      ports: [{ port: PORT, protocol: "TCP" }],
      ...ranges,
    },
    status: { loadBalancer: { ingress: service.lb.map((ip) => ({ ip })) } },
  };
}

const NODE = {
  apiVersion: "v1",
  kind: "Node",
  metadata: { name: "worker-1" },
  spec: { podCIDRs: [ADDRESS_PLAN.podCIDR.ipv4, ADDRESS_PLAN.podCIDR.ipv6] },
  status: {
    addresses: [
      { type: "InternalIP", address: NODE_IP.ipv4 },
      { type: "InternalIP", address: NODE_IP.ipv6 },
      { type: "Hostname", address: "worker-1" },
    ],
  },
};

/** One connection: from which host to which LB IP. */
interface Case {
  readonly label: string;
  readonly from: Host;
  readonly ip: string;
}

const cases: Case[] = SERVICES.flatMap((service) =>
  service.lb.flatMap((ip) =>
    (["pod", "node", "remote"] as const).map((from) => ({
      label: `${from} -> ${service.name} ${ip}`,
      from,
      ip,
    })),
  ),
);

/**
 * What kube-proxy's IPVS mode would serve if the bug did not exist, and who the endpoint sees:
 * the pod's own address, or a node address when pod traffic is masqueraded too.
 */
function expected(masqueradePods: boolean): Record<string, string> {
  const podSeenAs = masqueradePods ? NODE_IP : POD;
  const reply = (name: string, peer: string) => `${name} from ${peer}`;
  const outcome: Record<string, string> = {};
  for (const { label } of cases) outcome[label] = "blocked";
  const set = (from: Host, name: string, ip: string, value: string) => {
    outcome[`${from} -> ${name} ${ip}`] = value;
  };
  set("pod", "open", "192.0.2.60", reply("open", podSeenAs.ipv4));
  set("node", "open", "192.0.2.60", reply("open", NODE_IP.ipv4));
  set("pod", "pods", "192.0.2.61", reply("pods", podSeenAs.ipv4));
  set("pod", "pods", "2001:db8:6::61", reply("pods", podSeenAs.ipv6));
  set("node", "node", "192.0.2.62", reply("node", NODE_IP.ipv4));
  set("node", "node", "2001:db8:6::62", reply("node", NODE_IP.ipv6));
  // A pod reaching itself through its LB IP: IPVS mode's loop-back masquerade hides its address.
  set("pod", "self", "192.0.2.64", reply("self", ADDRESS_PLAN.nodePodSide.ipv4));
  // The host reaching that pod: masqueraded to the node's address towards the pod.
  set("node", "self", "192.0.2.64", reply("self", ADDRESS_PLAN.nodePodSide.ipv4));
  return outcome;
}

describe.skipIf(!enabled).each(["nft", "iptables"] as const)(
  "on an emulated IPVS node with IPVS mode's firewall, --backend %s",
  (backend) => {
    let topology: Topology;
    let dir: string;

    const cli = (...args: string[]) => topology.runner("node")(process.execPath, [CLI, ...args]);
    const sync = async (...extra: string[]) => {
      const result = await cli(
        "sync",
        "--once",
        `--backend=${backend}`,
        `--services=${join(dir, "services.json")}`,
        `--node=${join(dir, "node.json")}`,
        "--net-stack=ipv4,ipv6",
        ...extra,
      );
      expect(result.exitCode, result.stderr).toBe(0);
    };
    /** Each case's outcome: the reply, or `blocked` when nothing answered. */
    const reach = async (): Promise<Record<string, string>> => {
      const outcomes = await Promise.all(
        cases.map(({ from, ip }) => topology.connect(from, ip, PORT, "tcp", { timeoutMs: 1500 })),
      );
      return Object.fromEntries(
        cases.map(({ label }, i) => {
          const outcome = outcomes[i];
          return [label, outcome?.ok ? outcome.reply : "blocked"];
        }),
      );
    };

    beforeAll(async () => {
      topology = await createTopology({ prefix: `ipvs-${backend.slice(0, 3)}` });
      dir = await mkdtemp(join(tmpdir(), "ipvs-mode-"));
      await writeFile(
        join(dir, "services.json"),
        JSON.stringify({ apiVersion: "v1", kind: "List", items: SERVICES.map(serviceObject) }),
      );
      await writeFile(join(dir, "node.json"), JSON.stringify(NODE));
      // kube-ipvs0: every LB IP is a local address of the node; nothing listens on them.
      await topology.addNodeAddresses(SERVICES.flatMap((service) => service.lb));
      // IPVS forwards to the endpoint: here the endpoint's namespace owns the cluster IP.
      for (const host of ["remote", "pod"] as const) {
        const here = SERVICES.filter((service) => service.endpoint === host);
        const addresses = here.flatMap((service) => service.cluster);
        if (host === "remote") await topology.addRemoteAddresses(addresses);
        else await topology.addPodAddresses(addresses);
        await topology.listen(
          here.flatMap((service) =>
            service.cluster.map((ip) => ({
              ip,
              port: PORT,
              protocol: "tcp" as const,
              reply: service.name,
              echoPeer: true,
            })),
          ),
          host,
        );
      }
      await installIpvsModeRules(topology.runner("node"), {
        nodeIPs: NODE_IP,
        loadBalancers: SERVICES.flatMap((service) =>
          service.lb.map((lbIP) => ({
            lbIP,
            port: PORT,
            ...("ranges" in service ? { sourceRanges: service.ranges } : {}),
          })),
        ),
        loopBacks: [{ destination: "10.96.1.64", port: PORT, endpoint: POD.ipv4 }],
      });
    }, 60_000);
    afterAll(async () => {
      await topology?.destroy();
    });

    it("without the controller nothing is served: the bug, with the firewall in front", async () => {
      const outcome = await reach();
      expect(Object.values(outcome).every((value) => value === "blocked")).toBe(true);
    }, 30_000);

    it("serves exactly the sources IPVS mode admits; pods keep their address, the host is masqueraded", async () => {
      await sync();
      expect(await reach()).toEqual(expected(false));
    }, 30_000);

    it("with --masquerade-pod-traffic, endpoints see the node instead of the pod", async () => {
      await sync("--masquerade-pod-traffic");
      expect(await reach()).toEqual(expected(true));
    }, 30_000);

    it("cleanup leaves the node as IPVS mode alone has it", async () => {
      const result = await cli("cleanup", `--backend=${backend}`);
      expect(result.exitCode, result.stderr).toBe(0);
      const outcome = await reach();
      expect(Object.values(outcome).every((value) => value === "blocked")).toBe(true);
    }, 30_000);
  },
);
