/**
 * The data model of ipvs-node-controller's rule engine.
 *
 * Everything here is plain, JSON-serialisable data: a backend can compile a {@link Ruleset}
 * without knowing anything about Kubernetes, and two rulesets can be compared byte for byte.
 *
 * @packageDocumentation
 */

/** An IP family. The controller handles each enabled family independently. */
export type IpFamily = "ipv4" | "ipv6";

/** Transport protocols a Service port may use (Kubernetes' `TCP`, `UDP`, `SCTP`, lower-cased). */
export type L4Protocol = "tcp" | "udp" | "sctp";

/** The owner of a mapping, for rule comments and logs. Both parts are validated DNS labels. */
export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
}

/**
 * One DNAT translation: traffic that starts on this node towards
 * (`externalIP`, `protocol`, `port`) goes to (`clusterIP`, `protocol`, `port`) instead.
 *
 * Addresses are canonical (IPv4 dotted decimal, IPv6 RFC 5952: compressed, lower case) and of `family`.
 */
export interface Mapping {
  readonly family: IpFamily;
  /** A LoadBalancer ingress IP or a `spec.externalIPs` entry. */
  readonly externalIP: string;
  readonly protocol: L4Protocol;
  /** The Service port (not targetPort, not nodePort), 1–65535. */
  readonly port: number;
  /** The Service's cluster IP of the same family. */
  readonly clusterIP: string;
  readonly service: ServiceRef;
  /**
   * Present only when the Service restricts who may reach this LoadBalancer ingress IP
   * (`spec.loadBalancerSourceRanges`): the translation applies only to traffic whose source
   * address is inside one of these CIDRs, exactly the sources kube-proxy's IPVS mode lets through
   * its source-range firewall. That is the Service's ranges of this family, plus
   * `externalIP/32` (`/128`) when an address of the node is inside one of them: traffic the node
   * sends to a local LoadBalancer IP leaves with that IP as its source, and kube-proxy admits it
   * exactly then. Canonical CIDRs of `family` in address order, none inside another (the
   * outermost of nested ranges stands for them), never empty. Absent for externalIPs and
   * unrestricted Services.
   */
  readonly allowedSources?: readonly string[];
}

/**
 * How traffic from pods on this node is recognised in the prerouting hook, mirroring kube-proxy's
 * `--detect-local-mode`. Host-network traffic (output hook, local source address) is always covered
 * and needs no description here.
 *
 * - `sourceCIDRs`: the packet's source address is in one of `cidrs` (NodeCIDR and ClusterCIDR modes).
 *   An empty list means no pod traffic is recognised for this family (e.g. the Node has no pod CIDR of it).
 * - `inputInterface`: the packet arrived on the bridge interface `name` (BridgeInterface mode).
 * - `inputInterfacePrefix`: the packet arrived on an interface whose name starts with `prefix`
 *   (InterfaceNamePrefix mode).
 */
export type LocalPodMatch =
  | { readonly kind: "sourceCIDRs"; readonly cidrs: readonly string[] }
  | { readonly kind: "inputInterface"; readonly name: string }
  | { readonly kind: "inputInterfacePrefix"; readonly prefix: string };

/** Everything a backend needs for one IP family. */
export interface FamilyRuleset {
  readonly family: IpFamily;
  /** Which prerouting traffic counts as coming from a local pod. CIDRs are canonical and of `family`. */
  readonly localPods: LocalPodMatch;
  /** Sorted by (externalIP, protocol, port); keys are unique. */
  readonly mappings: readonly Mapping[];
}

/**
 * The complete desired NAT state of one node. Deterministic: the same input in any order gives a
 * byte-identical `JSON.stringify`.
 */
