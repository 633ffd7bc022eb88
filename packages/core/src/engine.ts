/**
 * The incremental rule engine: it holds what every Service contributes and who wins each
 * (external IP, protocol, port), and after a change reports only what changed, in time
 * proportional to the change, not to the number of Services.
 *
 * ```ts
 * const engine = new RulesetEngine({ config: { families: ["ipv4", "ipv6"] } });
 * engine.setNode(node);
 * for (const service of services) engine.setService(`${ns}/${name}`, service);
 * await backend.apply(engine.result().ruleset, { full: true }); // start-up: everything
 * engine.takeChanges(); // ...already applied: start counting from here
 * engine.setService("shop/web", updated); // a watch event
 * await backend.applyChanges(engine.takeChanges()); // only the keys it touched
 * ```
 *
 * `computeRuleset` is this engine fed all at once: after any sequence of changes, `result()`
 * equals `computeRuleset` of the Services then present.
 */
import equal from "fast-deep-equal";
import type { CanonicalIP } from "./address.js";
import { resolveConfig } from "./config.js";
import {
  beats,
  type Claim,
  type Contribution,
  contributionOf,
  sameContribution,
} from "./contribution.js";
import { type NodeInput, type ServiceInput, sameNodeInput } from "./input.js";
import { compareMappings, keyOfPort } from "./mapping.js";
import { type DerivedSettings, deriveSettings, type NodeIPs, nodeIPsOf } from "./settings.js";
import type {
  Conflict,
  CoreConfig,
  FamilyRuleset,
  IpFamily,
  Mapping,
  MappingKey,
  RulesetChanges,
  RulesetResult,
  RulesetSettings,
  SkippedEntry,
  SkipReason,
} from "./types.js";

/** Options of {@link RulesetEngine}. */
export interface RulesetEngineOptions {
  /** Options; missing ones take `DEFAULT_CONFIG`'s values. Invalid ones throw a `ConfigError`. */
  readonly config?: Partial<CoreConfig>;
  /** This node; only the NodeCIDR detection mode reads it. */
  readonly node?: NodeInput;
}

/** Counters for metrics, kept up to date without scanning anything. */
export interface RulesetStats {
  readonly mappings: Readonly<Record<IpFamily, number>>;
  readonly skipped: ReadonlyMap<SkipReason, number>;
  readonly conflicts: number;
}

/** Everything about one (external IP, protocol, port). */
interface KeyState {
  readonly ip: CanonicalIP;
  readonly portKey: number;
  /** Claims of every Service that wants this key; see {@link Candidates}. */
  candidates: Candidates;
  /** The winner's mapping as last settled: what the ruleset holds for this key. */
  published: Mapping | undefined;
  /** The losers' skip entries as last settled. */
  conflictSkips: readonly SkippedEntry[];
  /** True while waiting in `touched` for the next settle. */
  touched: boolean;
  /** True while waiting in `reportKeys` for the next takeChanges(). */
  inReport: boolean;
  /** The conflict skips the last takeChanges() reported for this key (valid while `inReport`). */
  reportedConflictSkips: readonly SkippedEntry[];
}

/** One Service key. Kept after a delete until the next takeChanges() has reported its skips. */
interface ServiceEntry {
  contribution: Contribution | undefined;
  /** The Service itself, kept only while its contribution depends on the node's IPs. */
  input: ServiceInput | undefined;
  /** The skips the last takeChanges() reported for this Service; set when first changed since. */
  reported: readonly SkippedEntry[] | undefined;
}

const NONE: readonly SkippedEntry[] = Object.freeze([]);

function skipText(entry: SkippedEntry): string {
  return `${entry.service}\u0000${entry.reason}\u0000${entry.detail}`;
}

/**
 * Entries of `next` that are not in `previous`, compared by content and counted: the same text
 * twice in `next` and once in `previous` appeared once.
 */
function appeared<T>(previous: readonly T[], next: readonly T[], text: (item: T) => string): T[] {
  if (next.length === 0) return [];
  if (previous.length === 0) return [...next];
  const before = new Map<string, number>();
  for (const item of previous) before.set(text(item), (before.get(text(item)) ?? 0) + 1);
  return next.filter((item) => {
    const left = before.get(text(item)) ?? 0;
    if (left === 0) return true;
    before.set(text(item), left - 1);
    return false;
  });
}

function compareSkipped(a: SkippedEntry, b: SkippedEntry): number {
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  if (a.detail !== b.detail) return a.detail < b.detail ? -1 : 1;
  return a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0;
}

