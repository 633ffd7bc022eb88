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
  type CoreConfig,
  compareLive,
  type LiveRules,
  mappingKey,
  type NodeInput,
  ownerOf,
  parseCIDR,
  podCIDRsOf,
  type RulesetResult,
  sameSources,
} from "@ipvs-node-controller/core";
import { otherBackendOf } from "../options.js";
import { nodeIPReport, restrictedServices } from "./restrictions.js";
import {
  DOCTOR_REPORT_VERSION,
  type DoctorReport,
  type DoctorSource,
  type DoctorVerdict,
  type ExternalIPCount,
  type Finding,
  type MappingStatus,
  type PodCIDRSource,
  type PodTrafficFamily,
  type ProbeOutcome,
  type RulesSummary,
  type StaleRule,
} from "./schema.js";
import { keyText, plural, probeText } from "./text.js";

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

const sourcesText = (sources: readonly string[] | undefined) =>
  sources === undefined
    ? "every source"
    : sources.length === 0
      ? "no source"
      : `only ${sources.join(", ")}`;

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
  // The comparison a backend's verify makes. Stale: a key no Service wants, or one listed a
  // second time (only the first of two rules for one key ever acts).
  const comparison = compareLive(wanted, live?.mappings ?? []);
  const missing = new Set(comparison.missing.map(mappingKey));
  const differing = new Map(
    comparison.differing.map((pair) => [mappingKey(pair.wanted), pair.live]),
  );
  const stale = comparison.unwanted.map(
    (rule): StaleRule => ({ ...rule, local: isLocal(rule.externalIP) }),
  );

  const probes = facts.probes;
  const problemsOrNotes = (active: boolean) => (active ? problems : notes);
  const byService = new Map<string, MappingStatus[]>();
  for (const mapping of wanted) {
    const id = mappingKey(mapping);
    // A rule that differs only in the owner its comment names translates as wanted.
    const found = differing.get(id);
    const rule: MappingStatus["rule"] =
      live === undefined
        ? "unknown"
        : missing.has(id)
          ? "missing"
          : found === undefined
            ? "present"
            : found.clusterIP !== mapping.clusterIP
              ? "wrong-target"
              : !sameSources(found.allowedSources, mapping.allowedSources)
                ? "wrong-sources"
                : "present";
    const owner = ownerOf(mapping);
    const key = keyText(mapping);
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
    const text = `a rule (${owner}) translates ${keyText(rule)} to ${rule.clusterIP}, which no Service wants`;
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
  const localText = `${localIPs} of ${plural(totalIPs, "external IP")} ${localIPs === 1 || totalIPs === 1 ? "is a local address" : "are local addresses"} of this node (${ipvs})`;
  const summaries: Record<DoctorVerdict, string> = {
    broken: `broken: ${plural(problems.length, "problem")}; ${localText}`,
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
