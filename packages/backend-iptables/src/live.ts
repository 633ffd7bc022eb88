/**
 * Reading our rules back for a diagnosis: which translations the nat tables hold, and how the
 * rest of our chains and jumps differs from what a sync writes. Reads only, and never through a
 * call that creates a table (see `legacyTables`).
 */
import {
  cidrRange,
  compareMappings,
  type IpFamily,
  type L4Protocol,
  type LiveMapping,
  type LiveRules,
  type LocalPodMatch,
  parseCIDR,
  parseIP,
  quote,
  type RulesetSettings,
} from "@ipvs-node-controller/core";
import { bucketOf, dnatKey } from "./dnat-order.js";
import type { IptablesTool } from "./iptables-tool.js";
import {
  BUCKET_CHAIN_PREFIX,
  bucketChain,
  bucketJump,
  CHAINS,
  familyTarget,
  SOURCE_CHAIN_PREFIX,
} from "./render.js";
import { EMPTY_STATE, type LiveState, normalizeSpec, tokenize } from "./state.js";
import type { IptablesVariant } from "./variant.js";

const FAMILIES: readonly IpFamily[] = ["ipv4", "ipv6"];
const PROTOCOLS: ReadonlySet<string> = new Set<L4Protocol>(["tcp", "udp", "sctp"]);

/** `ADDRESS:PORT` or `[ADDRESS]:PORT`, as `--to-destination` prints a translation target. */
const DESTINATION = /^(?:\[([0-9a-f:.]+)\]|([0-9.]+)):(\d{1,5})$/i;

function splitAddress(text: string, family: IpFamily): string | undefined {
  const [address, mask, ...rest] = text.split("/");
  if (rest.length > 0 || mask !== (family === "ipv4" ? "32" : "128")) return undefined;
  const parsed = parseIP(address);
  return parsed.ok && parsed.value.family === family ? parsed.value.address : undefined;
}

/** A rule's options and their values; undefined when an option repeats or lacks a value. */
function ruleFields(spec: string): Map<string, string> | undefined {
  const words = tokenize(spec);
  const fields = new Map<string, string>();
  for (let i = 0; i < words.length; i += 2) {
    const option = words[i] as string;
    const value = words[i + 1];
    if (value === undefined) return undefined;
    if (option === "-m") {
      if (value !== "comment" && !PROTOCOLS.has(value)) return undefined;
      continue;
    }
    if (fields.has(option)) return undefined;
    fields.set(option, value);
  }
  return fields;
}

/** Whether `fields` holds exactly the `required` options, and `optional` ones at most. */
function hasExactly(
  fields: ReadonlyMap<string, string>,
  required: readonly string[],
  optional: readonly string[] = [],
): boolean {
  const known = new Set([...required, ...optional]);
  return (
    required.every((option) => fields.has(option)) &&
    [...fields.keys()].every((option) => known.has(option))
  );
}

/** The cluster IP of `--to-destination ADDRESS:PORT`, if it is of `family` and keeps `port`. */
function destinationOf(
  text: string | undefined,
  family: IpFamily,
  port: number,
): string | undefined {
  const destination = DESTINATION.exec(text ?? "");
  const cluster = parseIP(destination?.[1] ?? destination?.[2]);
  return cluster.ok && cluster.value.family === family && Number(destination?.[3]) === port
    ? cluster.value.address
    : undefined;
}

/** The part of a bucket rule that matches packets: external IP, protocol, port and the owner. */
type BucketMatch = Pick<LiveMapping, "family" | "externalIP" | "protocol" | "port" | "owner">;

function bucketMatch(
  fields: ReadonlyMap<string, string>,
  family: IpFamily,
): BucketMatch | undefined {
  const externalIP = splitAddress(fields.get("-d") as string, family);
  const protocol = fields.get("-p") as string;
  const portText = fields.get("--dport") as string;
  const port = Number(portText);
  if (
    externalIP === undefined ||
    !PROTOCOLS.has(protocol) ||
    !/^\d{1,5}$/.test(portText) ||
    port < 1 ||
    port > 65535
  ) {
    return undefined;
  }
  return {
    family,
    externalIP,
    protocol: protocol as L4Protocol,
    port,
    owner: fields.get("--comment") ?? "",
  };
}