function compareConflicts(a: Conflict, b: Conflict): number {
  return compareMappings(a, b) || (a.loser < b.loser ? -1 : a.loser > b.loser ? 1 : 0);
}

/**
 * The claims on one key. Nearly always exactly one: that claim itself, without an array around
 * it (an array of one costs 56 bytes, a tenth of a key's memory); an exact-size array only while
 * Services conflict over the key; undefined once none claims it.
 */
type Candidates = Claim | readonly Claim[] | undefined;

const isClaim = (candidates: Candidates): candidates is Claim =>
  candidates !== undefined && "mapping" in candidates;

/** Every claim of `candidates`, as an array. */
function claimsOf(candidates: Candidates): readonly Claim[] {
  if (candidates === undefined) return [];
  return isClaim(candidates) ? [candidates] : candidates;
}

function withClaim(candidates: Candidates, claim: Claim): Candidates {
  if (candidates === undefined) return claim;
  // concat allocates exactly what it returns; a push would reserve room for 16 more.
  return isClaim(candidates) ? [candidates, claim] : candidates.concat([claim]);
}

function withoutClaim(candidates: Candidates, claim: Claim): Candidates {
  if (candidates === claim) return undefined;
  if (candidates === undefined || isClaim(candidates)) return candidates;
  const index = candidates.indexOf(claim);
  if (index < 0) return candidates;
  return candidates.length === 2 ? candidates[1 - index] : candidates.toSpliced(index, 1);
}

/** The winning claim among `candidates`, if any. */
function winnerOf(candidates: Candidates): Claim | undefined {
  if (candidates === undefined || isClaim(candidates)) return candidates;
  let best = candidates[0];
  for (let i = 1; i < candidates.length; i++) {
    const candidate = candidates[i] as Claim;
    if (beats(candidate, best as Claim)) best = candidate;
  }
  return best;
}

/** Whether Services conflict over the key: more than one claims it. */
const contested = (candidates: Candidates): boolean =>
  candidates !== undefined && !isClaim(candidates);

function conflictSkip(loser: Claim, winner: Claim): SkippedEntry {
  const { externalIP, protocol, port } = loser.mapping;
  return {
    service: loser.owner,
    reason: "Conflict",
    detail: `${externalIP} ${protocol}/${port} is already claimed by the older Service ${winner.owner}`,
  };
}

/** See the module comment. */
export class RulesetEngine {
  private readonly config: CoreConfig;
  private readonly enabled: ReadonlySet<IpFamily>;
  private node: NodeInput | undefined;
  /** Kept up to date on every setNode: contributions are computed with them. */
  private nodeIPs: NodeIPs;
  private derived: DerivedSettings;
  private settingsDirty = false;
  private readonly services = new Map<string, ServiceEntry>();
  /** Key states by external IP; an IP has few ports, so a short array beats a Map per IP. */
  private readonly byIP = new Map<string, readonly KeyState[]>();
  /** Keys whose candidates changed since the last settle. */
  private touched: KeyState[] = [];

  // What changed since the last takeChanges(): the keys and Services it will have to report on.
  private reportKeys: KeyState[] = [];
  private reportServices: string[] = [];
  private settingsBase: RulesetSettings;
  private warningsBase: readonly string[] = [];

  private readonly mappingCounts: Record<IpFamily, number> = { ipv4: 0, ipv6: 0 };
  private readonly skipCounts = new Map<SkipReason, number>();
  private conflictCount = 0;

  constructor(options: RulesetEngineOptions = {}) {
    this.config = resolveConfig(options.config);
    this.enabled = new Set(this.config.families);
    this.node = options.node;
    this.nodeIPs = nodeIPsOf(this.config, this.node).ips;
    this.derived = deriveSettings(this.config, this.node);
    this.settingsBase = this.derived.settings;
  }

