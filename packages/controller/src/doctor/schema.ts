/**
 * The report of `ipvs-node-controller doctor`: its JSON shape (`--output json` prints a
 * {@link DoctorReport} as is), the same for every way it was gathered. `evaluate.ts` decides it,
 * `text.ts` renders it for people.
 */
import type {
  Conflict,
  CoreConfig,
  IpFamily,
  L4Protocol,
  LiveMapping,
  NodeIPSource,
  SkippedEntry,
} from "@ipvs-node-controller/core";

/** Version of the report's JSON shape; it changes only with an incompatible change. */
export const DOCTOR_REPORT_VERSION = 1;

/** What a TCP connection attempt ended with. */
export type ProbeResult = "ok" | "refused" | "timeout" | "error";

/** One connection attempt from the host. */
export interface ProbeOutcome {
  readonly result: ProbeResult;
  /** For `error`: the system's code, e.g. `EHOSTUNREACH`. */
  readonly detail?: string;
}

/** Where Services and the Node were read from. */
export type DoctorSource =
  | {
      readonly kind: "files";
      /** The `--services` file. */
      readonly services: string;
      /** The `--node` file, if one was given. */
      readonly node?: string;
    }
  | {
      readonly kind: "api";
      /** The API server's URL. */
      readonly server: string;
      /** Whether the Node named by `--node-name` exists. */
      readonly nodeFound: boolean;
    };

/** A problem (the report is not ok) or a note (worth knowing, not wrong). */
export interface Finding {
  /** Stable, machine-readable. */
  readonly code: FindingCode;
  /** One sentence naming the Service, address or rule concerned. */
  readonly message: string;
}

/** Every kind of finding. */
export type FindingCode =
  /** A local external IP has no rule. */
  | "RuleMissing"
  /** A local external IP's rule sends traffic to another cluster IP. */
  | "RuleWrongTarget"
  /** A local external IP's rule translates other sources than its loadBalancerSourceRanges admit. */
  | "RuleWrongSources"
  /** A rule of ours for a local address that no Service wants. */
  | "StaleRule"
  /** Our chains, hooks or local-pod match differ from what a sync writes. */
  | "RulesDamaged"
  /** The chosen backend's rules could not be read. */
  | "RulesUnreadable"
  /** The other backend's rules are in the kernel too. */
  | "OtherBackendRules"
  /** The host's connection to a local external IP failed while its cluster IP answers. */
  | "ProbeFailed"
  /** Notes: the same differences for addresses that are not local, where rules do nothing. */
  | "InertRuleMissing"
  | "InertRuleWrongTarget"
  | "InertRuleWrongSources"
  | "InertStaleRule"
  | "InertRulesDamaged"
  /** Note: neither the external IP nor its cluster IP answers; no rule can change that. */
  | "ServiceUnreachable"
  /** Note: an external IP that is not local did not answer; the load balancer serves it. */
  | "RemoteProbeFailed"
  /** Note: the local addresses could not be read; every address counts as local. */
  | "NetworkUnreadable"
  /** Note: the other backend's rules could not be read. */
  | "OtherBackendUnreadable"
  /** Note: the Node named by `--node-name` does not exist; its pod CIDRs are unknown. */
  | "NodeNotFound"
  /**
   * Note: a Service's loadBalancerSourceRanges admit none of this node's pod CIDRs, so its pods
   * cannot reach the LoadBalancer IP, as kube-proxy has it.
   */
  | "SourceRangesExcludePods";

/** Whether a translation is in the kernel. */
export type RuleState = "present" | "missing" | "wrong-target" | "wrong-sources";

/** One (external IP, protocol, port) a Service wants translated, and what the node does with it. */
export interface MappingStatus {
  readonly family: IpFamily;
  readonly externalIP: string;
  readonly protocol: L4Protocol;
  readonly port: number;
  readonly clusterIP: string;
  /** Whether the external IP is a local address of the node; null when that is unknown. */
  readonly local: boolean | null;
  /** `unknown` when the rules could not be read. */
  readonly rule: RuleState | "unknown";
  /** With `wrong-target`: where the rule in the kernel sends the traffic. */
  readonly liveClusterIP?: string;
  /** The sources translated, when the Service restricts them (loadBalancerSourceRanges). */
  readonly allowedSources?: readonly string[];
  /** With `wrong-sources`: the sources the rule in the kernel translates; absent: all. */
  readonly liveAllowedSources?: readonly string[];
  /**
   * With `--probe`, TCP only: the host's connection to the external IP, and to the cluster IP when
   * that failed.
   */
  readonly probe?: ProbeOutcome & { readonly clusterIP?: ProbeOutcome };
}

/** A Service that needs translation. */
export interface ServiceStatus {
  /** `namespace/name`. */
  readonly service: string;
  readonly mappings: readonly MappingStatus[];
}

/** A rule of ours in the kernel that no Service wants. */
export interface StaleRule extends LiveMapping {
  readonly local: boolean | null;
}

/** External IPs of one family that the Services want translated. */
export interface ExternalIPCount {
  readonly family: IpFamily;
  /** Distinct external IPs. */
  readonly total: number;
  /** How many of them are local addresses of the node; null when unknown. */
  readonly local: number | null;
}

