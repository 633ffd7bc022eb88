/**
 * The verdict of `ipvs-node-controller doctor`: facts gathered from the node, the cluster and the
 * kernel in, one typed report out. Pure: everything here is decided from its arguments, so every
 * rule about what counts as wrong is unit-tested without a kernel.
 *
 * What is wrong (the report is not `ok`, the command exits 1) is what changes or breaks traffic
 * that starts on this node now:
 *
 * - a Service's external IP that is a local address of the node (kube-proxy's IPVS mode bound it)
 *   has no rule, or a rule to another cluster IP;
 * - a rule of ours for a local address that no Service wants any more;
 * - our chains, hooks or local-pod match differ from what a sync writes, while some translated
 *   address is local;
 * - the other backend's rules are in the kernel as well (left over from an earlier `--backend`);
 * - the rules could not be read at all;
 * - with `--probe`, a connection from the host to a local external IP fails while its cluster IP
 *   answers: the translation does not happen.
 *
 * Rules for addresses that are not local to the node do nothing there, by design (`fib daddr type
 * local` / `--dst-type LOCAL`): on such a node, missing or stale rules are notes, not problems,
 * and a node where no external IP is local is reported as inert. When the local addresses cannot
 * be read, every address counts as local, so nothing is excused by a fact that is unknown.
 */
import {
  type Conflict,
  type CoreConfig,
  compareMappings,
  type IpFamily,
  type L4Protocol,
  type LiveMapping,
  type LiveRules,
  type Mapping,
  mappingKey,
  type NodeInput,
  parseCIDR,
  podCIDRsOf,
  type RulesetResult,
  type SkippedEntry,
  sameSources,
} from "@ipvs-node-controller/core";
import { otherBackendOf } from "../options.js";
import {
  type NodeIPReport,
  nodeIPReport,
  type RestrictedService,
  restrictedServices,
} from "./restrictions.js";

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

/** The rules of one backend as read from the kernel, or why they could not be read. */
export type LiveRulesFact =
  | { readonly ok: true; readonly rules: LiveRules }
  | {
      readonly ok: false;
      readonly error: string;
      /** The backend's program could not be started at all (not installed). */
      readonly notStarted: boolean;
    };

/** Everything the report is decided from. */
export interface DoctorFacts {
  readonly source: DoctorSource;
  /** The node's name, when known (`--node-name`, or the Node file's `metadata.name`). */
  readonly nodeName?: string;
  /** `uname -r`. */
  readonly kernel: string;
  /** The node's local addresses and whether kube-ipvs0 exists, or why they could not be read. */
  readonly network:
    | {
        readonly ok: true;
        readonly localAddresses: ReadonlySet<string>;
        readonly kubeIpvsInterface: boolean;
      }
    | { readonly ok: false; readonly error: string };
  /** `nft --version`, or why it could not be run. */
  readonly nftVersion: { readonly ok: true; readonly version: string } | ErrorFact;
  /** The iptables variant in use and why, or why it could not be detected. */
  readonly iptablesVariant:
    | { readonly ok: true; readonly variant: "legacy" | "nft"; readonly reason: string }
    | ErrorFact;
  /** The resolved configuration the ruleset was computed with. */
  readonly config: CoreConfig;
  /** The Node the pod CIDRs were read from, if any. */
  readonly node?: NodeInput;
  /** What the Services want. */
  readonly result: RulesetResult;
  /** The backend `--backend` chose, and what it has in the kernel. */
  readonly backend: "nft" | "iptables";
  readonly live: LiveRulesFact;
  /** The other backend's rules (left over from an earlier `--backend`). */
  readonly otherLive: LiveRulesFact;
  /** With `--probe`: outcomes by {@link probeKey}, for external IPs and, where those failed, cluster IPs. */
  readonly probes?: ReadonlyMap<string, ProbeOutcome>;
}

interface ErrorFact {
  readonly ok: false;
  readonly error: string;
}

/** The key of a probe of `ip` on TCP `port` in {@link DoctorFacts.probes}. */
export function probeKey(ip: string, port: number): string {
  return `${ip}|${port}`;
}

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

const describeKey = (m: { externalIP: string; protocol: string; port: number }) =>
  `${m.externalIP} ${m.protocol}/${m.port}`;

const sourcesText = (sources: readonly string[] | undefined) =>
  sources === undefined
    ? "every source"
    : sources.length === 0
      ? "no source"
      : `only ${sources.join(", ")}`;

const ownerOf = (mapping: Mapping) => `${mapping.service.namespace}/${mapping.service.name}`;