  /**
   * Sets the Service stored under `key` (e.g. `namespace/name`); undefined removes it. Returns
   * whether that changed anything: an update that changes nothing the core reads (a label, a
   * status condition) returns false and costs no more than computing the Service once.
   */
  setService(key: string, service: ServiceInput | undefined): boolean {
    let entry = this.services.get(key);
    const contribution =
      service === undefined
        ? undefined
        : contributionOf(service, this.config, this.enabled, this.nodeIPs);
    if (entry === undefined) {
      if (contribution === undefined) return false;
      entry = { contribution: undefined, input: undefined, reported: NONE };
      this.services.set(key, entry);
      this.reportServices.push(key);
    } else if (
      entry.contribution === undefined
        ? contribution === undefined
        : contribution !== undefined && sameContribution(entry.contribution, contribution)
    ) {
      entry.input = contribution?.usesNodeIPs ? service : undefined;
      return false;
    } else if (entry.reported === undefined) {
      entry.reported = entry.contribution?.skipped ?? NONE;
      this.reportServices.push(key);
    }
    entry.input = contribution?.usesNodeIPs ? service : undefined;
    const previous = entry.contribution;
    if (previous !== undefined) {
      for (const claim of previous.claims) {
        const state = this.stateOf(claim);
        state.candidates = withoutClaim(state.candidates, claim);
        this.touch(state);
      }
      this.count(previous.skipped, -1);
    }
    if (contribution === undefined) {
      entry.contribution = undefined;
      return true;
    }
    for (const claim of contribution.claims) {
      const state = this.stateOf(claim);
      state.candidates = withClaim(state.candidates, claim);
      this.touch(state);
    }
    this.count(contribution.skipped, 1);
    entry.contribution = contribution;
    return true;
  }

  /**
   * Sets this node's facts; a change of pod CIDRs changes the settings (a full sync). Returns
   * whether anything the core reads changed.
   */
  setNode(node: NodeInput | undefined): boolean {
    const same =
      node === undefined || this.node === undefined
        ? node === this.node
        : sameNodeInput(node, this.node);
    this.node = node;
    if (same) return false;
    this.settingsDirty = true;
    const nodeIPs = nodeIPsOf(this.config, node).ips;
    if (nodeIPs.ipv4 !== this.nodeIPs.ipv4 || nodeIPs.ipv6 !== this.nodeIPs.ipv6) {
      this.nodeIPs = nodeIPs;
      // Only Services with source ranges depend on the node's IPs, and only they kept their input.
      for (const [key, entry] of this.services) {
        if (entry.input !== undefined) this.setService(key, entry.input);
      }
    }
    return true;
  }

  /**
   * What may have changed since the previous call (or since construction): every key a Service
   * touched, with the mapping the desired state now holds for it (or in `removed`, none), whether
   * the settings changed, and the skips and warnings that appeared or went. A backend measures
   * the keys against what the kernel holds; applied to the previous {@link result}, they give the
   * current one. O(touched keys).
   */
  takeChanges(): RulesetChanges {
    this.settle();
    const mappings: Mapping[] = [];
    const removed: MappingKey[] = [];
    const skipsAppeared: SkippedEntry[] = [];
    const skipsDisappeared: SkippedEntry[] = [];
    const compareSkips = (before: readonly SkippedEntry[], now: readonly SkippedEntry[]) => {
      if (before === now) return;
      skipsAppeared.push(...appeared(before, now, skipText));
      skipsDisappeared.push(...appeared(now, before, skipText));
    };
    for (const state of this.reportKeys) {
      state.inReport = false;
      if (state.published !== undefined) mappings.push(state.published);
      else removed.push(keyOfPort(state.ip.family, state.ip.address, state.portKey));
      compareSkips(state.reportedConflictSkips, state.conflictSkips);
      if (state.candidates === undefined) this.forget(state);
    }
    this.reportKeys = [];
    for (const key of this.reportServices) {
      const entry = this.services.get(key) as ServiceEntry;
      compareSkips(entry.reported ?? NONE, entry.contribution?.skipped ?? NONE);
      entry.reported = undefined;
      if (entry.contribution === undefined) this.services.delete(key);
    }
    this.reportServices = [];

    const { settings, warnings } = this.derived;
    const settingsChanged = !equal(this.settingsBase, settings);
    const warningsAppeared = appeared(this.warningsBase, warnings, String);
    this.settingsBase = settings;
    this.warningsBase = warnings;
    return {
      mappings,
      removed,
      settingsChanged,
      settings,
      skipsAppeared,
      skipsDisappeared,
      warningsAppeared,
    };
  }

