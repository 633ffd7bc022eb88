/**
 * The cluster as the controller reads it: a kubeconfig, and the two kinds of object it needs
 * (every Service, and this node's Node object). `run` lists and watches them, `doctor` lists them
 * once, with the same calls and so with the same read-only RBAC (list and watch Services and
 * Nodes).
 */
import {
  type NodeInput,
  type ServiceInput,
  trimNode,
  trimService,
} from "@ipvs-node-controller/core";
import { KubeConfig } from "@kubernetes/client-node";
import { ApiClient, type Query, type WatchClient } from "./api-client.js";
import { type ListCall, type ListPage, listAll } from "./list.js";

/** The kubeconfig at `path`; default: in-cluster config, else `KUBECONFIG` / `~/.kube/config`. */
function loadKubeConfig(path: string | undefined): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (path !== undefined) kubeConfig.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kubeConfig.loadFromCluster();
  else kubeConfig.loadFromDefault();
  return kubeConfig;
}

/** How one kind of object is listed, watched and trimmed. */
export interface Resource<T> {
  /** For logs and metrics, e.g. `services`. */
  readonly name: string;
  readonly list: ListCall;
  /** The watch path, e.g. `/api/v1/services`. */
  readonly watchPath: string;
  /** Extra query parameters of the watch, e.g. a field selector. */
  readonly watchQuery?: Readonly<Record<string, string>>;
  /** Keeps only what the consumer reads; undefined drops the object. */
  readonly trim: (object: unknown) => T | undefined;
}

/** What the controller reads from one cluster, and how. */
export interface Cluster {
  /** The API server's URL. */
  readonly server: string;
  /** The watch client of this cluster. */
  readonly watch: WatchClient;
  /** Every Service, in all namespaces, trimmed to what the core reads. */
  readonly services: Resource<ServiceInput>;
  /** This node's Node object (a list of at most one), trimmed to what the core reads. */
  readonly node: Resource<NodeInput>;
}

/** Options of {@link clusterFromKubeconfig}. */
export interface ClusterOptions {
  /** Path of a kubeconfig; default: in-cluster config, else `KUBECONFIG` / `~/.kube/config`. */
  readonly kubeconfig?: string;
  /** This node's name. */
  readonly nodeName: string;
  /** Page size of the Service list calls. Default 500. */
  readonly pageSize?: number;
}

/** The cluster a kubeconfig names. Nothing is sent before a list or a watch starts. */
export function clusterFromKubeconfig(options: ClusterOptions): Cluster {
  const client = new ApiClient(loadKubeConfig(options.kubeconfig));
  const pageSize = options.pageSize ?? 500;
  const fieldSelector = `metadata.name=${options.nodeName}`;
  return {
    server: client.server,
    watch: client,
    services: {
      name: "services",
      list: listCall(client, "/api/v1/services", { limit: pageSize }),
      watchPath: "/api/v1/services",
      trim: trimService,
    },
    node: {
      name: "node",
      list: listCall(client, "/api/v1/nodes", { fieldSelector }),
      watchPath: "/api/v1/nodes",
      watchQuery: { fieldSelector },
      trim: trimNode,
    },
  };
}

/** The list call of `path`: one GET per page, the continue token of the previous page passed on. */
export function listCall(client: ApiClient, path: string, query: Query): ListCall {
  return async (continueToken) =>
    (await client.get(path, { ...query, continue: continueToken })) as ListPage;
}

/** What one list of a cluster found. */
export interface ClusterObjects {
  readonly services: readonly ServiceInput[];
  /** Undefined when this node has no Node object. */
  readonly node: NodeInput | undefined;
}

/** Lists every Service and this node's Node object once, page by page; no watch. */
export async function listCluster(cluster: Cluster): Promise<ClusterObjects> {
  const services = await listAll(cluster.services.list, cluster.services.trim);
  const [node] = await listAll(cluster.node.list, cluster.node.trim);
  return { services, node };
}