function summarise(backend: "nft" | "iptables", fact: LiveRulesFact): RulesSummary {
  if (!fact.ok) {
    return { backend, present: null, mappings: 0, problems: [], error: fact.error };
  }
  return {
    backend,
    tool: fact.rules.tool,
    present: fact.rules.present,
    mappings: fact.rules.mappings.length,
    problems: fact.rules.problems,
  };
}

function podTraffic(facts: DoctorFacts): DoctorReport["podTraffic"] {
  const canonical = (texts: readonly string[]) =>
    new Set(
      texts.flatMap((text) => {
        const parsed = parseCIDR(text);
        return parsed.ok ? [parsed.value.cidr] : [];
      }),
    );
  const fromNode = canonical(podCIDRsOf(facts.node));
  const fromFlag = canonical(facts.config.extraPodCIDRs);
  const detection = facts.config.localDetection;
  const fromClusterFlag = canonical(detection.mode === "ClusterCIDR" ? detection.cidrs : []);
  const sourcesOf = (cidr: string): PodCIDRSource[] => [
    ...(detection.mode === "NodeCIDR" && fromNode.has(cidr)
      ? (["Node spec.podCIDRs"] as const)
      : []),
    ...(detection.mode === "NodeCIDR" && fromFlag.has(cidr) ? (["--pod-cidr"] as const) : []),
    ...(fromClusterFlag.has(cidr) ? (["--cluster-cidr"] as const) : []),
  ];
  const families = facts.result.ruleset.families.map(({ family, localPods }): PodTrafficFamily => {
    if (localPods.kind === "inputInterface") {
      return { family, match: "inputInterface", interface: localPods.name };
    }
    if (localPods.kind === "inputInterfacePrefix") {
      return { family, match: "inputInterfacePrefix", interfacePrefix: localPods.prefix };
    }
    return {
      family,
      match: "sourceCIDRs",
      cidrs: localPods.cidrs.map((cidr) => ({ cidr, sources: sourcesOf(cidr) })),
    };
  });
  return { detectLocalMode: detection.mode, families };
}

function probeText(outcome: ProbeOutcome): string {
  return outcome.result === "error" ? `error ${outcome.detail ?? ""}`.trim() : outcome.result;
}

/**
 * The kernel's translations by key, and those no Service wants: a key nobody asks for, or one
 * listed a second time (only the first of two rules for one key ever acts).
 */
function compareTranslations(
  found: readonly LiveMapping[],
  wanted: readonly Mapping[],
  isLocal: (address: string) => boolean | null,
): { liveByKey: Map<string, LiveMapping>; stale: StaleRule[] } {
  const liveByKey = new Map<string, LiveMapping>();
  const stale: StaleRule[] = [];
  for (const mapping of found) {
    const key = mappingKey(mapping);
    if (liveByKey.has(key)) stale.push({ ...mapping, local: isLocal(mapping.externalIP) });
    else liveByKey.set(key, mapping);
  }
  const wantedKeys = new Set(wanted.map(mappingKey));
  for (const [key, mapping] of liveByKey) {
    if (!wantedKeys.has(key)) stale.push({ ...mapping, local: isLocal(mapping.externalIP) });
  }
  return { liveByKey, stale: stale.sort(compareMappings) };
}