/**
 * Reads one rule of a DNAT bucket chain (the text after `-A IPVSNC-DNAT-0A `) as a translation,
 * or returns undefined for anything a sync would not write: another match, another target, a
 * different port on the way out.
 */
export function parseDnatRule(spec: string, family: IpFamily): LiveMapping | undefined {
  const fields = ruleFields(spec);
  if (
    !fields ||
    !hasExactly(fields, ["-d", "-p", "--dport", "-j", "--to-destination"], ["--comment"])
  )
    return undefined;
  if (fields.get("-j") !== "DNAT") return undefined;
  const match = bucketMatch(fields, family);
  const clusterIP = match && destinationOf(fields.get("--to-destination"), family, match.port);
  return match && clusterIP ? { ...match, clusterIP } : undefined;
}

/**
 * Reads a bucket rule that goes to a source chain (a restricted mapping) with that chain's rules:
 * the translation with the sources it admits. Undefined when the rule is not such a goto; a
 * `problem` when it is one but its source chain is not what a sync writes.
 */
function parseRestrictedRule(
  spec: string,
  family: IpFamily,
  chains: LiveState["chains"],
): { mapping?: LiveMapping; problem?: string } | undefined {
  const fields = ruleFields(spec);
  if (!fields || !hasExactly(fields, ["-d", "-p", "--dport", "-g"], ["--comment"]))
    return undefined;
  const chain = fields.get("-g") as string;
  const match = bucketMatch(fields, family);
  if (match === undefined || !chain.startsWith(SOURCE_CHAIN_PREFIX)) return undefined;
  const rules = chains.get(chain);
  if (rules === undefined || rules.length === 0) {
    return {
      problem: `${family}: the translation of ${match.externalIP} ${match.protocol}/${match.port} goes to ${chain}, which ${rules === undefined ? "does not exist" : "is empty"}: it translates nothing`,
    };
  }
  const sources: string[] = [];
  const clusterIPs = new Set<string>();
  for (const rule of rules) {
    const ruleOptions = ruleFields(rule);
    const source = ruleOptions?.get("-s");
    const parsed = parseCIDR(source);
    const clusterIP =
      ruleOptions &&
      hasExactly(ruleOptions, ["-s", "-p", "-j", "--to-destination"]) &&
      ruleOptions.get("-p") === match.protocol &&
      ruleOptions.get("-j") === "DNAT"
        ? destinationOf(ruleOptions.get("--to-destination"), family, match.port)
        : undefined;
    if (!parsed.ok || parsed.value.family !== family || clusterIP === undefined) {
      return {
        problem: `${family}: a rule in ${chain} is not a translation of an admitted source: ${quote(rule)}`,
      };
    }
    sources.push(parsed.value.cidr);
    clusterIPs.add(clusterIP);
  }
  if (clusterIPs.size > 1) {
    return {
      problem: `${family}: the rules of ${chain} translate to ${clusterIPs.size} cluster IPs`,
    };
  }
  const order = (cidr: string) => cidrRange(cidr)?.first ?? 0n;
  sources.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  return {
    mapping: { ...match, clusterIP: [...clusterIPs][0] as string, allowedSources: sources },
  };
}

function sameRules(live: readonly string[], expected: readonly string[]): boolean {
  return (
    live.length === expected.length &&
    live.every((spec, i) => normalizeSpec(spec) === normalizeSpec(expected[i] as string))
  );
}

/** `IPVSNC-DNAT-0A` → `0a`; undefined for a name that no bucket has. */
function bucketOfChain(name: string): string | undefined {
  const suffix = name.slice(BUCKET_CHAIN_PREFIX.length);
  return name.startsWith(BUCKET_CHAIN_PREFIX) && /^[0-9A-F]{2}$/.test(suffix)
    ? suffix.toLowerCase()
    : undefined;
}

/** The bucket a rule of IPVSNC-DNAT sends packets to, if it is exactly the jump a sync writes. */
function bucketOfJump(spec: string, family: IpFamily): string | undefined {
  const bucket = bucketOfChain(tokenize(spec).at(-1) ?? "");
  return bucket !== undefined && normalizeSpec(spec) === normalizeSpec(bucketJump(family, bucket))
    ? bucket
    : undefined;
}

