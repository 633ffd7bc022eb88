import {
  ADDRESS_PLAN,
  bridgeIntoNamespace,
  cleanupKubeProxy,
  createTopology,
  envtestTestsEnabled,
  type Host,
  iptablesSaveLines,
  KUBE_PROXY_MODES,
  type KubeProxy,
  type KubeProxyMode,
  kernelTestsEnabled,
  kubeProxyRules,
  nftTableLines,
  sortChainsNamed,
  startKubeProxy,
  startTestApiServer,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  type ControllerProcess,
  startControllerProcess,
} from "../support/controller-process.js";
import { controllerKubeconfig } from "../support/node-fixture.js";

const SUITE = "kube-proxy coexistence tests";
const enabled =
  (await kernelTestsEnabled(SUITE)) && (await envtestTestsEnabled(SUITE)) !== undefined;

const NODE_NAME = "worker-1";
const PORT = 80;
const TARGET_PORT = 8080;
const FAMILIES = ["ipv4", "ipv6"] as const;
type Family = (typeof FAMILIES)[number];

/** Addresses per family. Only ever configured inside the throwaway namespaces. */
const PLAN = {
  ipv4: {
    nodeIP: ADDRESS_PLAN.nodeRemoteSide.ipv4,
    podCIDR: ADDRESS_PLAN.podCIDR.ipv4,
    clusterCIDR: "10.244.0.0/16",
    /** web's endpoint: a pod on another node, hosted by the remote namespace. */
    endpoint: "10.244.2.10",
    web: { clusterIP: "10.96.0.10", lbIP: "192.0.2.100", externalIP: "203.0.113.100" },
    ipvsNode: { clusterIP: "10.96.0.50", lbIP: "192.0.2.50" },
    /** The node's subnet (its InternalIP is in it) and a range holding neither node nor pod. */
    nodeRange: "198.51.100.0/24",
    otherRange: "100.64.0.0/10",
  },
  ipv6: {
    nodeIP: ADDRESS_PLAN.nodeRemoteSide.ipv6,
    podCIDR: ADDRESS_PLAN.podCIDR.ipv6,
    clusterCIDR: "fd00:10:244::/56",
    endpoint: "fd00:10:244:2::10",
    web: { clusterIP: "fd00:10:96::10", lbIP: "2001:db8:2::100", externalIP: "2001:db8:3::100" },
    ipvsNode: { clusterIP: "fd00:10:96::50", lbIP: "2001:db8:2::50" },
    nodeRange: "2001:db8:100::/64",
    otherRange: "fd00:ffff::/32",
  },
} as const;

/**
 * Services restricted by loadBalancerSourceRanges, each with its own LB IPs and target port on
 * web's endpoint: ranges holding the node's pod CIDR, the node's own address, or neither.
 */
const RANGED = [
  {
    name: "ranged-pods",
    ranges: (family: Family) => [PLAN[family].podCIDR],
    clusterIP: { ipv4: "10.96.0.21", ipv6: "fd00:10:96::21" },
    lbIP: { ipv4: "192.0.2.121", ipv6: "2001:db8:2::121" },
    targetPort: 8081,
  },
  {
    name: "ranged-node",
    ranges: (family: Family) => [PLAN[family].nodeRange],
    clusterIP: { ipv4: "10.96.0.22", ipv6: "fd00:10:96::22" },
    lbIP: { ipv4: "192.0.2.122", ipv6: "2001:db8:2::122" },
    targetPort: 8082,
  },
  {
    name: "ranged-other",
    ranges: (family: Family) => [PLAN[family].otherRange],
    clusterIP: { ipv4: "10.96.0.23", ipv6: "fd00:10:96::23" },
    lbIP: { ipv4: "192.0.2.123", ipv6: "2001:db8:2::123" },
    targetPort: 8083,
  },
] as const;

const IP_FAMILY = { ipv4: "IPv4", ipv6: "IPv6" } as const;

/** A dual-stack LoadBalancer Service with `externalTrafficPolicy: Local` and no selector. */
function loadBalancer(
  name: string,
  clusterIPs: readonly string[],
  extra: {
    externalIPs?: readonly string[];
    labels?: Record<string, string>;
    sourceRanges?: readonly string[];
    targetPort?: number;
  } = {},
) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace: "default", name, labels: extra.labels ?? {} },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      ipFamilyPolicy: "RequireDualStack",
      ipFamilies: ["IPv4", "IPv6"],
      clusterIP: clusterIPs[0],
      clusterIPs,
      ...(extra.externalIPs ? { externalIPs: extra.externalIPs } : {}),
      ...(extra.sourceRanges ? { loadBalancerSourceRanges: extra.sourceRanges } : {}),
      ports: [{ port: PORT, protocol: "TCP", targetPort: extra.targetPort ?? TARGET_PORT }],
    },
  };
}