/** Decides the report. See the module comment for what counts as wrong. */
export function buildDoctorReport(facts: DoctorFacts): DoctorReport {
  const problems: Finding[] = [];
  const notes: Finding[] = [];
  const network = facts.network;
  const isLocal = (address: string): boolean | null =>
    network.ok ? network.localAddresses.has(address) : null;
  if (!network.ok) {
    notes.push({
      code: "NetworkUnreadable",
      message: `cannot read this node's local addresses (${network.error}): every external IP is taken to be local`,
    });
  }
  if (facts.source.kind === "api" && !facts.source.nodeFound) {
    notes.push({
      code: "NodeNotFound",
      message: `the Node ${facts.nodeName ?? ""} does not exist: its pod CIDRs are unknown`,
    });
  }

  // Desired mappings, and the external IPs they use per family.
  const wanted = facts.result.ruleset.families.flatMap((family) => family.mappings);
  const externalIPs = facts.result.ruleset.families.map(({ family, mappings }): ExternalIPCount => {
    const addresses = [...new Set(mappings.map((mapping) => mapping.externalIP))];
    return {
      family,
      total: addresses.length,
      local: network.ok ? addresses.filter((address) => isLocal(address)).length : null,
    };
  });
  const totalIPs = externalIPs.reduce((sum, count) => sum + count.total, 0);
  const localIPs = network.ok
    ? externalIPs.reduce((sum, count) => sum + (count.local ?? 0), 0)
    : totalIPs;
  // Unknown locality counts as local: nothing is excused by a fact nobody could read.
  const acts = (address: string) => isLocal(address) !== false;

  const live = facts.live.ok ? facts.live.rules : undefined;
  const { liveByKey, stale } = compareTranslations(live?.mappings ?? [], wanted, isLocal);

  const probes = facts.probes;
  const problemsOrNotes = (active: boolean) => (active ? problems : notes);
  const byService = new Map<string, MappingStatus[]>();
  for (const mapping of wanted) {
    const found = liveByKey.get(mappingKey(mapping));
    const rule: MappingStatus["rule"] =
      live === undefined
        ? "unknown"
        : found === undefined
          ? "missing"
          : found.clusterIP !== mapping.clusterIP
            ? "wrong-target"
            : !sameSources(found.allowedSources, mapping.allowedSources)
              ? "wrong-sources"
              : "present";
    const owner = ownerOf(mapping);
    const key = describeKey(mapping);
    const local = isLocal(mapping.externalIP);
    const active = acts(mapping.externalIP);

    let probe: MappingStatus["probe"];
    const outcome =
      mapping.protocol === "tcp"
        ? probes?.get(probeKey(mapping.externalIP, mapping.port))
        : undefined;
    const cluster = probes?.get(probeKey(mapping.clusterIP, mapping.port));
    if (outcome !== undefined) {
      probe = cluster === undefined ? outcome : { ...outcome, clusterIP: cluster };
    }
    const failed = outcome !== undefined && outcome.result !== "ok";
    // What the host saw, appended to a rule's finding: the symptom of the cause it names.
    const symptom = failed ? `; the host's connection: ${probeText(outcome)}` : "";

    if (rule === "missing") {
      problemsOrNotes(active).push(
        active
          ? {
              code: "RuleMissing",
              message: `${owner}: no rule translates ${key} to ${mapping.clusterIP}${local === true ? ", a local address of this node" : ""}${symptom}`,
            }
          : {
              code: "InertRuleMissing",
              message: `${owner}: no rule translates ${key} to ${mapping.clusterIP}; not needed while ${mapping.externalIP} is not a local address of this node`,
            },
      );
    } else if (rule === "wrong-target" && found !== undefined) {
      problemsOrNotes(active).push({
        code: active ? "RuleWrongTarget" : "InertRuleWrongTarget",
        message: `${owner}: the rule for ${key} sends traffic to ${found.clusterIP}, not to its cluster IP ${mapping.clusterIP}${active ? symptom : "; inert while it is not a local address of this node"}`,
      });
    } else if (rule === "wrong-sources" && found !== undefined) {
      problemsOrNotes(active).push({
        code: active ? "RuleWrongSources" : "InertRuleWrongSources",
        message: `${owner}: the rule for ${key} translates ${sourcesText(found.allowedSources)}, where its loadBalancerSourceRanges admit ${sourcesText(mapping.allowedSources)}${active ? symptom : "; inert while it is not a local address of this node"}`,
      });
    }
    if (failed) {
      const text = `${owner}: ${key} did not answer the host (${probeText(outcome)})`;
      if (local === false) {
        notes.push({
          code: "RemoteProbeFailed",
          message: `${text}; it is not a local address of this node, so the load balancer serves it, not our rules`,
        });
      } else if (cluster !== undefined && cluster.result !== "ok") {
        notes.push({
          code: "ServiceUnreachable",
          message: `${text}, nor did its cluster IP ${mapping.clusterIP} (${probeText(cluster)}): the Service has no endpoint that answers, which no rule can change`,
        });
      } else if (rule === "present" || rule === "unknown") {
        problems.push({
          code: "ProbeFailed",
          message: `${text} while its cluster IP ${mapping.clusterIP} answers: the translation does not happen`,
        });
      }
    }
    const status: MappingStatus = {
      family: mapping.family,
      externalIP: mapping.externalIP,
      protocol: mapping.protocol,
      port: mapping.port,
      clusterIP: mapping.clusterIP,
      local,
      rule,
      ...(rule === "wrong-target" && found ? { liveClusterIP: found.clusterIP } : {}),
      ...(mapping.allowedSources ? { allowedSources: mapping.allowedSources } : {}),
      ...(rule === "wrong-sources" && found?.allowedSources
        ? { liveAllowedSources: found.allowedSources }
        : {}),
      ...(probe ? { probe } : {}),
    };
    const list = byService.get(owner) ?? [];
    list.push(status);
    byService.set(owner, list);
  }

  for (const rule of stale) {
    const owner = rule.owner === "" ? "no Service named" : `named ${rule.owner}`;
    const text = `a rule (${owner}) translates ${describeKey(rule)} to ${rule.clusterIP}, which no Service wants`;
    if (rule.local !== false) problems.push({ code: "StaleRule", message: text });
    else {
      notes.push({
        code: "InertStaleRule",
        message: `${text}; inert while ${rule.externalIP} is not a local address of this node`,
      });
    }
  }

  if (!facts.live.ok) {
    problems.push({
      code: "RulesUnreadable",
      message: `cannot read the ${facts.backend} rules: ${facts.live.error}`,
    });
  } else if (live?.present && live.problems.length > 0) {
    // Damage around the translations matters where a translated or stale address is local.
    const anyActive = localIPs > 0 || stale.some((rule) => rule.local !== false);
    for (const problem of live.problems) {
      if (anyActive) {
        problems.push({
          code: "RulesDamaged",
          message: `the ${facts.backend} rules differ from what a sync writes: ${problem}`,
        });
      } else {
        notes.push({
          code: "InertRulesDamaged",
          message: `the ${facts.backend} rules differ from what a sync writes: ${problem} (inert: no translated address is local)`,
        });
      }
    }
  }

  const restrictions = restrictedServices(wanted, facts.config, facts.node);
  for (const { service, addresses } of restrictions) {
    for (const address of addresses) {
      if (address.admitsPods !== "none") continue;
      notes.push({
        code: "SourceRangesExcludePods",
        message: `${service}: its loadBalancerSourceRanges admit none of this node's ${address.family} pod CIDRs, so pods here do not reach ${address.externalIP} (${address.ports.join(", ")}), as kube-proxy has it; its cluster IP stays reachable`,
      });
    }
  }

  const other = otherBackendOf(facts.backend);
  if (facts.otherLive.ok && facts.otherLive.rules.present) {
    const count = facts.otherLive.rules.mappings.length;
    problems.push({
      code: "OtherBackendRules",
      message: `the ${other} backend's rules are in the kernel too (${count} translation${count === 1 ? "" : "s"}): \`ipvs-node-controller cleanup --backend ${other}\` removes them, as \`run\` does when it starts`,
    });
  } else if (!facts.otherLive.ok && !facts.otherLive.notStarted) {
    notes.push({
      code: "OtherBackendUnreadable",
      message: `cannot read the ${other} backend's rules: ${facts.otherLive.error}`,
    });
  }

  const ok = problems.length === 0;
  const verdict: DoctorVerdict = !ok
    ? "broken"
    : wanted.length === 0
      ? "nothing-to-translate"
      : localIPs === 0
        ? "inert"
        : "working";
  const ipvs = network.ok
    ? network.kubeIpvsInterface
      ? "kube-ipvs0 present"
      : "no kube-ipvs0"
    : "local addresses unknown";
  const count = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const localText = `${localIPs} of ${count(totalIPs, "external IP")} ${localIPs === 1 || totalIPs === 1 ? "is a local address" : "are local addresses"} of this node (${ipvs})`;
  const summaries: Record<DoctorVerdict, string> = {
    broken: `broken: ${count(problems.length, "problem")}; ${localText}`,
    "nothing-to-translate": `nothing to translate: no Service has an external IP this node translates (${ipvs})`,
    inert: `not affected: ${localText}, so the rules are inert here, by design (kube-proxy binds external IPs to the node only in IPVS mode)`,
    working: `affected, and the fix works: ${localText}, and every translation they need is in the kernel${probes === undefined ? " (--probe connects to each)" : notes.some((note) => note.code === "ServiceUnreachable") ? " (some Services answer nowhere, see the notes)" : " and answers"}`,
  };

  return {
    version: DOCTOR_REPORT_VERSION,
    ok,
    verdict,
    summary: summaries[verdict],
    problems,
    notes,
    node: {
      ...(facts.nodeName === undefined ? {} : { name: facts.nodeName }),
      kernel: facts.kernel,
      kubeIpvsInterface: network.ok ? network.kubeIpvsInterface : null,
      externalIPs,
      ips: nodeIPReport(facts.config, facts.node),
    },
    tools: {
      backend: facts.backend,
      nft: facts.nftVersion.ok
        ? { version: facts.nftVersion.version }
        : { error: facts.nftVersion.error },
      iptables: facts.iptablesVariant.ok
        ? { variant: facts.iptablesVariant.variant, reason: facts.iptablesVariant.reason }
        : { error: facts.iptablesVariant.error },
    },
    podTraffic: podTraffic(facts),
    source: facts.source,
    rules: summarise(facts.backend, facts.live),
    otherBackendRules: summarise(other, facts.otherLive),
    services: [...byService]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([service, mappings]) => ({ service, mappings })),
    restrictions,
    staleRules: stale,
    skipped: facts.result.skipped,
    conflicts: facts.result.conflicts,
    warnings: facts.result.warnings,
  };
}
