/**
 * The iptables backend: our own chains in the nat table of each family, written by
 * `iptables-restore --noflush -w`, which touches only the chains a document names and applies
 * each document atomically. What it supplies to the shared applier is the {@link Kernel} below.
 *
 * A full sync reads our part of the table back (to know which chains and jumps to remove) and
 * rewrites all of our chains. A change sends only the DNAT rules that change, in the bucket
 * chains they belong to (`-D`, then `-I` at the position the canonical order gives; a bucket that
 * appears or empties also gains or loses its chain and its jump), and is refused by the kernel
 * when it is not where we think. Two families are two restores: when the second fails, the first
 * is put back.
 */
import {
  type Applied,
  type Backend,
  type ChangeOutcome,
  type CommandRunner,
  createBackend,
  type Kernel,
  runTool,
  type ToolRefusedError,
} from "@ipvs-node-controller/backend";
import {
  ConfigError,
  type IpFamily,
  type LiveRules,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
} from "@ipvs-node-controller/core";
import { type FamilyChange, RuleOrder } from "./applied.js";
import { changeDocument, deleteScanCost, inverseChange, planChanges } from "./changes.js";
import { IptablesTool } from "./iptables-tool.js";
import { readIptablesLiveRules } from "./live.js";
import {
  EMPTY_TARGET,
  planTransition,
  renderRuleset,
  rulesetPlans,
  type TargetState,
} from "./render.js";
import { hasAnything, type LiveState } from "./state.js";
import type {
  IptablesBinaries,
  IptablesMode,
  IptablesVariant,
  VariantDetection,
} from "./variant.js";

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
  /** The variant in use and why it was chosen. */
  detection(): Promise<Pick<VariantDetection, "variant" | "reason">>;
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

/** One family's part of a full sync. */
interface Transition {
  readonly family: IpFamily;
  readonly live: LiveState;
  /** What the family must hold afterwards. */
  readonly target: TargetState;
  readonly document: string;
}

/** What iptables supplies to the shared applier. */
class IptablesKernel implements Kernel {
  readonly name = "iptables";
  /** The order of our rules since the last full sync; undefined before it and after removal. */
  private order: RuleOrder | undefined;

  constructor(
    private readonly tool: IptablesTool,
    private readonly log: (message: string) => void,
  ) {}

  render(ruleset: Ruleset): string {
    return renderRuleset(ruleset);
  }

  /**
   * Reads our part of each family that is enabled or may hold something of ours, and rewrites it
   * whole. Two families are two restores: if the second fails, the first is put back the way it
   * was read.
   */
  async writeFull(ruleset: Ruleset): Promise<void> {
    const plans = rulesetPlans(ruleset);
    const transitions: Transition[] = [];
    for (const family of FAMILIES) {
      const plan = plans.get(family);
      let live: LiveState | undefined;
      if (plan) live = await this.tool.readState(family);
      else if (this.mayHoldOurs(family)) live = await this.tool.readStateIfPossible(family);
      // A family that is no longer enabled loses whatever we left there earlier.
      if (live === undefined || (!plan && !hasAnything(live))) continue;
      const target = plan?.target ?? EMPTY_TARGET;
      transitions.push({ family, live, target, document: planTransition(live, target).document });
    }
    this.order = undefined;
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
      // and one old. So a family that now holds its target counts as written; any other failure
      // changed nothing and makes the others roll back.
      if (failure && !(await this.inPlace(transition))) {
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
    this.order = RuleOrder.of(plans);
  }

  /**
   * Sends one document per family the change touches; a change that would make iptables-nft
   * decode more than a rewrite costs is not sent ("rewrite").
   */
  async writeChange(diff: RulesetDiff, _applied: Applied): Promise<ChangeOutcome> {
    const order = this.order;
    if (order === undefined) return "rewrite";
    const changes = planChanges(diff);
    const tooCostly = (change: FamilyChange) => {
      const buckets = order.buckets(change.family);
      return deleteScanCost(change, buckets) > MAX_DELETE_SCAN_PER_RULE * buckets.size;
    };
    if (changes.some(tooCostly)) return "rewrite";
    const done: FamilyChange[] = [];
    let refused: ToolRefusedError | undefined;
    try {
      for (const change of changes) {
        refused = await this.tool.restore(
          change.family,
          changeDocument(change, order.buckets(change.family)),
        );
        if (refused) break;
        order.commit(change);
        done.push(change);
      }
    } catch (error) {
      // A program that could not start or was killed: undo what went in, then give up.
      await this.undo(order, done);
      this.order = undefined;
      throw error;
    }
    if (refused === undefined) return "written";
    // The kernel disagreed with our idea of its state (a rule that someone removed or edited, a
    // chain that is gone): nothing of that document was applied. Put back what another family
    // took, so that the kernel is where it was should the rewrite fail too.
    this.log(`incremental change refused, rewriting our chains: ${refused.message}`);
    await this.undo(order, done);
    return "refused";
  }

  read(settings: RulesetSettings): Promise<LiveRules> {
    return readIptablesLiveRules(this.tool, settings);
  }

  async remove(): Promise<boolean> {
    // Whatever happens next, the next write must read the kernel again.
    this.order = undefined;
    let removed = false;
    for (const family of FAMILIES) {
      const live =
        family === "ipv4"
          ? await this.tool.readState(family)
          : await this.tool.readStateIfPossible(family);
      if (live === undefined || !hasAnything(live)) continue;
      const refused = await this.tool.restore(family, planTransition(live, EMPTY_TARGET).document);
      if (refused) throw refused;
      removed = true;
    }
    return removed;
  }

  /**
   * Whether a family that is not enabled may still hold chains of ours: always before the first
   * full sync (an earlier process may have enabled it), afterwards only if the last one had it
   * enabled (a full sync removes ours from every family it does not enable).
   */
  private mayHoldOurs(family: IpFamily): boolean {
    return this.order === undefined || this.order.has(family);
  }

  /** Reverts changes the kernel took, latest first. A failure forgets the rule order. */
  private async undo(order: RuleOrder, done: readonly FamilyChange[]): Promise<void> {
    for (const change of [...done].reverse()) {
      const inverse = inverseChange(change);
      try {
        const refused = await this.tool.restore(
          change.family,
          changeDocument(inverse, order.buckets(change.family)),
        );
        if (refused) throw refused;
        order.commit(inverse);
        this.log(`rolled ${change.family} back to its previous rules`);
      } catch (error) {
        this.order = undefined;
        this.log(`could not roll ${change.family} back: ${(error as Error).message}`);
      }
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
 * await backend.applyChanges(engine.takeChanges()); // { mode: "incremental", changedMappings: 1, ... }
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
  const backend = createBackend(new IptablesKernel(tool, log));
  return {
    name: "iptables",
    variant: () => tool.variant(),
    detection: () => tool.detection(),
    render: (ruleset) => backend.render(ruleset),
    apply: (ruleset) => backend.apply(ruleset),
    applyChanges: (update) => backend.applyChanges(update),
    read: (settings) => backend.read(settings),
    verify: (ruleset) => backend.verify(ruleset),
    cleanup: () => backend.cleanup(),
  };
}
