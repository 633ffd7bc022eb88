/**
 * What the core reads from Kubernetes objects, and nothing more.
 *
 * {@link ServiceInput} and {@link NodeInput} are structural subsets of the API's `V1Service` and
 * `V1Node`, so library users pass API objects as they are, and the controller keeps only these
 * fields in its cache ({@link trimService}, {@link trimNode}). The core never trusts the declared
 * types: objects come from other people, and every field may hold anything.
 */
import equal from "fast-deep-equal";

/** The opt-out: a Service annotated `ipvs-node-controller.io/skip: "true"` gets no rules. */
export const SKIP_ANNOTATION = "ipvs-node-controller.io/skip";

/** One Service port: the Service port number and its protocol (`TCP` when absent). */
export interface ServicePortInput {
  readonly port?: number;
  readonly protocol?: string;
}

/** One `status.loadBalancer.ingress` entry. */
export interface IngressInput {
  readonly ip?: string;
  readonly hostname?: string;
  /** `VIP` (default) or `Proxy` (Kubernetes ≥ 1.30). */
  readonly ipMode?: string;
}

/** The fields of a Service that decide its mappings. `V1Service` satisfies it. */
export interface ServiceInput {
  readonly metadata?: {
    readonly namespace?: string;
    readonly name?: string;
    /** Decides conflicts: the oldest Service wins. */
    readonly creationTimestamp?: Date | string;
    /** Only {@link SKIP_ANNOTATION} is read. */
    readonly annotations?: Readonly<Record<string, string>>;
  };
  readonly spec?: {
    readonly type?: string;
    readonly clusterIP?: string;
    readonly clusterIPs?: readonly string[];
    readonly externalIPs?: readonly string[];
    readonly externalTrafficPolicy?: string;
    readonly ports?: readonly ServicePortInput[];
    /** Who may reach the LoadBalancer ingress IPs; kube-proxy ignores the older annotation. */
    readonly loadBalancerSourceRanges?: readonly string[];
  };
  readonly status?: {
    readonly loadBalancer?: { readonly ingress?: readonly IngressInput[] };
  };
}

/** One `status.addresses` entry of a Node. */
export interface NodeAddressInput {
  /** `InternalIP`, `ExternalIP`, `Hostname`, ... */
  readonly type?: string;
  readonly address?: string;
}

/**
 * The fields of a Node the core reads: its pod CIDRs (NodeCIDR detection) and its addresses
 * (whether `loadBalancerSourceRanges` admit the node). `V1Node` satisfies it.
 */
export interface NodeInput {
  readonly spec?: {
    readonly podCIDR?: string;
    readonly podCIDRs?: readonly string[];
  };
  readonly status?: {
    readonly addresses?: readonly NodeAddressInput[];
  };
}

type Loose = Record<string, unknown> | null | undefined;

/** Whether `value` is an object (of any kind but null): the one test before reading fields of data from outside. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/** Copies `keys` of `source` that are present (undefined values are left out, null is kept). */
function pick(source: Loose, keys: readonly string[]): Record<string, unknown> {
  const picked: Record<string, unknown> = {};
  if (!isObject(source)) return picked;
  for (const key of keys) {
    const value = source[key];
    if (value !== undefined) picked[key] = value;
  }
  return picked;
}

/** An array of objects, each reduced to `keys`; anything that is not an array is kept as it is. */
function pickEach(value: unknown, keys: readonly string[]): unknown {
  return Array.isArray(value) ? value.map((entry) => pick(entry as Loose, keys)) : value;
}

/** Sets `key` when `value` is not undefined: an absent field stays absent. */
function put(target: Record<string, unknown>, key: string, value: unknown): void {
  if (value !== undefined) target[key] = value;
}

/**
 * Keeps exactly the fields of a Service that the core reads, values untouched (wrong types
 * included, so that a malformed Service is reported the same way), so that a cache of 10,000
 * Services stays small: no managedFields, labels, selectors or unrelated annotations.
 * `computeRuleset` gives the same result for a Service and its trimmed form.
 * Returns undefined for anything that is not an object.
 */
export function trimService(object: unknown): ServiceInput | undefined {
  if (!isObject(object)) return undefined;
  const service = object as Record<string, Loose>;
  const trimmed: Record<string, unknown> = {};
  if (service.metadata !== undefined) {
    const metadata = pick(service.metadata, ["namespace", "name", "creationTimestamp"]);
    const annotations = service.metadata?.annotations;
    const optOut = isObject(annotations) ? annotations[SKIP_ANNOTATION] : undefined;
    if (optOut !== undefined) metadata.annotations = { [SKIP_ANNOTATION]: optOut };
    trimmed.metadata = isObject(service.metadata) ? metadata : service.metadata;
  }
  if (service.spec !== undefined) {
    const spec = pick(service.spec, [
      "type",
      "clusterIP",
      "clusterIPs",
      "externalIPs",
      "externalTrafficPolicy",
      "loadBalancerSourceRanges",
    ]);
    put(spec, "ports", pickEach(service.spec?.ports, ["port", "protocol"]));
    trimmed.spec = isObject(service.spec) ? spec : service.spec;
  }
  const status = service.status;
  if (!isObject(status)) {
    put(trimmed, "status", status);
  } else if (status.loadBalancer !== undefined) {
    const loadBalancer = status.loadBalancer as Loose;
    const ingress = isObject(loadBalancer) ? loadBalancer.ingress : undefined;
    const trimmedBalancer: Record<string, unknown> = {};
    put(trimmedBalancer, "ingress", pickEach(ingress, ["ip", "hostname", "ipMode"]));
    trimmed.status = { loadBalancer: isObject(loadBalancer) ? trimmedBalancer : loadBalancer };
  }
  return trimmed as ServiceInput;
}

/**
 * Keeps a Node's pod CIDRs and its InternalIP and ExternalIP addresses. Returns undefined for
 * anything that is not an object.
 */
export function trimNode(object: unknown): NodeInput | undefined {
  if (!isObject(object)) return undefined;
  const { spec, status } = object as { spec?: Loose; status?: Loose };
  const trimmed: Record<string, unknown> = isObject(spec)
    ? { spec: pick(spec, ["podCIDR", "podCIDRs"]) }
    : {};
  const addresses = isObject(status) ? status.addresses : undefined;
  if (Array.isArray(addresses)) {
    const kept = addresses.filter(
      (entry) => isObject(entry) && (entry.type === "InternalIP" || entry.type === "ExternalIP"),
    );
    if (kept.length > 0) trimmed.status = { addresses: pickEach(kept, ["type", "address"]) };
  }
  return trimmed as NodeInput;
}

/** Whether two trimmed Nodes have the same pod CIDRs and addresses. */
export function sameNodeInput(a: NodeInput, b: NodeInput): boolean {
  return equal(a.spec, b.spec) && equal(a.status?.addresses, b.status?.addresses);
}

/** `spec.podCIDRs`, falling back to the older single `spec.podCIDR`. Non-strings are dropped. */
export function podCIDRsOf(node: NodeInput | undefined): string[] {
  const spec = node?.spec;
  const listed: readonly unknown[] =
    Array.isArray(spec?.podCIDRs) && spec.podCIDRs.length > 0 ? spec.podCIDRs : [spec?.podCIDR];
  return listed.filter((cidr): cidr is string => typeof cidr === "string" && cidr !== "");
}
