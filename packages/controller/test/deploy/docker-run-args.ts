/**
 * The kubelet's part, for tests that run the image: turns the controller's container of a
 * DaemonSet into `docker run` arguments. Every setting of the manifest either has a translation
 * here or makes {@link dockerRunArgs} throw, so that a manifest change can never be silently left
 * out of what the image tests run.
 */
import type { V1Container, V1DaemonSet, V1PodSpec } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";

/** Where the kubelet puts a pod's ServiceAccount token, CA certificate and namespace. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** Kubernetes' default `terminationGracePeriodSeconds`. */
const DEFAULT_GRACE_SECONDS = 30;

/** The one DaemonSet in a multi-document manifest. */
export function daemonSetOf(manifest: string): V1DaemonSet {
  const daemonSets = parseAllDocuments(manifest)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors[0]?.message}`);
      return doc.toJS() as { kind?: string };
    })
    .filter((object) => object.kind === "DaemonSet");
  if (daemonSets.length !== 1) throw new Error(`expected one DaemonSet, got ${daemonSets.length}`);
  return daemonSets[0] as V1DaemonSet;
}

/** The pod spec and its only container. */
export function podOf(daemonSet: V1DaemonSet): { pod: V1PodSpec; container: V1Container } {
  const pod = daemonSet.spec?.template.spec;
  const containers = pod?.containers ?? [];
  if (!pod || containers.length !== 1) {
    throw new Error(`expected a pod with one container, got ${containers.length}`);
  }
  return { pod, container: containers[0] as V1Container };
}

/** Bytes of a Kubernetes quantity such as `16Mi`, `256Mi`, `1G` or `1048576`. */
export function quantityBytes(quantity: string): number {
  const match = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity);
  if (!match) throw new Error(`unsupported quantity: ${quantity}`);
  const factors: Record<string, number> = {
    "": 1,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  };
  return Number(match[1]) * (factors[match[2] ?? ""] as number);
}

/** What the kubelet would take from the node and the API server. */
export interface PodContext {
  /** `spec.nodeName`, for the downward API. */
  readonly nodeName: string;
  /** The container whose network namespace is the node's (`hostNetwork: true`). */
  readonly nodeContainer: string;
  /** Directory standing for the node's root file system, for hostPath volumes. */
  readonly nodeRoot: string;
  /** Directory with `token`, `ca.crt` and `namespace`, mounted where the kubelet mounts them. */
  readonly serviceAccountDir: string;
  /** How the API server is reached from the node, as the kubelet tells every container. */
  readonly apiServer: { readonly host: string; readonly port: number };
}

/** A `docker run` command line (without `docker run` itself) and what else it implies. */
export interface DockerRun {
  /** Options, the image, then the command's arguments. */
  readonly args: string[];
  /** Files of `nodeRoot` that hostPath volumes of type `FileOrCreate` need to exist. */
  readonly hostFiles: string[];
  /** `docker stop --time`: the pod's termination grace period. */
  readonly graceSeconds: number;
}

/**
 * `docker run` arguments for the pod's container, with `overrides` applied to its security
 * context (e.g. a writable root file system, to see what would be written).
 *
 * @throws Error on a setting without a translation here.
 */
export function dockerRunArgs(
  pod: V1PodSpec,
  container: V1Container,
  image: string,
  context: PodContext,
  overrides: { readonly readOnlyRootFilesystem?: boolean } = {},
): DockerRun {
  const args: string[] = [];
  const hostFiles: string[] = [];

  if (pod.hostNetwork !== true) throw new Error("only hostNetwork pods are supported");
  args.push(`--network=container:${context.nodeContainer}`);
  for (const unsupported of ["hostPID", "hostIPC", "initContainers", "shareProcessNamespace"]) {
    if (pod[unsupported as keyof V1PodSpec] !== undefined) {
      throw new Error(`pod.${unsupported} is not supported`);
    }
  }
  const podSecurity = Object.keys(pod.securityContext ?? {}).filter(
    (key) => key !== "seccompProfile",
  );
  if (podSecurity.length > 0)
    throw new Error(`pod.securityContext.${podSecurity[0]} is not supported`);
  if (container.lifecycle !== undefined) throw new Error("lifecycle hooks are not supported");

  const security = container.securityContext ?? {};
  if (security.privileged) args.push("--privileged");
  if (security.runAsUser !== undefined) args.push(`--user=${security.runAsUser}`);
  if (security.runAsGroup !== undefined) throw new Error("runAsGroup is not supported");
  if (overrides.readOnlyRootFilesystem ?? security.readOnlyRootFilesystem) args.push("--read-only");
  if (security.allowPrivilegeEscalation === false) {
    args.push("--security-opt=no-new-privileges");
  }
  // Docker's default seccomp profile is what RuntimeDefault means for a Docker runtime.
  const seccomp = security.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type;
  if (seccomp !== undefined && seccomp !== "RuntimeDefault") {
    throw new Error(`seccomp profile ${seccomp} is not supported`);
  }
  for (const capability of security.capabilities?.drop ?? []) args.push(`--cap-drop=${capability}`);
  for (const capability of security.capabilities?.add ?? []) args.push(`--cap-add=${capability}`);

  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.volumes?.find((candidate) => candidate.name === mount.name);
    if (!volume) throw new Error(`volumeMount ${mount.name} has no volume`);
    if (mount.subPath !== undefined) throw new Error("subPath is not supported");
    const readOnly = mount.readOnly === true ? ",readonly" : "";
    if (volume.emptyDir) {
      // A memory-backed emptyDir is a tmpfs; so is a disk-backed one here (nothing outlives it).
      const size = volume.emptyDir.sizeLimit
        ? `,tmpfs-size=${quantityBytes(String(volume.emptyDir.sizeLimit))}`
        : "";
      args.push(`--mount=type=tmpfs,destination=${mount.mountPath}${size}`);
    } else if (volume.hostPath) {
      const type = volume.hostPath.type ?? "";
      if (type === "FileOrCreate") hostFiles.push(volume.hostPath.path);
      else if (type !== "File" && type !== "Directory") {
        throw new Error(`hostPath type ${type || "(none)"} is not supported`);
      }
      args.push(
        `--mount=type=bind,source=${context.nodeRoot}${volume.hostPath.path},destination=${mount.mountPath}${readOnly}`,
      );
    } else {
      throw new Error(`volume ${volume.name}: only emptyDir and hostPath are supported`);
    }
  }
  if (pod.automountServiceAccountToken !== false) {
    args.push(
      `--mount=type=bind,source=${context.serviceAccountDir},destination=${SERVICE_ACCOUNT_DIR},readonly`,
    );
  }

  // What the kubelet adds to every container's environment, then the container's own.
  args.push(`--env=KUBERNETES_SERVICE_HOST=${context.apiServer.host}`);
  args.push(`--env=KUBERNETES_SERVICE_PORT=${context.apiServer.port}`);
  for (const variable of container.env ?? []) {
    let value: string;
    if (variable.value !== undefined) value = variable.value;
    else if (variable.valueFrom?.fieldRef?.fieldPath === "spec.nodeName") value = context.nodeName;
    else throw new Error(`env ${variable.name}: only values and spec.nodeName are supported`);
    args.push(`--env=${variable.name}=${value}`);
  }
  if (container.envFrom !== undefined) throw new Error("envFrom is not supported");

  const limits = container.resources?.limits ?? {};
  for (const [resource, quantity] of Object.entries(limits)) {
    if (resource === "memory") args.push(`--memory=${quantityBytes(String(quantity))}`);
    else throw new Error(`limit on ${resource} is not supported`);
  }

  if (container.workingDir !== undefined) args.push(`--workdir=${container.workingDir}`);
  const [entrypoint, ...commandArgs] = container.command ?? [];
  if (entrypoint !== undefined) args.push(`--entrypoint=${entrypoint}`);
  args.push(image, ...commandArgs, ...(container.args ?? []));

  return {
    args,
    hostFiles,
    graceSeconds: pod.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS,
  };
}
