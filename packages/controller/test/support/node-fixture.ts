/**
 * A node for the fault tests: a network-namespace topology whose node reaches a real API server,
 * the Node object, LB and cluster IPs bound like kube-ipvs0 binds them, listeners standing in for
 * IPVS, and functions that write Services through the API server the way MetalLB and users do.
 */
import { fileURLToPath } from "node:url";
import {
  bridgeIntoNamespace,
  createTopology,
  type TcpBridge,
  type TestApiServer,
  type Topology,
} from "@ipvs-node-controller/test-support";

const DEPLOY_BASE = fileURLToPath(new URL("../../../../deploy/base", import.meta.url));

/**
 * Applies deploy/base (ServiceAccount, ClusterRole, binding) and writes a kubeconfig holding the
 * controller's ServiceAccount token: what the DaemonSet may do, and no more.
 */
export async function controllerKubeconfig(api: TestApiServer): Promise<string> {
  await api.kubectl(["apply", "-k", DEPLOY_BASE]);
  return api.writeKubeconfig(await api.serviceAccountToken("kube-system", "ipvs-node-controller"));
}

/** A LoadBalancer Service with `externalTrafficPolicy: Local` and one TCP port, without status. */
export function loadBalancerService(name: string, clusterIP: string, port = 80) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace: "default", name },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      allocateLoadBalancerNodePorts: false,
      clusterIP,
      ports: [{ port, protocol: "TCP", targetPort: 8080 }],
      selector: { app: name },
    },
  };
}

/** Sets status.loadBalancer.ingress of a Service in `default` the way MetalLB does: one write. */
export async function setIngress(
  api: TestApiServer,
  name: string,
  ...ips: string[]
): Promise<void> {
  await api.kubectl([
    "patch",
    "service",
    name,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify({ status: { loadBalancer: { ingress: ips.map((ip) => ({ ip })) } } }),
  ]);
}

/** One LoadBalancer Service of the fixture and the reply its cluster IP's listener gives. */
export interface FixtureService {
  readonly name: string;
  readonly clusterIP: string;
  /** The LB IP it gets (set with {@link NodeFixture.setIngress}); bound on the node. */
  readonly lbIP: string;
  readonly port?: number;
}

/** What a fault test needs around one controller. */
export interface NodeFixture {
  readonly topology: Topology;
  readonly nodeName: string;
  /** The node namespace's name: where the controller runs. */
  readonly namespace: string;
  /** Makes the API server reachable from the node (done at once unless `deferApiBridge`). */
  connectApiServer(): Promise<void>;
  /** Creates the Service (without LB status). */
  createService(service: FixtureService): Promise<void>;
  /** Sets status.loadBalancer.ingress the way MetalLB does: one write. */
  setIngress(name: string, ...ips: string[]): Promise<void>;
  /** Whether a pod connecting to ip:port gets `reply` back. */
  answers(ip: string, port: number, reply: string): Promise<boolean>;
  /** Whether a pod connecting to ip:port is refused (the unfixed bug, or no rule yet). */
  refused(ip: string, port: number): Promise<boolean>;
  destroy(): Promise<void>;
}

/**
 * Builds the node: topology, bridge to the API server, the Node object named `nodeName` with the
 * topology's pod CIDR, and for every Service its LB and cluster IP bound on the node and a
 * listener on cluster IP:port replying the Service's name.
 */
export async function createNodeFixture(
  api: TestApiServer,
  options: {
    readonly prefix: string;
    readonly nodeName: string;
    readonly services: readonly FixtureService[];
    /** Leave the API server unreachable from the node until {@link NodeFixture.connectApiServer}. */
    readonly deferApiBridge?: boolean;
  },
): Promise<NodeFixture> {
  const topology = await createTopology({ prefix: options.prefix });
  let bridge: TcpBridge | undefined;
  const connectApiServer = async () => {
    bridge ??= await bridgeIntoNamespace(topology.namespaces.node, {
      host: "127.0.0.1",
      port: Number(new URL(api.serverUrl).port),
    });
  };
  try {
    if (!options.deferApiBridge) await connectApiServer();
    await api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: options.nodeName },
        spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] },
      }),
    });
    if (options.services.length > 0) {
      await topology.addNodeAddresses(options.services.flatMap((s) => [s.lbIP, s.clusterIP]));
      await topology.listen(
        options.services.map((s) => ({
          ip: s.clusterIP,
          port: s.port ?? 80,
          protocol: "tcp" as const,
          reply: s.name,
        })),
      );
    }
  } catch (error) {
    await bridge?.stop();
    await topology.destroy();
    throw error;
  }
  const connect = (ip: string, port: number) =>
    topology.connect("pod", ip, port, "tcp", { timeoutMs: 1000 });
  return {
    topology,
    nodeName: options.nodeName,
    namespace: topology.namespaces.node,
    connectApiServer,
    async createService(service) {
      await api.kubectl(["apply", "-f", "-"], {
        input: JSON.stringify(loadBalancerService(service.name, service.clusterIP, service.port)),
      });
    },
    setIngress: (name, ...ips) => setIngress(api, name, ...ips),
    async answers(ip, port, reply) {
      const result = await connect(ip, port);
      return result.ok && result.reply === reply;
    },
    async refused(ip, port) {
      const result = await connect(ip, port);
      return !result.ok && result.error === "refused";
    },
    async destroy() {
      await bridge?.stop();
      await topology.destroy();
    },
  };
}