  /** The complete desired state, canonical and deterministic. O(mappings · log mappings). */
  result(): RulesetResult {
    this.settle();
    const skipped: SkippedEntry[] = [];
    const conflicts: Conflict[] = [];
    for (const { contribution } of this.services.values()) {
      if (contribution !== undefined) skipped.push(...contribution.skipped);
    }
    // Sorted by address once per IP, then by (protocol, port) within the few ports of an IP.
    const byAddress: KeyState[][] = [];
    for (const states of this.byIP.values()) {
      const published = states.filter((state) => state.published !== undefined);
      if (published.length === 0) continue;
      if (published.length > 1) published.sort((a, b) => a.portKey - b.portKey);
      byAddress.push(published);
      for (const state of published) {
        skipped.push(...state.conflictSkips);
        if (contested(state.candidates)) conflicts.push(...this.conflictsOf(state));
      }
    }
    byAddress.sort((a, b) => {
      const x = (a[0] as KeyState).ip.sortKey;
      const y = (b[0] as KeyState).ip.sortKey;
      return x < y ? -1 : x > y ? 1 : 0;
    });
    const byFamily: Record<IpFamily, Mapping[]> = { ipv4: [], ipv6: [] };
    for (const states of byAddress) {
      for (const state of states) byFamily[state.ip.family].push(state.published as Mapping);
    }
    const families: FamilyRuleset[] = this.derived.settings.families.map(
      ({ family, localPods }) => ({ family, localPods, mappings: byFamily[family] }),
    );
    return {
      ruleset: {
        masqueradeMark: this.derived.settings.masqueradeMark,
        markPodTraffic: this.derived.settings.markPodTraffic,
        families,
      },
      skipped: skipped.sort(compareSkipped),
      conflicts: conflicts.sort(compareConflicts),
      warnings: this.derived.warnings,
    };
  }

  /** Counters for metrics. */
  stats(): RulesetStats {
    this.settle();
    return {
      mappings: { ...this.mappingCounts },
      skipped: new Map(this.skipCounts),
      conflicts: this.conflictCount,
    };
  }

  /** The state of a claim's key, created when it is new. */
  private stateOf(claim: Claim): KeyState {
    const states = this.byIP.get(claim.ip.address);
    if (states !== undefined) {
      for (const state of states) if (state.portKey === claim.portKey) return state;
    }
    const state: KeyState = {
      ip: claim.ip,
      portKey: claim.portKey,
      candidates: undefined,
      published: undefined,
      conflictSkips: NONE,
      touched: false,
      inReport: false,
      reportedConflictSkips: NONE,
    };
    // Exact-size arrays, as for `candidates`: a push (and a spread) would reserve room for 16
    // more; concat and toSpliced allocate what they return.
    this.byIP.set(claim.ip.address, states === undefined ? [state] : states.concat([state]));
    return state;
  }

  /** Queues a key for the next settle, and for the next report. */
  private touch(state: KeyState): void {
    if (!state.touched) {
      state.touched = true;
      this.touched.push(state);
    }
    if (!state.inReport) {
      state.inReport = true;
      state.reportedConflictSkips = state.conflictSkips;
      this.reportKeys.push(state);
    }
  }

  /** Drops a key no Service claims any more, once it has been reported. */
  private forget(state: KeyState): void {
    const states = this.byIP.get(state.ip.address);
    if (states === undefined) return;
    const index = states.indexOf(state);
    if (index < 0) return;
    if (states.length === 1) this.byIP.delete(state.ip.address);
    else this.byIP.set(state.ip.address, states.toSpliced(index, 1));
  }

  private count(entries: readonly SkippedEntry[], sign: 1 | -1): void {
    for (const { reason } of entries) {
      const count = (this.skipCounts.get(reason) ?? 0) + sign;
      if (count === 0) this.skipCounts.delete(reason);
      else this.skipCounts.set(reason, count);
    }
  }

  private conflictsOf(state: KeyState): Conflict[] {
    const winner = winnerOf(state.candidates) as Claim;
    const { family, externalIP, protocol, port } = winner.mapping;
    return claimsOf(state.candidates)
      .filter((candidate) => candidate !== winner)
      .map((loser) => ({
        family,
        externalIP,
        protocol,
        port,
        winner: winner.owner,
        loser: loser.owner,
      }));
  }

  /** Decides the winner of every touched key and refreshes the settings if the Node changed. */
  private settle(): void {
    for (const state of this.touched) {
      state.touched = false;
      const winner = winnerOf(state.candidates);
      this.mappingCounts[state.ip.family] +=
        (winner === undefined ? 0 : 1) - (state.published === undefined ? 0 : 1);
      state.published = winner?.mapping;
      if (!contested(state.candidates) && state.conflictSkips.length === 0) continue;
      const skips = contested(state.candidates)
        ? claimsOf(state.candidates)
            .filter((candidate) => candidate !== winner)
            .map((loser) => conflictSkip(loser, winner as Claim))
        : NONE;
      this.count(state.conflictSkips, -1);
      this.count(skips, 1);
      this.conflictCount += skips.length - state.conflictSkips.length;
      state.conflictSkips = skips;
    }
    this.touched = [];
    if (this.settingsDirty) {
      this.settingsDirty = false;
      this.derived = deriveSettings(this.config, this.node);
    }
  }
}