export interface Ruleset {
  /**
   * The packet mark OR'd into translated packets that must leave the node masqueraded, so that
   * kube-proxy's POSTROUTING does it: `1 << masqueradeBit`, as an unsigned 32-bit integer (0x4000
   * for kube-proxy's default bit 14). Host-network traffic always gets it (its source is the
   * LoadBalancer IP itself, which no endpoint can answer); traffic from local pods only when
   * {@link Ruleset.markPodTraffic} is set.
   */
  readonly masqueradeMark: number;
  /**
   * Whether translated traffic from local pods gets the mark too. False by default: kube-proxy's
   * own short-circuit keeps a pod's address, so the endpoint sees the pod, and IPVS mode already
   * masquerades a pod that reaches its own endpoint (its loop-back set).
   */
  readonly markPodTraffic: boolean;
  /** One entry per enabled family, IPv4 first. A family that is enabled but has no mappings is still listed. */
  readonly families: readonly FamilyRuleset[];
}

/** Machine-readable reasons why a Service, or one of its addresses or ports, produced no mapping. */
export type SkipReason =
  /** The Service's namespace or name is not a valid DNS label (it would reach rule comments). */
  | "InvalidMetadata"
  /** The opt-out annotation is set to "true". */
  | "OptedOut"
  /** Only `externalTrafficPolicy: Local` Services are handled and this one is not. */
  | "NotLocalTrafficPolicy"
  /** Headless (`None`) or no cluster IP at all. */
  | "NoClusterIP"
  /** A LoadBalancer Service whose status has no ingress yet (and no usable externalIPs). */
  | "NoIngress"
  /** An ingress entry carries only a hostname (e.g. a cloud ELB): there is no IP to translate. */
  | "HostnameOnlyIngress"
  /** `ipMode: Proxy`: traffic must go through the load balancer, as kube-proxy also does. */
  | "ProxyIPMode"
  /** An external IP of a family the Service has no cluster IP for. */
  | "NoClusterIPForFamily"
  /** An external IP of a family that is not enabled in the configuration. */
  | "FamilyNotEnabled"
  /** An address that is not a valid, canonicalisable unicast IP (bad syntax, zone suffix, IPv4-mapped IPv6...). */
  | "InvalidIP"
  /** A port that is missing, out of range, or uses an unknown protocol. */
  | "InvalidPort"
  /** The Service has no usable port at all. */
  | "NoPorts"
  /** The Service lists more external addresses × ports than `maxMappingsPerService`. */
  | "TooManyMappings"
  /** Another Service already claims this (IP, protocol, port); see {@link Conflict}. */
  | "Conflict"
  /**
   * A `spec.loadBalancerSourceRanges` entry that is not a CIDR. It is ignored, as kube-proxy
   * ignores it; the Service's other ranges still apply.
   */
  | "InvalidSourceRange";

/** A Service, or part of one, that produced no mapping. */
export interface SkippedEntry {
  /** `namespace/name` as found in the object (may be the raw, invalid text for `InvalidMetadata`, sanitised). */
  readonly service: string;
  readonly reason: SkipReason;
  /** Human-readable detail naming the offending value, e.g. `externalIPs[1] "10.0.0.300" is not an IP`. */
  readonly detail: string;
}

/** Two Services claimed the same (family, external IP, protocol, port); the older one won. */
export interface Conflict {
  readonly family: IpFamily;
  readonly externalIP: string;
  readonly protocol: L4Protocol;
  readonly port: number;
  /** `namespace/name` of the Service that got the mapping. */
  readonly winner: string;
  /** `namespace/name` of the Service that did not. */
  readonly loser: string;
}

/** kube-proxy's `--detect-local-mode` values, as configuration. */
export type LocalDetection =
  | { readonly mode: "NodeCIDR" }
  | { readonly mode: "ClusterCIDR"; readonly cidrs: readonly string[] }
  | { readonly mode: "BridgeInterface"; readonly interfaceName: string }
  | { readonly mode: "InterfaceNamePrefix"; readonly interfacePrefix: string };

