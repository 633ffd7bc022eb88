/**
 * The iptables implementation of core's {@link Backend}: our own chains in the nat table of each
 * family, written by `iptables-restore --noflush -w`, which touches only the chains a document
 * names and applies each document atomically.
 *
 * A full sync reads our part of the table back and rewrites all of our chains. A change sends only
 * the DNAT rules that change, in the bucket chains they belong to (`-D`, then `-I` at the position
 * the canonical order gives; a bucket that appears or empties also gains or loses its chain and
 * its jump), trusting the state of the last restore between verifies, and falls back to a full
 * sync when the kernel refuses it. Two families are two restores: when the second fails, the first is put back.
 */
import {
  type ApplyResult,
  type Backend,
  type CommandRunner,
  ConfigError,
  diffTable,
  type IpFamily,
  MappingTable,
  type Ruleset,
  type RulesetDiff,
  type ToolRefusedError,
  validateChanges,
  validateRuleset,
} from "@ipvs-node-controller/core";
import { runTool, SerialQueue } from "@ipvs-node-controller/exec";
import { AppliedState, type FamilyChange, sameSettings } from "./applied.js";
import {
  changeDocument,
  changedMappings,
  deleteScanCost,
  inverseChange,
  planChanges,
} from "./changes.js";
import { IptablesTool } from "./iptables-tool.js";
import {
  EMPTY_TARGET,
  type FamilyPlan,
  planTransition,
  renderRuleset,
  rulesetPlans,
  type TargetState,
} from "./render.js";
import { hasAnything, type LiveState } from "./state.js";
import type { IptablesBinaries, IptablesMode, IptablesVariant } from "./variant.js";

/** Options of {@link createIptablesBackend}. */
export interface IptablesBackendOptions {
  /**
   * Which iptables to drive. `auto` (default) detects the host's variant on first use, see
   * {@link detectIptablesVariant}; `legacy` and `nft` force one.
   */
  readonly mode?: IptablesMode;
  /** Directory holding the `iptables-<variant>-*` tools; default: looked up on `PATH`. */
  readonly binDir?: string;
  /** Explicit program paths; each one given overrides the variant's default. */
  readonly binaries?: Partial<IptablesBinaries>;
  /**
   * How programs are started. Default: `runTool` (this network namespace, inherited environment,
   * so `XTABLES_LOCKFILE` is honoured).
   */
  readonly runner?: CommandRunner;
  /**
   * Receives one line per notable event (the chosen variant, a refused change, a rollback).
   * Default: silent.
   */
  readonly log?: (message: string) => void;
}

/** The iptables backend, plus a way to learn which variant it drives. */
export interface IptablesBackend extends Backend {
  readonly name: "iptables";
  /** The variant in use (detected on the first call in `auto` mode, then cached). */
  variant(): Promise<IptablesVariant>;
}

const FAMILIES: readonly IpFamily[] = ["ipv4", "ipv6"];

/**
 * A change is sent as a full sync instead when finding the rules it deletes would make
 * iptables-nft decode more than this many rules per rule of the family (see `deleteScanCost`).
 *
 * iptables-nft finds the rule of each `-D CHAIN spec` by decoding the chain's rules one by one
 * until one matches (about 0.8 µs per rule), on top of reading every rule of each chain a
 * document edits (about 11 µs per rule), while a rewrite costs about 35 µs per rule of the
 * family. In CPU time, with all 10,000 rules of a family in one bucket (one address, many
 * ports), 10 deletes took 0.21 to 0.26 s, 30 took 0.36 to 0.49 s and a rewrite 0.37 to 0.40 s;
 * with 2,000, 20 deletes took 0.05 to 0.07 s, 40 took 0.09 to 0.11 s and a rewrite 0.07 s. Spread
 * over 250 buckets of 40, 3,000 deletes took 0.22 to 0.29 s against 0.29 to 0.33 s for a rewrite.
 * So about 32 deletes from a bucket that holds the whole family cost what a rewrite costs, and
 * spread deletes hardly ever reach that. Buckets that empty are flushed and cost nothing here.
 */
export const MAX_DELETE_SCAN_PER_RULE = 32;
const NOTHING: ApplyResult = { mode: "none", changedMappings: 0 };

/** One family's part of a full sync. */
interface Transition {
  readonly family: IpFamily;
  readonly live: LiveState;
  /** What the family must hold afterwards. */
  readonly target: TargetState;
  readonly upToDate: boolean;
  readonly document: string;
}

/** See the module comment; create one with {@link createIptablesBackend}. */
class IptablesNatBackend implements IptablesBackend {
  readonly name = "iptables";
  /**
   * Each operation plans from a state and then writes, so two running at once could both plan
   * from the same state and insert a jump twice: operations run one at a time.
   */
  private readonly queue = new SerialQueue();
  /** Undefined before the first successful sync of this instance, and after cleanup. */
  private applied: AppliedState | undefined;

