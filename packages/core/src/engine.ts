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
 * await backend.applyChanges(engine.takeChanges()); // only what changed
 * ```
 *
 * `computeRuleset` is this engine fed all at once: after any sequence of changes, `result()`
 * equals `computeRuleset` of the Services then present.
 */
import equal from "fast-deep-equal";
import type { CanonicalIP } from "./address.js";
import { resolveConfig } from "./config.js";
import { beats, type Claim, type Contribution, contributionOf } from "./contribution.js";
import type { NodeInput, ServiceInput } from "./input.js";
import { compareMappings, sameTranslation } from "./mapping.js";
import { type DerivedSettings, deriveSettings } from "./settings.js";
import type {
  Conflict,
  CoreConfig,
  FamilyRuleset,
  IpFamily,
  Mapping,
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
  /** Claims of every Service that wants this key; nearly always one. */
  readonly candidates: Claim[];
  /** The winner's mapping as last settled: what the ruleset holds for this key. */
  published: Mapping | undefined;
  /** The losers' skip entries as last settled. */
  conflictSkips: readonly SkippedEntry[];
}

const NONE: readonly SkippedEntry[] = Object.freeze([]);

function skipText(entry: SkippedEntry): string {
  return `${entry.service}\u0000${entry.reason}\u0000${entry.detail}`;
}

/** Entries of `next` that are not in `previous`, compared by content. */
function appeared<T>(previous: readonly T[], next: readonly T[], text: (item: T) => string): T[] {
  if (next.length === 0) return [];
  if (previous.length === 0) return [...next];
  const before = new Set(previous.map(text));
  return next.filter((item) => !before.has(text(item)));
}

function compareSkipped(a: SkippedEntry, b: SkippedEntry): number {
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  if (a.detail !== b.detail) return a.detail < b.detail ? -1 : 1;
  return a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0;
}

function compareConflicts(a: Conflict, b: Conflict): number {
  return compareMappings(a, b) || (a.loser < b.loser ? -1 : a.loser > b.loser ? 1 : 0);
}

/** The winning claim among `candidates`, if any. */
function winnerOf(candidates: readonly Claim[]): Claim | undefined {
  let best = candidates[0];
  for (let i = 1; i < candidates.length; i++) {
    const candidate = candidates[i] as Claim;
    if (beats(candidate, best as Claim)) best = candidate;
  }
  return best;
}

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
  private derived: DerivedSettings;
  private settingsDirty = false;
  private readonly services = new Map<string, Contribution>();
  /** Key states by external IP, then by (protocol, port). */
  private readonly byIP = new Map<string, Map<number, KeyState>>();
  /** Keys whose candidates changed since the last settle. */
  private readonly touched = new Set<KeyState>();

  // What was reported by the last takeChanges(), for the keys and Services touched since.
  private readonly mappingBase = new Map<KeyState, Mapping | undefined>();
  private readonly skipBase = new Map<string | KeyState, readonly SkippedEntry[]>();
  private settingsBase: RulesetSettings;
  private warningsBase: readonly string[] = [];

  private readonly mappingCounts: Record<IpFamily, number> = { ipv4: 0, ipv6: 0 };
  private readonly skipCounts = new Map<SkipReason, number>();
  private conflictCount = 0;

  constructor(options: RulesetEngineOptions = {}) {
    this.config = resolveConfig(options.config);
    this.enabled = new Set(this.config.families);
    this.node = options.node;
    this.derived = deriveSettings(this.config, this.node);
    this.settingsBase = this.derived.settings;
  }

  /** The resolved configuration. */
  get configuration(): CoreConfig {
    return this.config;
  }

  /** Sets the Service stored under `key` (e.g. `namespace/name`); undefined removes it. */
  setService(key: string, service: ServiceInput | undefined): void {
    const previous = this.services.get(key);
    if (!this.skipBase.has(key)) this.skipBase.set(key, previous?.skipped ?? NONE);
    if (previous !== undefined) {
      for (const claim of previous.claims) {
        const state = this.stateOf(claim);
        state.candidates.splice(state.candidates.indexOf(claim), 1);
        this.touched.add(state);
      }
      this.count(previous.skipped, -1);
    }
    if (service === undefined) {
      this.services.delete(key);
      return;
    }
    const contribution = contributionOf(service, this.config, this.enabled);
    for (const claim of contribution.claims) {
      const state = this.stateOf(claim);
      state.candidates.push(claim);
      this.touched.add(state);
    }
    this.count(contribution.skipped, 1);
    this.services.set(key, contribution);
  }

  /** Sets this node's facts; a change of pod CIDRs changes the settings (a full sync). */
  setNode(node: NodeInput | undefined): void {
    this.node = node;
    this.settingsDirty = true;
  }

  /** Number of Services held. */
  get size(): number {
    return this.services.size;
  }

  /**
   * What changed since the previous call (or since construction): mappings added, removed and
   * changed, whether the settings changed, and the skips and warnings that appeared or went.
   * Applying the result to the previously reported ruleset gives {@link result}'s ruleset.
   */
  takeChanges(): RulesetChanges {
    this.settle();
    const added: Mapping[] = [];
    const removed: Mapping[] = [];
    const changed: { before: Mapping; after: Mapping }[] = [];
    for (const [state, before] of this.mappingBase) {
      const after = state.published;
      if (before === undefined) {
        if (after !== undefined) added.push(after);
      } else if (after === undefined) {
        removed.push(before);
      } else if (!sameTranslation(before, after)) {
        changed.push({ before, after });
      }
      if (state.candidates.length === 0) this.byIP.get(state.ip.address)?.delete(state.portKey);
      if (this.byIP.get(state.ip.address)?.size === 0) this.byIP.delete(state.ip.address);
    }
    this.mappingBase.clear();

    const skipsAppeared: SkippedEntry[] = [];
    const skipsDisappeared: SkippedEntry[] = [];
    for (const [owner, before] of this.skipBase) {
      const now =
        typeof owner === "string"
          ? (this.services.get(owner)?.skipped ?? NONE)
          : owner.conflictSkips;
      skipsAppeared.push(...appeared(before, now, skipText));
      skipsDisappeared.push(...appeared(now, before, skipText));
    }
    this.skipBase.clear();

    const { settings, warnings } = this.derived;
    const settingsChanged = !equal(this.settingsBase, settings);
    const warningsAppeared = appeared(this.warningsBase, warnings, String);
    this.settingsBase = settings;
    this.warningsBase = warnings;
    return {
      added,
      removed,
      changed,
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
    const states: KeyState[] = [];
    const skipped: SkippedEntry[] = [];
    const conflicts: Conflict[] = [];
    for (const contribution of this.services.values()) skipped.push(...contribution.skipped);
    for (const ports of this.byIP.values()) {
      for (const state of ports.values()) {
        if (state.published === undefined) continue;
        states.push(state);
        skipped.push(...state.conflictSkips);
        if (state.candidates.length > 1) conflicts.push(...this.conflictsOf(state));
      }
    }
    states.sort((a, b) =>
      a.ip.sortKey < b.ip.sortKey ? -1 : a.ip.sortKey > b.ip.sortKey ? 1 : a.portKey - b.portKey,
    );
    const families: FamilyRuleset[] = this.derived.settings.families.map(
      ({ family, localPods }) => ({
        family,
        localPods,
        mappings: states
          .filter((state) => state.ip.family === family)
          .map((state) => state.published as Mapping),
      }),
    );
    return {
      ruleset: { masqueradeMark: this.derived.settings.masqueradeMark, families },
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
    let ports = this.byIP.get(claim.ip.address);
    if (ports === undefined) {
      ports = new Map();
      this.byIP.set(claim.ip.address, ports);
    }
    let state = ports.get(claim.portKey);
    if (state === undefined) {
      state = {
        ip: claim.ip,
        portKey: claim.portKey,
        candidates: [],
        published: undefined,
        conflictSkips: NONE,
      };
      ports.set(claim.portKey, state);
    }
    return state;
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
    return state.candidates
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
      if (!this.mappingBase.has(state)) this.mappingBase.set(state, state.published);
      if (!this.skipBase.has(state)) this.skipBase.set(state, state.conflictSkips);
      const winner = winnerOf(state.candidates);
      const family = state.ip.family;
      this.mappingCounts[family] +=
        (winner === undefined ? 0 : 1) - (state.published === undefined ? 0 : 1);
      state.published = winner?.mapping;
      const skips =
        state.candidates.length > 1
          ? state.candidates
              .filter((candidate) => candidate !== winner)
              .map((loser) => conflictSkip(loser, winner as Claim))
          : NONE;
      this.count(state.conflictSkips, -1);
      this.count(skips, 1);
      this.conflictCount += skips.length - state.conflictSkips.length;
      state.conflictSkips = skips;
    }
    this.touched.clear();
    if (this.settingsDirty) {
      this.settingsDirty = false;
      this.derived = deriveSettings(this.config, this.node);
    }
  }
}
