/**
 * Checks of the install manifests shared by the kustomize tests (deploy.test.ts) and the Helm
 * chart's tests (helm.test.ts): the same least-privilege and securityContext rules hold
 * whichever way the objects were rendered.
 */
import type {
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1Container,
  V1DaemonSet,
} from "@kubernetes/client-node";
import { expect } from "vitest";
import { parseAllDocuments } from "yaml";

export const NAME = "ipvs-node-controller";
export const NAMESPACE = "kube-system";
export const HEALTH_PORT = 10267;
export const METRICS_ADDRESS = "127.0.0.1:10266";
export const XTABLES_LOCK = "/run/xtables.lock";

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
}

/** The objects of a multi-document YAML stream; empty documents (a lone `---`) are dropped. */
export function parseManifest(text: string): KubeObject[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors[0]?.message}`);
      return doc.toJS() as KubeObject | null;
    })
    .filter((object): object is KubeObject => object !== null);
}

export function findObject<T>(objects: readonly KubeObject[], kind: string, name = NAME): T {
  const matches = objects.filter((o) => o.kind === kind && o.metadata?.name === name);
  expect(matches, `exactly one ${kind}/${name}`).toHaveLength(1);
  return matches[0] as T;
}

export function controllerContainer(daemonSet: V1DaemonSet): V1Container {
  const containers = daemonSet.spec?.template.spec?.containers ?? [];
  expect(containers).toHaveLength(1);
  return containers[0] as V1Container;
}

/**
 * What no overlay and no chart value may change: a host-network pod running the controller as
 * root without privileges beyond NET_ADMIN (and NET_RAW for iptables), with a read-only root
 * filesystem, the runtime's seccomp profile and no host directory but the xtables lock.
 */
export function expectLeastPrivilegeDaemonSet(daemonSet: V1DaemonSet, name = NAME): void {
  const pod = daemonSet.spec?.template.spec;
  expect(pod?.hostNetwork).toBe(true);
  expect(pod?.dnsPolicy).toBe("ClusterFirstWithHostNet");
  expect(pod?.hostPID).toBeUndefined();
  expect(pod?.hostIPC).toBeUndefined();
  expect(pod?.serviceAccountName).toBe(name);
  expect(pod?.securityContext?.runAsNonRoot).not.toBe(true);

  const container = controllerContainer(daemonSet);
  expect(container.command).toEqual(["ipvs-node-controller"]);
  expect(container.args?.[0]).toBe("run");
  expect(container.args?.filter((arg) => arg.startsWith("--backend="))).toHaveLength(1);

  const security = container.securityContext;
  expect(security?.privileged).toBe(false);
  expect(security?.allowPrivilegeEscalation).toBe(false);
  expect(security?.readOnlyRootFilesystem).toBe(true);
  expect(security?.runAsUser).toBe(0);
  expect(security?.capabilities?.drop).toEqual(["ALL"]);
  expect(security?.capabilities?.add).toContain("NET_ADMIN");
  expect(security?.seccompProfile).toEqual({ type: "RuntimeDefault" });
  // Nothing close to privileged may sneak in through an overlay or a value.
  for (const capability of security?.capabilities?.add ?? []) {
    expect(["NET_ADMIN", "NET_RAW"]).toContain(capability);
  }

  expect(container.env).toContainEqual({
    name: "NODE_NAME",
    valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } },
  });

  // Probes go to the health server, on the port it binds. Metrics are a port only where they
  // listen beyond the node's loopback (for a ServiceMonitor), and then on the port they bind.
  const [healthPort, ...otherPorts] = container.ports ?? [];
  expect(healthPort?.name).toBe("health");
  expect(otherPorts.length).toBeLessThanOrEqual(1);
  for (const port of otherPorts) {
    expect(port.name).toBe("metrics");
    const metrics = container.args?.find((arg) => arg.startsWith("--metrics-bind-address="));
    expect(metrics).toMatch(new RegExp(`:${port.containerPort}$`));
    expect(metrics).not.toMatch(/=(127\.|localhost:|\[::1\]:)/);
  }
  expect(container.args, "the health server listens on the port the probes use").toContainEqual(
    expect.stringMatching(
      new RegExp(`^--health-probe-bind-address=.*:${healthPort?.containerPort}$`),
    ),
  );
  expect(container.livenessProbe?.httpGet).toMatchObject({ path: "/healthz", port: "health" });
  expect(container.readinessProbe?.httpGet).toMatchObject({ path: "/readyz", port: "health" });

  // No host directory other than the xtables lock is ever mounted.
  for (const volume of pod?.volumes ?? []) {
    if (volume.hostPath) {
      expect(volume.hostPath).toEqual({ path: XTABLES_LOCK, type: "FileOrCreate" });
    }
  }
}

/** What the base sets and an installation may tune (the chart's default values). */
export function expectDefaultDaemonSet(daemonSet: V1DaemonSet): void {
  expect(daemonSet.metadata?.namespace).toBe(NAMESPACE);
  const spec = daemonSet.spec;
  const pod = spec?.template.spec;
  expect(pod?.priorityClassName).toBe("system-node-critical");
  expect(pod?.tolerations).toEqual([{ operator: "Exists" }]);
  expect(spec?.updateStrategy).toEqual({
    type: "RollingUpdate",
    rollingUpdate: { maxUnavailable: "10%" },
  });

  const container = controllerContainer(daemonSet);
  expect(container.image).toBe("ipvs-node-controller:0.1.0");
  expect(container.args).toContain(`--health-probe-bind-address=0.0.0.0:${HEALTH_PORT}`);
  expect(container.args).toContain(`--metrics-bind-address=${METRICS_ADDRESS}`);
  expect(container.args).toContain("--log-level=info");
  // The measured memory figures behind the limits assume the small young generation.
  expect(container.env).toContainEqual({ name: "NODE_OPTIONS", value: "--max-semi-space-size=2" });
  expect(container.ports?.find((port) => port.name === "health")?.containerPort).toBe(HEALTH_PORT);
  expect(container.resources).toEqual({
    requests: { cpu: "10m", memory: "64Mi" },
    limits: { memory: "192Mi" },
  });
}

/** Asserts what every overlay must keep from the base. */
export function expectHardenedDaemonSet(daemonSet: V1DaemonSet): void {
  expectDefaultDaemonSet(daemonSet);
  expectLeastPrivilegeDaemonSet(daemonSet);
}

export function backendOf(daemonSet: V1DaemonSet): string | undefined {
  const flag = controllerContainer(daemonSet).args?.find((arg) => arg.startsWith("--backend="));
  return flag?.slice("--backend=".length);
}

export function mountsXtablesLock(daemonSet: V1DaemonSet): boolean {
  const mounted = controllerContainer(daemonSet).volumeMounts?.some(
    (mount) => mount.mountPath === XTABLES_LOCK,
  );
  const declared = daemonSet.spec?.template.spec?.volumes?.some(
    (volume) => volume.hostPath?.path === XTABLES_LOCK,
  );
  expect(mounted, "volume and mount come together").toBe(declared);
  return mounted === true;
}

/** The deployment choices of the overlays (nft, iptables, dual-stack) and of the chart. */
export interface Variant {
  backend: "nft" | "iptables";
  /** NET_STACK, or undefined when the variable must be absent. */
  netStack?: string;
}

/**
 * Asserts the backend and what it needs: iptables carries the xtables lock and NET_RAW, nft
 * neither; and NET_STACK exactly as asked.
 */
export function expectVariant(daemonSet: V1DaemonSet, variant: Variant): void {
  const iptables = variant.backend === "iptables";
  expect(backendOf(daemonSet)).toBe(variant.backend);
  expect(mountsXtablesLock(daemonSet)).toBe(iptables);
  const container = controllerContainer(daemonSet);
  expect(container.securityContext?.capabilities?.add).toEqual(
    iptables ? ["NET_ADMIN", "NET_RAW"] : ["NET_ADMIN"],
  );
  const netStack = container.env?.filter((variable) => variable.name === "NET_STACK") ?? [];
  if (variant.netStack === undefined) expect(netStack).toEqual([]);
  else expect(netStack).toEqual([{ name: "NET_STACK", value: variant.netStack }]);
}

/** The RBAC: get/list/watch on Services and Nodes, bound to the controller's ServiceAccount. */
export function expectReadOnlyRbac(
  objects: readonly KubeObject[],
  name = NAME,
  namespace = NAMESPACE,
): void {
  const role = findObject<V1ClusterRole>(objects, "ClusterRole", name);
  expect(role.rules).toEqual([
    { apiGroups: [""], resources: ["services"], verbs: ["get", "list", "watch"] },
    { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"] },
  ]);
  const binding = findObject<V1ClusterRoleBinding>(objects, "ClusterRoleBinding", name);
  expect(binding.roleRef).toEqual({
    apiGroup: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    name,
  });
  expect(binding.subjects).toEqual([{ kind: "ServiceAccount", name, namespace }]);
  // Nothing else grants permissions.
  const grants = objects.filter((o) => /^(Cluster)?Role(Binding)?$/.test(o.kind ?? ""));
  expect(grants.map((o) => `${o.kind}/${o.metadata?.name}`).sort()).toEqual([
    `ClusterRole/${name}`,
    `ClusterRoleBinding/${name}`,
  ]);
}