  constructor(
    private readonly tool: IptablesTool,
    private readonly log: (message: string) => void,
  ) {}

  variant(): Promise<IptablesVariant> {
    return this.tool.variant();
  }

  render(ruleset: Ruleset): string {
    return renderRuleset(ruleset);
  }

  /**
   * The first apply of an instance, and every `full` one, reads our chains back and rewrites what
   * differs (nothing, without `full`, when the kernel already matches: this holds after a restart).
   * Later ones diff `ruleset` against the applied state in memory and send only the change.
   */
  apply(ruleset: Ruleset, options?: { readonly full?: boolean }): Promise<ApplyResult> {
    return this.queue.run(async () => {
      const full = options?.full === true;
      const applied = this.applied;
      if (full || applied === undefined || !applied.trusted) {
        return this.fullSync(ruleset, rulesetPlans(ruleset), full);
      }
      validateRuleset(ruleset);
      const diff = diffTable(applied.table, applied.settings, ruleset);
      return this.change(diff, () => ruleset);
    });
  }

  applyChanges(changes: RulesetDiff): Promise<ApplyResult> {
    return this.queue.run(async () => {
      validateChanges(changes);
      return this.change(changes, () =>
        (this.applied?.table ?? new MappingTable()).rulesetAfter(changes),
      );
    });
  }

  verify(ruleset: Ruleset): Promise<boolean> {
    return this.queue.run(async () => {
      const plans = rulesetPlans(ruleset);
      for (const family of FAMILIES) {
        const plan = plans.get(family);
        let matches: boolean;
        if (plan) {
          matches = planTransition(await this.tool.readState(family), plan.target).upToDate;
        } else if (this.mayHoldOurs(family)) {
          const live = await this.tool.readStateIfPossible(family);
          matches = live === undefined || !hasAnything(live);
        } else {
          continue;
        }
        if (!matches) {
          // Drift: whatever the caller does next must not trust what we think we applied.
          if (this.applied) this.applied.trusted = false;
          return false;
        }
      }
      return true;
    });
  }

  cleanup(): Promise<boolean> {
    return this.queue.run(async () => {
      // Whatever happens next, the next apply must read the kernel again.
      this.applied = undefined;
      let removed = false;
      for (const family of FAMILIES) {
        const live =
          family === "ipv4"
            ? await this.tool.readState(family)
            : await this.tool.readStateIfPossible(family);
        if (live === undefined || !hasAnything(live)) continue;
        const refused = await this.tool.restore(
          family,
          planTransition(live, EMPTY_TARGET).document,
        );
        if (refused) throw refused;
        removed = true;
      }
      return removed;
    });
  }

  /**
   * Whether a family that is not enabled may still hold chains of ours: always before this
   * instance's first sync (an earlier process may have enabled it), afterwards only if the last
   * sync had it enabled (a full sync removes ours from every family it does not enable).
   */
  private mayHoldOurs(family: IpFamily): boolean {
    return this.applied === undefined || this.applied.has(family);
  }

  /**
   * Applies `diff` to the applied state, rule by rule; nothing applied yet, a settings change, an
   * untrusted state or a change too large to be cheaper than a rewrite needs the whole ruleset
   * instead, which `next` builds only then.
   */
  private async change(diff: RulesetDiff, next: () => Ruleset): Promise<ApplyResult> {
    const applied = this.applied;
    if (
      applied === undefined ||
      !applied.trusted ||
      diff.settingsChanged ||
      !sameSettings(applied.settings, diff.settings)
    ) {
      const ruleset = next();
      return this.fullSync(ruleset, rulesetPlans(ruleset), false);
    }
    const changes = planChanges(applied, diff);
    if (changes.length === 0) return NOTHING;
    const tooCostly = (change: FamilyChange) => {
      const buckets = applied.buckets(change.family);
      return deleteScanCost(change, buckets) > MAX_DELETE_SCAN_PER_RULE * buckets.size;
    };
    if (changes.some(tooCostly)) {
      const ruleset = next();
      return this.fullSync(ruleset, rulesetPlans(ruleset), false);
    }
    const done: FamilyChange[] = [];
    let refused: ToolRefusedError | undefined;
    try {
      for (const change of changes) {
        const document = changeDocument(change, applied.buckets(change.family));
        refused = await this.tool.restore(change.family, document);
        if (refused) break;
        applied.commit(change);
        done.push(change);
      }
    } catch (error) {
      // A program that could not start or was killed: undo what went in, then give up.
      await this.undo(applied, done);
      applied.trusted = false;
      throw error;
    }
    if (refused) {
      // The kernel disagreed with our idea of its state (a rule that someone removed or edited, a
      // chain that is gone): nothing of that document was applied. Put back what another family
      // took, so that the kernel is where it was should the rewrite fail too, and rewrite all.
      this.log(`incremental change refused, rewriting our chains: ${refused.message}`);
      await this.undo(applied, done);
      const ruleset = next();
      return this.fullSync(ruleset, rulesetPlans(ruleset), false);
    }
    return { mode: "incremental", changedMappings: changedMappings(changes) };
  }

