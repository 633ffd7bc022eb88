// The cluster of the benchmarks that run the controller against an API server: a test topology,
// the API server and the measuring process in its `remote` namespace, the controller in `node`,
// which reaches the API server over a veth as a node reaches its control plane.

import {
  ADDRESS_PLAN,
  createTopology,
  kubeClient,
  startTestApiServer,
} from "@ipvs-node-controller/test-support";
import { defer } from "./cleanup.mjs";
import { runInNamespace, tempDir } from "./namespace.mjs";
import { nodeObject } from "./services.mjs";

/**
 * Creates a topology and runs the measuring half of `moduleUrl` in its `remote` namespace with
 * `context` and the topology's `namespaces`; returns what it returned.
 */
export async function measureInRemote(prefix, moduleUrl, context) {
  const topology = await createTopology({ prefix });
  defer(() => topology.destroy());
  return runInNamespace(
    topology.namespaces.remote,
    moduleUrl,
    { ...context, namespaces: topology.namespaces },
    // A private lock for iptables-legacy: other users of the machine's lock stay out of the figures.
    { XTABLES_LOCKFILE: `${tempDir("xtables")}/xtables.lock` },
  );
}

/**
 * Starts the API server (inside `remote`, on its veth address) with the benchmark's Node; returns
 * it, a client, and its version.
 */
export async function startApiServer() {
  const api = await startTestApiServer({
    listenAddress: ADDRESS_PLAN.remote.ipv4,
    // Local policy allocates a health-check node port per Service: room for 10,000 of them.
    extraApiServerArgs: ["--service-node-port-range=20000-65000"],
  });
  defer(() => api.stop());
  const version = JSON.parse((await api.kubectl(["version", "-o", "json"])).stdout).serverVersion
    .gitVersion;
  const kube = kubeClient(api);
  defer(() => kube.close());
  await kube.request("POST", "/api/v1/nodes", nodeObject(ADDRESS_PLAN.podCIDR.ipv4));
  return { api, kube, version };
}