/** Where a pod CIDR came from. */
export type PodCIDRSource = "Node spec.podCIDRs" | "--pod-cidr" | "--cluster-cidr";

/** How traffic from local pods is recognised for one family. */
export type PodTrafficFamily =
  | {
      readonly family: IpFamily;
      readonly match: "sourceCIDRs";
      readonly cidrs: readonly {
        readonly cidr: string;
        readonly sources: readonly PodCIDRSource[];
      }[];
    }
  | { readonly family: IpFamily; readonly match: "inputInterface"; readonly interface: string }
  | {
      readonly family: IpFamily;
      readonly match: "inputInterfacePrefix";
      readonly interfacePrefix: string;
    };

/** A backend's rules in the kernel, summarised. */
export interface RulesSummary {
  readonly backend: "nft" | "iptables";
  /** The program they were read with. */
  readonly tool?: string;
  /** Whether anything of this backend is in the kernel; null when it could not be read. */
  readonly present: boolean | null;
  /** Translations in the kernel. */
  readonly mappings: number;
  /** What differs around the translations from what a sync writes. */
  readonly problems: readonly string[];
  /** Why they could not be read. */
  readonly error?: string;
}

/**
 * - `working`: some external IPs are local addresses of the node (it is affected) and every
 *   translation they need is in place (and, with `--probe`, answers);
 * - `inert`: no external IP is a local address: kube-proxy does not bind them here, so the rules
 *   do nothing, by design;
 * - `nothing-to-translate`: no Service needs translation;
 * - `broken`: at least one problem.
 */
export type DoctorVerdict = "working" | "inert" | "nothing-to-translate" | "broken";

/** The whole report; `--output json` prints it as is. */
export interface DoctorReport {
  readonly version: typeof DOCTOR_REPORT_VERSION;
  /** True when there is no problem: the command exits 0. */
  readonly ok: boolean;
  readonly verdict: DoctorVerdict;
  /** One sentence that answers "is this node affected, and is the fix working?". */
  readonly summary: string;
  /** What makes the report not ok. */
  readonly problems: readonly Finding[];
  /** Worth knowing, not wrong. */
  readonly notes: readonly Finding[];
  readonly node: {
    readonly name?: string;
    readonly kernel: string;
    /** Whether kube-proxy's IPVS interface exists; null when unknown. */
    readonly kubeIpvsInterface: boolean | null;
    /** Per enabled family. */
    readonly externalIPs: readonly ExternalIPCount[];
    /** Per enabled family: the address loadBalancerSourceRanges are checked against. */
    readonly ips: readonly NodeIPReport[];
  };
  readonly tools: {
    /** The backend `--backend` chose. */
    readonly backend: "nft" | "iptables";
    readonly nft: { readonly version?: string; readonly error?: string };
    readonly iptables: {
      readonly variant?: "legacy" | "nft";
      readonly reason?: string;
      readonly error?: string;
    };
  };
  readonly podTraffic: {
    readonly detectLocalMode: CoreConfig["localDetection"]["mode"];
    readonly families: readonly PodTrafficFamily[];
  };
  readonly source: DoctorSource;
  /** The chosen backend's rules. */
  readonly rules: RulesSummary;
  /** The other backend's rules, which should not be there. */
  readonly otherBackendRules: RulesSummary;
  /** Every Service that needs translation, by namespace/name. */
  readonly services: readonly ServiceStatus[];
  /** Services whose loadBalancerSourceRanges restrict who reaches their LoadBalancer IPs. */
  readonly restrictions: readonly RestrictedService[];
  /** Rules of ours in the kernel that no Service wants. */
  readonly staleRules: readonly StaleRule[];
  /** Services, or parts of them, that get no rule, with the reason. */
  readonly skipped: readonly SkippedEntry[];
  readonly conflicts: readonly Conflict[];
  /** Problems with node facts, e.g. no pod CIDR known. */
  readonly warnings: readonly string[];
}

/** How much of the node's pod CIDRs of a family a restriction admits. */
export type PodCoverage = "all" | "some" | "none" | "unknown";

/** One restricted LoadBalancer IP: who may reach it from this node. */
export interface RestrictedAddress {
  readonly family: IpFamily;
  readonly externalIP: string;
  /** The ports of the Service on this address. */
  readonly ports: readonly string[];
  /** The source CIDRs translated, as the mapping holds them. */
  readonly allowedSources: readonly string[];
  /** Whether host-network traffic is translated: the node's IP is inside a range. */
  readonly admitsNode: boolean;
  /** How much of this node's pod CIDRs the sources cover. */
  readonly admitsPods: PodCoverage;
}

/** A Service with at least one restricted LoadBalancer IP. */
export interface RestrictedService {
  /** `namespace/name`. */
  readonly service: string;
  readonly addresses: readonly RestrictedAddress[];
}

/** The node IP each family's restrictions are checked against, and where it came from. */
export interface NodeIPReport {
  readonly family: IpFamily;
  readonly address: string;
  readonly source: NodeIPSource;
}