  /** Reverts changes the kernel took, latest first. A failure leaves the state untrusted. */
  private async undo(applied: AppliedState, done: readonly FamilyChange[]): Promise<void> {
    for (const change of [...done].reverse()) {
      const inverse = inverseChange(change);
      try {
        const refused = await this.tool.restore(
          change.family,
          changeDocument(inverse, applied.buckets(change.family)),
        );
        if (refused) throw refused;
        applied.commit(inverse);
        this.log(`rolled ${change.family} back to its previous rules`);
      } catch (error) {
        applied.trusted = false;
        this.log(`could not roll ${change.family} back: ${(error as Error).message}`);
      }
    }
  }

  /**
   * Reads our part of each family that is enabled or may hold something of ours, and rewrites
   * the families that differ (all of them when `force`d). Two families are two restores: if the
   * second fails, the first is put back the way it was read.
   */
  private async fullSync(
    ruleset: Ruleset,
    plans: ReadonlyMap<IpFamily, FamilyPlan>,
    force: boolean,
  ): Promise<ApplyResult> {
    try {
      const transitions: Transition[] = [];
      for (const family of FAMILIES) {
        const plan = plans.get(family);
        let live: LiveState | undefined;
        if (plan) live = await this.tool.readState(family);
        else if (this.mayHoldOurs(family)) live = await this.tool.readStateIfPossible(family);
        // A family that is no longer enabled loses whatever we left there earlier.
        if (live === undefined || (!plan && !hasAnything(live))) continue;
        const target = plan?.target ?? EMPTY_TARGET;
        transitions.push({ family, live, target, ...planTransition(live, target) });
      }
      if (!force && transitions.every((transition) => transition.upToDate)) {
        this.applied = AppliedState.of(ruleset, plans);
        return NOTHING;
      }
      const done: Transition[] = [];
      for (const transition of transitions) {
        let failure: Error | undefined;
        try {
          failure = await this.tool.restore(transition.family, transition.document);
        } catch (error) {
          failure = error as Error;
        }
        // A restore killed after its commit (a time limit, the OOM killer) reports a failure for
        // rules that are in the kernel: undoing the other family then would leave one family new
        // and one old. So a family that had to change and now holds its target counts as
        // applied; any other failure changed nothing and makes the others roll back.
        if (failure && (transition.upToDate || !(await this.inPlace(transition)))) {
          for (const earlier of done) await this.rollBack(earlier.family, earlier.live);
          throw failure;
        }
        if (failure) {
          this.log(
            `${transition.family}: the restore failed but its rules are in place (${failure.message})`,
          );
        }
        done.push(transition);
      }
      this.applied = AppliedState.of(ruleset, plans);
      return {
        mode: "full",
        changedMappings: ruleset.families.reduce((sum, f) => sum + f.mappings.length, 0),
      };
    } catch (error) {
      if (this.applied) this.applied.trusted = false;
      throw error;
    }
  }

  /** Whether a family's nat table now holds what `transition` was to write; false when unreadable. */
  private async inPlace(transition: Transition): Promise<boolean> {
    try {
      const live = await this.tool.readState(transition.family);
      return planTransition(live, transition.target).upToDate;
    } catch {
      return false;
    }
  }

  /** Puts our part of a family back the way `previous` had it, after a later family failed. */
  private async rollBack(family: IpFamily, previous: LiveState): Promise<void> {
    const target: TargetState = {
      chains: previous.chains,
      jumps: [...new Map(previous.jumps.map((j) => [j.chain, j])).values()],
    };
    try {
      const refused = await this.tool.restore(
        family,
        planTransition(await this.tool.readState(family), target).document,
      );
      if (refused) throw refused;
      this.log(`rolled ${family} back to its previous rules`);
    } catch (error) {
      this.log(`could not roll ${family} back: ${(error as Error).message}`);
    }
  }
}

/**
 * Creates the iptables backend.
 *
 * @example
 * ```ts
 * const backend = createIptablesBackend({ mode: "auto", log: console.log });
 * await backend.apply(ruleset); // { mode: "full", changedMappings: 3 }
 * await backend.applyChanges(engine.takeChanges()); // { mode: "incremental", changedMappings: 1 }
 * await backend.verify(ruleset); // true
 * await backend.cleanup(); // true: our chains and jumps are gone
 * ```
 */
export function createIptablesBackend(options: IptablesBackendOptions = {}): IptablesBackend {
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && mode !== "legacy" && mode !== "nft") {
    throw new ConfigError(`unknown iptables mode ${JSON.stringify(mode)}`);
  }
  const log = options.log ?? (() => {});
  const tool = new IptablesTool({
    mode,
    binDir: options.binDir,
    binaries: options.binaries,
    runner: options.runner ?? runTool,
    log,
  });
  return new IptablesNatBackend(tool, log);
}