/**
 * The translations in one family's DNAT chains, and how the buckets differ from what a sync
 * writes: a rule in IPVSNC-DNAT that is not a jump a sync writes, a jump repeated or out of
 * order, a bucket that nothing jumps to (its translations are never reached), a translation in a
 * bucket its address does not belong to (no packet it could translate reaches it). Every
 * translation is listed wherever it is, as the rest of the read-back does with chains that lost
 * their jump: whether it takes effect is what the problems say. An empty bucket is not a problem
 * of its own: it changes no packet, and the translation that went missing from it is named by the
 * comparison with the Services.
 */
function familyTranslations(
  family: IpFamily,
  state: LiveState,
): { mappings: LiveMapping[]; problems: string[] } {
  const mappings: LiveMapping[] = [];
  const problems: string[] = [];
  const jumps: string[] = [];
  for (const spec of state.chains.get(CHAINS.dnat) ?? []) {
    const bucket = bucketOfJump(spec, family);
    if (bucket !== undefined) {
      jumps.push(bucket);
      continue;
    }
    const found = parseDnatRule(spec, family);
    if (found) {
      // What versions before the buckets wrote: it still translates, but a sync moves it.
      mappings.push(found);
      problems.push(
        `${family}: ${CHAINS.dnat} holds a translation itself instead of a jump into its bucket: ${quote(spec)}`,
      );
    } else {
      problems.push(
        `${family}: a rule in ${CHAINS.dnat} is not a jump into a bucket: ${quote(spec)}`,
      );
    }
  }
  const jumped = new Set(jumps);
  const referenced = new Set<string>();
  for (const bucket of jumped) {
    const count = jumps.filter((candidate) => candidate === bucket).length;
    if (count > 1) {
      problems.push(`${family}: ${count} jumps from ${CHAINS.dnat} into ${bucketChain(bucket)}`);
    }
  }
  if (jumps.some((bucket, i) => i > 0 && bucket < (jumps[i - 1] as string))) {
    problems.push(`${family}: the jumps in ${CHAINS.dnat} are not in the order of their buckets`);
  }
  for (const [name, rules] of state.chains) {
    const bucket = bucketOfChain(name);
    if (bucket === undefined) continue;
    if (!jumped.has(bucket) && rules.length > 0) {
      problems.push(
        `${family}: nothing jumps from ${CHAINS.dnat} into ${name}: its rules are never reached`,
      );
    }
    for (const spec of rules) {
      const restricted = parseRestrictedRule(spec, family, state.chains);
      if (restricted?.problem) problems.push(restricted.problem);
      if (restricted) {
        const target = tokenize(spec).at(-1) as string;
        referenced.add(target);
        if (restricted.mapping === undefined) continue;
      }
      const found = restricted?.mapping ?? parseDnatRule(spec, family);
      if (found === undefined) {
        problems.push(`${family}: a rule in ${name} is not a translation: ${quote(spec)}`);
        continue;
      }
      mappings.push(found);
      const belongs = bucketOf(dnatKey(found));
      if (belongs !== bucket) {
        problems.push(
          `${family}: ${name} holds a translation of ${found.externalIP}, whose packets go to ${bucketChain(belongs)}: ${quote(spec)}`,
        );
      }
    }
  }
  for (const name of state.chains.keys()) {
    if (name.startsWith(SOURCE_CHAIN_PREFIX) && !referenced.has(name)) {
      problems.push(`${family}: no translation goes to ${name}: its rules are never reached`);
    }
  }
  return { mappings, problems };
}

