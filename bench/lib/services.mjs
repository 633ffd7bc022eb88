// Services as the API server hands them over, and the address plans of the benchmarks.

/** Service `i`'s LoadBalancer IP: 172.16.0.0/12, in the order of the Services. */
export const lbIP = (i) => `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

/** Service `i`'s cluster IP, for the benchmarks that need no API server: 10.96.0.0/12. */
export const clusterIP = (i) => `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

/** The `k`-th new LB IP a change moves a Service to (k ≥ 1): 198.18.0.0/15, never reused. */
export const changedIP = (k) => `198.${18 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;

/** Finds the changed IPs (see {@link changedIP}) in a line of `nft monitor` output. */
export const CHANGED_IPS = /198\.1[89]\.\d{1,3}\.\d{1,3}(?!\d)/g;

export const NAMESPACE = "default";
export const serviceName = (i) => `svc-${i}`;

/** The 3 ports of every benchmark Service. */
export const PORTS = [
  { name: "http", port: 80, protocol: "TCP", targetPort: 8080 },
  { name: "https", port: 443, protocol: "TCP", targetPort: 8443 },
  { name: "quic", port: 443, protocol: "UDP", targetPort: 8443 },
];

/** The Node the controller runs as: NodeCIDR detection reads its pod CIDRs. */
export const nodeObject = (podCIDR) => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name: "bench", labels: { "kubernetes.io/hostname": "bench" } },
  spec: { podCIDR, podCIDRs: [podCIDR] },
});

/** What a client creates: a LoadBalancer Service with `externalTrafficPolicy: Local`. */
export function serviceSpec(i, ports = PORTS) {
  const name = serviceName(i);
  return {
    metadata: { name, labels: { app: name, tier: "bench" } },
    spec: {
      type: "LoadBalancer",
      allocateLoadBalancerNodePorts: false,
      externalTrafficPolicy: "Local",
      selector: { app: name },
      ports,
    },
  };
}

/**
 * Service `i` exactly as a watch event delivers it, decoded: server-set metadata, managed fields
 * of the client and of the load-balancer controller, defaulted spec fields, status with `ip`.
 * The controller trims this down; its size is what the trimming costs.
 */
export function apiService(i, { ip = lbIP(i), resourceVersion = 1000 + i, ports = PORTS } = {}) {
  const name = serviceName(i);
  const cluster = clusterIP(i);
  const uid = `4c1c7e0e-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
  return {
    kind: "Service",
    apiVersion: "v1",
    metadata: {
      name,
      namespace: NAMESPACE,
      uid,
      resourceVersion: String(resourceVersion),
      creationTimestamp: "2025-01-01T00:00:00Z",
      labels: { app: name, tier: "bench" },
      annotations: { "metallb.io/ip-allocated-from-pool": "bench" },
      managedFields: [
        {
          manager: "kubectl-create",
          operation: "Update",
          apiVersion: "v1",
          time: "2025-01-01T00:00:00Z",
          fieldsType: "FieldsV1",
          fieldsV1: {
            "f:metadata": { "f:labels": { ".": {}, "f:app": {}, "f:tier": {} } },
            "f:spec": {
              "f:allocateLoadBalancerNodePorts": {},
              "f:externalTrafficPolicy": {},
              "f:internalTrafficPolicy": {},
              "f:ports": Object.fromEntries(
                ports.map((p) => [
                  `k:{"port":${p.port},"protocol":"${p.protocol}"}`,
                  { ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {} },
                ]),
              ),
              "f:selector": {},
              "f:sessionAffinity": {},
              "f:type": {},
            },
          },
        },
        {
          manager: "metallb-controller",
          operation: "Update",
          apiVersion: "v1",
          time: "2025-01-01T00:00:01Z",
          fieldsType: "FieldsV1",
          fieldsV1: { "f:status": { "f:loadBalancer": { "f:ingress": {} } } },
          subresource: "status",
        },
      ],
    },
    spec: {
      ports: ports.map((p) => ({ ...p })),
      selector: { app: name },
      clusterIP: cluster,
      clusterIPs: [cluster],
      type: "LoadBalancer",
      sessionAffinity: "None",
      externalTrafficPolicy: "Local",
      healthCheckNodePort: 20000 + (i % 40000),
      ipFamilies: ["IPv4"],
      ipFamilyPolicy: "SingleStack",
      allocateLoadBalancerNodePorts: false,
      internalTrafficPolicy: "Cluster",
    },
    status: { loadBalancer: { ingress: [{ ip, ipMode: "VIP" }] } },
  };
}

/** Runs `work(0..total-1)` with `concurrency` at a time. */
export async function inBatches(total, concurrency, work, from = 0) {
  let next = from;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await work(next++);
    }),
  );
}

/** A JSON patch (RFC 6902), as load-balancer controllers send status updates. */
const JSON_PATCH = "application/json-patch+json";

const SERVICES = `/api/v1/namespaces/${NAMESPACE}/services`;

/**
 * Creates Services `from..to-1` (`ports` each) on the API server and sets their status as a
 * load-balancer controller would (`lbIP(i)`); `clusterIPs[i]` gets each one's cluster IP.
 */
export async function createServices(kube, from, to, clusterIPs, ports = PORTS) {
  await inBatches(
    to,
    16,
    async (i) => {
      const service = await kube.request("POST", SERVICES, serviceSpec(i, ports));
      clusterIPs[i] = service.spec.clusterIP;
      await kube.request(
        "PATCH",
        `${SERVICES}/${serviceName(i)}/status`,
        [
          {
            op: "add",
            path: "/status/loadBalancer",
            value: { ingress: [{ ip: lbIP(i), ipMode: "VIP" }] },
          },
        ],
        JSON_PATCH,
      );
    },
    from,
  );
}

/** Moves Service `i` to the LB IP `ip`: resolves when the API server accepted the patch. */
export function patchIngressIP(kube, i, ip) {
  return kube.request(
    "PATCH",
    `${SERVICES}/${serviceName(i)}/status`,
    [{ op: "replace", path: "/status/loadBalancer/ingress/0/ip", value: ip }],
    JSON_PATCH,
  );
}