/** An EndpointSlice of `service` with one ready endpoint on another node. */
function endpointSlice(service: string, family: Family, address: string, port = TARGET_PORT) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      namespace: "default",
      name: `${service}-${family}`,
      labels: {
        "kubernetes.io/service-name": service,
        "endpointslice.kubernetes.io/managed-by": "tests.ipvs-node-controller",
      },
    },
    addressType: IP_FAMILY[family],
    endpoints: [{ addresses: [address], conditions: { ready: true }, nodeName: "worker-2" }],
    ports: [{ name: "", port, protocol: "TCP" }],
  };
}

/** What a probe returned, as one comparable word: the reply, or the error. */
type Outcome = string;

/** One connection to make: from which host, to which IP (port 80). */
interface Case {
  readonly label: string;
  readonly from: Host;
  readonly ip: string;
}

describe.skipIf(!enabled)("the controller beside a real kube-proxy", () => {
  let api: TestApiServer;
  let ourKubeconfig: string;
  let kubeProxyKubeconfig: string;

  beforeAll(async () => {
    api = await startTestApiServer();
    const apply = (object: unknown) =>
      api.kubectl(["apply", "-f", "-"], { input: JSON.stringify(object) });
    const patchStatus = (kind: string, name: string, status: unknown) =>
      api.kubectl([
        "patch",
        kind,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        JSON.stringify({ status }),
      ]);

    ourKubeconfig = await controllerKubeconfig(api);
    // kube-proxy with the identity and the built-in role a cluster gives it.
    await api.kubectl(["create", "serviceaccount", "kube-proxy", "--namespace=kube-system"]);
    await api.kubectl([
      "create",
      "clusterrolebinding",
      "kube-proxy",
      "--clusterrole=system:node-proxier",
      "--serviceaccount=kube-system:kube-proxy",
    ]);
    kubeProxyKubeconfig = await api.writeKubeconfig(
      await api.serviceAccountToken("kube-system", "kube-proxy"),
    );

    await apply({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: NODE_NAME },
      spec: {
        podCIDR: PLAN.ipv4.podCIDR,
        podCIDRs: FAMILIES.map((family) => PLAN[family].podCIDR),
      },
    });
    // kube-proxy waits for the node's addresses, which the kubelet would report.
    await patchStatus("node", NODE_NAME, {
      addresses: FAMILIES.map((family) => ({ type: "InternalIP", address: PLAN[family].nodeIP })),
    });

    await apply(
      loadBalancer(
        "web",
        FAMILIES.map((family) => PLAN[family].web.clusterIP),
        { externalIPs: FAMILIES.map((family) => PLAN[family].web.externalIP) },
      ),
    );
    await patchStatus("service", "web", {
      loadBalancer: { ingress: FAMILIES.map((family) => ({ ip: PLAN[family].web.lbIP })) },
    });
    for (const family of FAMILIES) {
      await apply(endpointSlice("web", family, PLAN[family].endpoint));
    }

    for (const ranged of RANGED) {
      await apply(
        loadBalancer(
          ranged.name,
          FAMILIES.map((family) => ranged.clusterIP[family]),
          {
            sourceRanges: FAMILIES.flatMap((family) => ranged.ranges(family)),
            targetPort: ranged.targetPort,
          },
        ),
      );
      await patchStatus("service", ranged.name, {
        loadBalancer: { ingress: FAMILIES.map((family) => ({ ip: ranged.lbIP[family] })) },
      });
      for (const family of FAMILIES) {
        await apply(endpointSlice(ranged.name, family, PLAN[family].endpoint, ranged.targetPort));
      }
    }

    await apply(
      loadBalancer(
        "ipvs-node",
        FAMILIES.map((family) => PLAN[family].ipvsNode.clusterIP),
        // Served by another proxy (here: the emulated IPVS), so kube-proxy ignores it.
        { labels: { "service.kubernetes.io/service-proxy-name": "ipvs-emulation" } },
      ),
    );
    await patchStatus("service", "ipvs-node", {
      loadBalancer: { ingress: FAMILIES.map((family) => ({ ip: PLAN[family].ipvsNode.lbIP })) },
    });
  }, 180_000);

  afterAll(async () => {
    await api?.stop();
  }, 60_000);

  describe.each(KUBE_PROXY_MODES)("kube-proxy in %s mode", (mode: KubeProxyMode) => {
    let topology: Topology;
    let bridge: TcpBridge;
    let kubeProxy: KubeProxy | undefined;
    /** kube-proxy's rules once it has synced, before the controller ever ran. */
    let baseline: string[];

    const node = () => topology.runner("node");

    const probe = async (from: Host, ip: string, port = PORT): Promise<Outcome> => {
      const result = await topology.connect(from, ip, port, "tcp", { timeoutMs: 2_000 });
      return result.ok ? result.reply : result.error;
    };

    /** Connects once per case, all at once; returns each case's outcome under its label. */
    const reach = async (cases: readonly Case[]): Promise<Record<string, Outcome>> => {
      const outcomes = await Promise.all(cases.map(({ from, ip }) => probe(from, ip)));
      return Object.fromEntries(cases.map(({ label }, i) => [label, outcomes[i] as Outcome]));
    };
    /** What {@link reach} returns when every case has `outcome`. */
    const every = (cases: readonly Case[], outcome: Outcome): Record<string, Outcome> =>
      Object.fromEntries(cases.map(({ label }) => [label, outcome]));

    /** Every way to reach web from this node: pod and host, LB IP and externalIP, both families. */
    const webCases: Case[] = FAMILIES.flatMap((family) =>
      (["pod", "node"] as const).flatMap((from) =>
        (["lbIP", "externalIP"] as const).map((kind) => {
          const ip = PLAN[family].web[kind];
          return { label: `${from} -> web ${kind} ${ip}`, from, ip };
        }),
      ),
    );
    /**
     * Every restricted Service's LB IP from a pod (in, or outside, its ranges; IPv4 and IPv6) and
     * from the host (whose node address is in, or outside, them).
     */
    const rangedCases: Case[] = RANGED.flatMap((ranged) =>
      FAMILIES.flatMap((family) =>
        (["pod", "node"] as const).map((from) => ({
          label: `${from} -> ${ranged.name} ${ranged.lbIP[family]}`,
          from,
          ip: ranged.lbIP[family],
        })),
      ),
    );
    /** What kube-proxy alone makes of {@link rangedCases}, measured once it synced. */
    let rangedReference: Record<string, Outcome>;

    /**
     * The emulated IPVS node's LB IPs from a pod, and from the host in iptables mode. In nftables
     * mode kube-proxy drops traffic from the host to cluster IPs it does not serve ("Drop traffic
     * to unallocated ClusterIPs"), which kube-proxy in IPVS mode does not do, so there the host's
     * view of the emulated Service would test the emulation rather than the controller.
     */
    const ipvsNodeCases: Case[] = FAMILIES.flatMap((family) =>
      (mode === "iptables" ? (["pod", "node"] as const) : (["pod"] as const)).map((from) => {
        const ip = PLAN[family].ipvsNode.lbIP;
        return { label: `${from} -> ipvs-node lbIP ${ip}`, from, ip };
      }),
    );

    /**
     * kube-proxy's rules, without the controller's chains and jumps (named IPVSNC-*), the rules
     * of its own KUBE-* chains sorted (see sortChainsNamed: kube-proxy orders independent
     * Services differently from one run to the next).
     */
    const kubeProxyOwnRules = async () =>
      sortChainsNamed(
        (await kubeProxyRules(node(), mode)).filter((line) => !line.includes("IPVSNC")),
        "KUBE-",
      );

    /** The controller's rules of one backend, in the kernel. */
    const controllerRules = async (backend: "nft" | "iptables") =>
      backend === "nft"
        ? nftTableLines(node(), "inet", "ipvs-node-controller")
        : (await iptablesSaveLines(node(), { table: "nat" })).filter((line) =>
            line.includes("IPVSNC"),
          );

    /**
     * Every rule of both programs on the node, in order: kube-proxy's and the controller's nft
     * tables and the whole iptables state (kube-proxy's KUBE-* chains as sets of rules). Equal
     * snapshots mean nothing moved, not even a jump's position in a built-in chain.
     */
    const nodeRules = async () => [
      ...(await nftTableLines(node(), "ip", "kube-proxy")),
      ...(await nftTableLines(node(), "ip6", "kube-proxy")),
      ...(await nftTableLines(node(), "inet", "ipvs-node-controller")),
      ...sortChainsNamed(await iptablesSaveLines(node()), "KUBE-"),
    ];

    /** The last controller started (it may have been stopped since). */
    let controller: ControllerProcess | undefined;

    async function startController(backend: "nft" | "iptables"): Promise<void> {
      controller = startControllerProcess({
        namespace: topology.namespaces.node,
        args: [
          `--backend=${backend}`,
          `--kubeconfig=${ourKubeconfig}`,
          `--node-name=${NODE_NAME}`,
          "--net-stack=ipv4,ipv6",
          // No periodic repair while a test runs: a rule the other program moved or removed must
          // show, not be put back before the comparison.
          "--sync-period=10m",
          "--min-sync-period=100ms",
        ],
      });
      await controller.waitReady();
    }

    const stopController = async () => (await controller?.stop()) ?? null;

    beforeAll(async () => {
      topology = await createTopology({ prefix: `kp${mode.slice(0, 3)}` });
      bridge = await bridgeIntoNamespace(topology.namespaces.node, {
        host: "127.0.0.1",
        port: Number(new URL(api.serverUrl).port),
      });
      // The remote host stands for the rest of the network: web's endpoint (a pod on another
      // node, routed there through the node) and the load balancer that owns the LB IPs and
      // externalIPs. Nothing listens there on port 80, so a connection that leaves the node for
      // an LB IP is refused: only kube-proxy's rules reach the endpoint.
      await topology.addRemoteAddresses(
        FAMILIES.flatMap((family) => [
          PLAN[family].endpoint,
          PLAN[family].web.lbIP,
          PLAN[family].web.externalIP,
          ...RANGED.map((ranged) => ranged.lbIP[family]),
        ]),
      );
      await topology.listen(
        FAMILIES.flatMap((family) => [
          { ip: PLAN[family].endpoint, port: TARGET_PORT, protocol: "tcp" as const, reply: "web" },
          ...RANGED.map((ranged) => ({
            ip: PLAN[family].endpoint,
            port: ranged.targetPort,
            protocol: "tcp" as const,
            reply: ranged.name,
          })),
        ]),
        "remote",
      );
      // The emulated IPVS node: LB IP and cluster IP local, the virtual server on the cluster IP.
      await topology.addNodeAddresses(
        FAMILIES.flatMap((family) => [PLAN[family].ipvsNode.lbIP, PLAN[family].ipvsNode.clusterIP]),
      );
      await topology.listen(
        FAMILIES.map((family) => ({
          ip: PLAN[family].ipvsNode.clusterIP,
          port: PORT,
          protocol: "tcp" as const,
          reply: "ipvs",
        })),
      );
      kubeProxy = await startKubeProxy({
        namespace: topology.namespaces.node,
        mode,
        kubeconfig: kubeProxyKubeconfig,
        nodeName: NODE_NAME,
        clusterCIDRs: FAMILIES.map((family) => PLAN[family].clusterCIDR),
      });
    }, 120_000);

    afterEach((context) => {
      if (context.task.result?.state !== "fail") return;
      const tail = (text: string) => text.trim().split("\n").slice(-30).join("\n");
      console.error(`kube-proxy log (tail):\n${tail(kubeProxy?.log() ?? "(stopped)")}`);
      console.error(`controller log (tail):\n${controller?.tail(30) ?? "(never started)"}`);
    });

    afterAll(async () => {
      await stopController();
      await kubeProxy?.stop();
      await bridge?.stop();
      await topology?.destroy();
    }, 60_000);

    it("kube-proxy alone: pods and the host reach web through its LB IP and externalIP; the IPVS node's LB IP is refused", async () => {
      await kubeProxy?.waitUntilSynced();
      expect(await reach(webCases)).toEqual(every(webCases, "web"));
      expect(await reach(ipvsNodeCases)).toEqual(every(ipvsNodeCases, "refused"));
      baseline = await kubeProxyOwnRules();
    }, 60_000);

    it("kube-proxy alone: loadBalancerSourceRanges admit the pod or the host exactly when its address is inside", async () => {
      rangedReference = await reach(rangedCases);
      const expected: Record<string, Outcome> = {};
      for (const ranged of RANGED) {
        for (const family of FAMILIES) {
          const ip = ranged.lbIP[family];
          // A blocked connection is dropped: it times out.
          expected[`pod -> ${ranged.name} ${ip}`] =
            ranged.name === "ranged-pods" ? ranged.name : "timeout";
          expected[`node -> ${ranged.name} ${ip}`] =
            ranged.name === "ranged-node" ? ranged.name : "timeout";
        }
      }
      expect(rangedReference).toEqual(expected);
      // kube-proxy's rules for web are there, in both families.
      for (const family of FAMILIES) {
        expect(baseline.some((line) => line.includes(PLAN[family].web.lbIP))).toBe(true);
      }
    }, 60_000);

    describe.each(["nft", "iptables"] as const)("with --backend %s", (backend) => {
      let ours: string[];

      afterAll(async () => {
        await stopController();
      });

      it("running beside kube-proxy, translates the IPVS node's LB IPs and leaves web and kube-proxy's rules alone", async () => {
        expect(await controllerRules(backend)).toEqual([]);
        await startController(backend);
        ours = await controllerRules(backend);
        expect(await reach(ipvsNodeCases)).toEqual(every(ipvsNodeCases, "ipvs"));
        expect(await reach(webCases)).toEqual(every(webCases, "web"));
        expect(await reach(rangedCases)).toEqual(rangedReference);
        expect(await kubeProxyOwnRules()).toEqual(baseline);
        // The controller does hold mappings for web: they are inert because its IPs are not
        // addresses of this node, not because they are missing.
        const text = ours.join("\n");
        for (const family of FAMILIES) {
          for (const ip of [
            PLAN[family].web.lbIP,
            PLAN[family].web.externalIP,
            PLAN[family].ipvsNode.lbIP,
          ]) {
            expect(text).toContain(ip);
          }
        }
      }, 60_000);

      it("a kube-proxy restart keeps both rule sets and the traffic", async () => {
        const before = await nodeRules();
        await kubeProxy?.restart();
        expect(await nodeRules()).toEqual(before);
        expect(await kubeProxyOwnRules()).toEqual(baseline);
        expect(await controllerRules(backend)).toEqual(ours);
        expect(await reach(webCases)).toEqual(every(webCases, "web"));
        expect(await reach(ipvsNodeCases)).toEqual(every(ipvsNodeCases, "ipvs"));
      }, 90_000);

      it("a controller restart keeps both rule sets and the traffic", async () => {
        const before = await nodeRules();
        expect(await stopController()).toBe(0);
        await startController(backend);
        expect(await nodeRules()).toEqual(before);
        expect(await controllerRules(backend)).toEqual(ours);
        expect(await kubeProxyOwnRules()).toEqual(baseline);
        expect(await reach(webCases)).toEqual(every(webCases, "web"));
        expect(await reach(ipvsNodeCases)).toEqual(every(ipvsNodeCases, "ipvs"));
      }, 60_000);

      it("cleanup --backend all removes the controller's rules and nothing of kube-proxy's", async () => {
        expect(await stopController()).toBe(0);
        const cleanup = await node()(process.execPath, [CLI, "cleanup", "--backend=all"]);
        expect(cleanup.exitCode, cleanup.stderr).toBe(0);
        expect(await controllerRules(backend)).toEqual([]);
        expect(await kubeProxyOwnRules()).toEqual(baseline);
        expect(await reach(webCases)).toEqual(every(webCases, "web"));
        expect(await reach(ipvsNodeCases)).toEqual(every(ipvsNodeCases, "refused"));
      }, 60_000);
    });

    it("kube-proxy --cleanup removes kube-proxy's rules, after which web is no longer reached", async () => {
      await kubeProxy?.stop();
      kubeProxy = undefined;
      const cleanup = await cleanupKubeProxy(topology.namespaces.node, mode);
      expect(cleanup.exitCode, cleanup.stderr).toBe(0);
      const left = await kubeProxyRules(node(), mode);
      if (mode === "nftables") {
        expect(left).toEqual([]);
      } else {
        // kube-proxy keeps KUBE-FIREWALL (its guard for 127.0.0.0/8), Service rules go.
        expect(left.filter((line) => /KUBE-SERVICES|default\/web/.test(line))).toEqual([]);
      }
      // Without kube-proxy's short-circuit the connection leaves for the load balancer, where
      // nothing listens: so the answers above came through kube-proxy's rules.
      expect(Object.values(await reach(webCases))).not.toContain("web");
    }, 60_000);
  });
});