/** How one family's chains and jumps differ from what a sync of `localPods` and `mark` writes. */
function familyProblems(
  family: IpFamily,
  state: LiveState,
  localPods: LocalPodMatch,
  settings: RulesetSettings,
): string[] {
  const problems: string[] = [];
  const target = familyTarget({ family, localPods, mappings: [] }, settings);
  for (const jump of target.jumps) {
    const live = state.jumps.filter((candidate) => candidate.chain === jump.chain);
    const only = live[0];
    if (only === undefined) {
      problems.push(`${family}: no jump from nat ${jump.chain} into ${CHAIN_OF[jump.chain]}`);
    } else if (live.length > 1) {
      problems.push(`${family}: ${live.length} jumps from nat ${jump.chain} into our chains`);
    } else if (only.index !== 0) {
      problems.push(
        `${family}: the jump from nat ${jump.chain} is rule ${only.index + 1}, not the first`,
      );
    } else if (normalizeSpec(only.spec) !== normalizeSpec(jump.spec)) {
      problems.push(`${family}: the jump from nat ${jump.chain} is not the one a sync writes`);
    }
  }
  const jumpChains = new Set(target.jumps.map((jump) => jump.chain));
  for (const jump of state.jumps) {
    if (!jumpChains.has(jump.chain)) {
      problems.push(`${family}: nat ${jump.chain} jumps into our chains, which a sync never does`);
    }
  }
  for (const [name, rules] of target.chains) {
    const live = state.chains.get(name);
    if (live === undefined) problems.push(`${family}: chain ${name} is missing`);
    else if (name !== CHAINS.dnat && !sameRules(live, rules)) {
      problems.push(`${family}: chain ${name} holds other rules than a sync writes`);
    }
  }
  for (const name of state.chains.keys()) {
    // Bucket and source chains follow the translations: see familyTranslations.
    const translations = bucketOfChain(name) !== undefined || name.startsWith(SOURCE_CHAIN_PREFIX);
    if (!target.chains.has(name) && !translations)
      problems.push(`${family}: chain ${name} is not one a sync creates`);
  }
  return problems;
}

/** The chain each built-in chain's jump leads to. */
const CHAIN_OF: Readonly<Record<string, string>> = {
  PREROUTING: CHAINS.prerouting,
  OUTPUT: CHAINS.output,
};

/**
 * What our part of each family's nat table holds, compared with a full sync of `settings`. Pure:
 * the parsing half of {@link readIptablesLiveRules}. A family missing from `states` holds nothing.
 */
export function iptablesLiveRules(
  states: ReadonlyMap<IpFamily, LiveState>,
  settings: RulesetSettings,
  tool = "iptables-save",
): LiveRules {
  const mappings: LiveMapping[] = [];
  const problems: string[] = [];
  let present = false;
  for (const family of FAMILIES) {
    const state = states.get(family) ?? EMPTY_STATE;
    const anything = state.chains.size > 0 || state.jumps.length > 0;
    present ||= anything;
    const translations = familyTranslations(family, state);
    mappings.push(...translations.mappings);
    problems.push(...translations.problems);
    if (!anything) continue;
    const enabled = settings.families.find((candidate) => candidate.family === family);
    if (enabled === undefined) {
      problems.push(`${family}: our chains are in the nat table although ${family} is not enabled`);
    } else {
      problems.push(...familyProblems(family, state, enabled.localPods, settings));
    }
  }
  return { backend: "iptables", tool, present, mappings: mappings.sort(compareMappings), problems };
}

/** {@link LiveRules} of the iptables backend, with the variant they were read from. */
export interface IptablesLiveRules extends LiveRules {
  readonly backend: "iptables";
  readonly variant: IptablesVariant;
}

/**
 * Reads our chains and jumps back from both families' nat tables and compares them with a full
 * sync of `settings`. Changes nothing: the variant is detected without creating a table, and a
 * legacy nat table that does not exist is not read (reading it would create it). A family that is
 * not enabled is read when possible (rules left there are reported), and skipped when its tool
 * fails, e.g. on a kernel without IPv6. Throws `ToolNotStartedError` / `ToolRefusedError`.
 */
export async function readIptablesLiveRules(
  tool: IptablesTool,
  settings: RulesetSettings,
): Promise<IptablesLiveRules> {
  const variant = await tool.variant();
  const states = new Map<IpFamily, LiveState>();
  for (const family of FAMILIES) {
    const enabled = settings.families.some((candidate) => candidate.family === family);
    const state = enabled ? await tool.readState(family) : await tool.readStateIfPossible(family);
    if (state !== undefined) states.set(family, state);
  }
  const binaries = await tool.binaries();
  return {
    ...iptablesLiveRules(states, settings, binaries.iptablesSave),
    backend: "iptables",
    variant,
  };
}