/** Options of the rule engine. Invalid values make {@link computeRuleset} throw a {@link ConfigError}. */
export interface CoreConfig {
  /** Enabled IP families. Default `["ipv4"]` (the original's `NET_STACK=ipv4`). */
  readonly families: readonly IpFamily[];
  /** Translate `spec.externalIPs` as well as LoadBalancer ingress IPs. Default `true`. */
  readonly externalIPs: boolean;
  /** Only handle Services with `externalTrafficPolicy: Local`. Default `false`. */
  readonly onlyLocalTrafficPolicy: boolean;
  /** Bit of the masquerade mark, 0–31, as kube-proxy's `--masquerade-bit`. Default 14. */
  readonly masqueradeBit: number;
  /** How pod traffic is recognised. Default `{ mode: "NodeCIDR" }`. */
  readonly localDetection: LocalDetection;
  /**
   * Pod CIDRs of this node in addition to the Node's `spec.podCIDRs` (NodeCIDR mode), for CNIs
   * that leave those empty. Default none.
   */
  readonly extraPodCIDRs: readonly string[];
  /**
   * The most mappings one Service may ask for (external addresses listed × ports). A Service with
   * 100 externalIPs and 10,000 ports asks for a million, enough to exhaust the controller's
   * memory; such a Service is skipped as `TooManyMappings`. Default 65,536.
   */
  readonly maxMappingsPerService: number;
  /**
   * Mark translated traffic from local pods for masquerading as well (the behaviour of versions
   * before source addresses were kept). Default `false`; see {@link Ruleset.markPodTraffic}.
   */
  readonly masqueradePodTraffic: boolean;
  /**
   * This node's addresses as kube-proxy's `--bind-address` would give them: each one replaces the
   * node IP of its family that is otherwise read from the Node's `status.addresses`. Only
   * `loadBalancerSourceRanges` use node IPs. Default none.
   */
  readonly nodeIPs: readonly string[];
}

/** What `computeRuleset` and `RulesetEngine.result` return. */
export interface RulesetResult {
  /** The desired state, canonical and deterministic. */
  readonly ruleset: Ruleset;
  /** Services or parts of Services that produced no mapping, sorted by service then reason. */
  readonly skipped: readonly SkippedEntry[];
  /** (IP, protocol, port) claimed by more than one Service, sorted. */
  readonly conflicts: readonly Conflict[];
  /** Problems with node facts (e.g. a malformed pod CIDR), which are skipped rather than fatal. */
  readonly warnings: readonly string[];
}

/** The diff between two rulesets, keyed by (family, external IP, protocol, port). */
export interface RulesetDiff {
  readonly added: readonly Mapping[];
  readonly removed: readonly Mapping[];
  /** Same key, different cluster IP, owner or admitted sources. */
  readonly changed: readonly { readonly before: Mapping; readonly after: Mapping }[];
  /**
   * True when anything other than mappings differs (mark, families, local-pod matching):
   * such a change cannot be applied element by element and needs a full sync.
   */
  readonly settingsChanged: boolean;
  /** The next ruleset's settings. */
  readonly settings: RulesetSettings;
}

/** The fields that identify a mapping: one key, one mapping in the kernel. */
export type MappingKey = Pick<Mapping, "family" | "externalIP" | "protocol" | "port">;

/**
 * What the desired state now says about the keys that may have changed, and its settings: a
 * backend measures it against what the kernel holds, so a key whose desired mapping is already
 * there costs nothing, and no copy of what was applied is needed anywhere else.
 */
export interface RulesetUpdate {
  readonly settings: RulesetSettings;
  /** The desired mapping of each touched key that has one. */
  readonly mappings: readonly Mapping[];
  /** Touched keys the desired state has no mapping for (any more). */
  readonly removed: readonly MappingKey[];
}

/**
 * What `RulesetEngine.takeChanges` reports: the keys touched since the previous call with what
 * they hold now, whether the settings changed, and the skips and warnings that appeared or went
 * away, so that each is logged once.
 */
export interface RulesetChanges extends RulesetUpdate {
  readonly settingsChanged: boolean;
  readonly skipsAppeared: readonly SkippedEntry[];
  readonly skipsDisappeared: readonly SkippedEntry[];
  readonly warningsAppeared: readonly string[];
}

/** Everything in a {@link Ruleset} except its mappings. */
export interface RulesetSettings {
  readonly masqueradeMark: number;
  readonly markPodTraffic: boolean;
  readonly families: readonly { readonly family: IpFamily; readonly localPods: LocalPodMatch }[];
}
