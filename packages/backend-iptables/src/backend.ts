/**
 * The iptables implementation of core's {@link Backend}: one `iptables-restore --noflush -w` per
 * family per sync, touching only our chains and the jumps into them.
 */
import {
  type ApplyResult,
  type Backend,
  BackendError,
  type CommandResult,
  type CommandRunner,
  ConfigError,
  type IpFamily,
  MappingTable,
  type Ruleset,
  type RulesetSettings,
  settingsOf,
  ToolNotStartedError,
  ToolRefusedError,
  validateChanges,
} from "@ipvs-node-controller/core";
import { runTool, SerialQueue } from "@ipvs-node-controller/exec";
import {
  EMPTY_TARGET,
  planTransition,
  renderRuleset,
  rulesetTargets,
  type TargetState,
} from "./render.js";
import { hasAnything, type LiveState, parseNatSave } from "./state.js";
import {
  detectIptablesVariant,
  type IptablesBinaries,
  type IptablesMode,
  type IptablesVariant,
  variantBinaries,
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
  /** Receives one line per notable event (the chosen variant, a rollback). Default: silent. */
  readonly log?: (message: string) => void;
}

/** The iptables backend, plus a way to learn which variant it drives. */
export interface IptablesBackend extends Backend {
  readonly name: "iptables";
  /** The variant in use (detected on the first call in `auto` mode, then cached). */
  variant(): Promise<IptablesVariant>;
}

const FAMILIES: readonly IpFamily[] = ["ipv4", "ipv6"];

/** The restore line that failed, quoted from the document when iptables names its number. */
function failedLine(stderr: string, document: string): string {
  const match = /line:? (\d+)/.exec(stderr);
  if (!match) return "";
  const line = document.split("\n")[Number(match[1]) - 1];
  return line === undefined ? "" : ` (line ${match[1]}: ${line})`;
}

function trimmed(text: string): string {
  return text.trim().split("\n").slice(0, 5).join(" | ");
}

/**
 * Creates the iptables backend.
 *
 * @example
 * ```ts
 * const backend = createIptablesBackend({ mode: "auto", log: console.log });
 * await backend.apply(ruleset); // { mode: "full", changedMappings: 3 }
 * await backend.verify(ruleset); // true
 * await backend.cleanup(); // true: our chains and jumps are gone
 * ```
 */
export function createIptablesBackend(options: IptablesBackendOptions = {}): IptablesBackend {
  const runner = options.runner ?? runTool;
  const log = options.log ?? (() => {});
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && mode !== "legacy" && mode !== "nft") {
    throw new ConfigError(`unknown iptables mode ${JSON.stringify(mode)}`);
  }

  let variantPromise: Promise<IptablesVariant> | undefined;
  const variant = (): Promise<IptablesVariant> => {
    if (variantPromise === undefined) {
      variantPromise =
        mode === "auto"
          ? detectIptablesVariant(runner, options.binDir).then((detection) => {
              log(`using iptables-${detection.variant}: ${detection.reason}`);
              return detection.variant;
            })
          : Promise.resolve(mode);
      // A failed detection (tools missing) is retried on the next call instead of cached.
      variantPromise.catch(() => {
        variantPromise = undefined;
      });
    }
    return variantPromise;
  };

  const binaries = async (): Promise<IptablesBinaries> => ({
    ...variantBinaries(await variant(), options.binDir),
    ...options.binaries,
  });

  async function run(
    file: string,
    args: readonly string[],
    input?: string,
  ): Promise<CommandResult> {
    try {
      return await runner(file, args, input === undefined ? undefined : { input });
    } catch (error) {
      if (error instanceof BackendError) throw error;
      throw new ToolNotStartedError(file, error instanceof Error ? error.message : String(error));
    }
  }

  async function save(family: IpFamily): Promise<string> {
    const b = await binaries();
    const file = family === "ipv4" ? b.iptablesSave : b.ip6tablesSave;
    const result = await run(file, ["-t", "nat"]);
    if (result.exitCode !== 0) {
      throw new ToolRefusedError(
        `${file} -t nat failed with exit code ${result.exitCode}: ${trimmed(result.stderr)}`,
        file,
        result.exitCode,
        result.stderr.trim(),
      );
    }
    return result.stdout;
  }

  const readState = async (family: IpFamily): Promise<LiveState> =>
    parseNatSave(await save(family));

  /**
   * The state of a family the caller did not ask for: undefined when its table cannot be read
   * (e.g. a kernel without IPv6), so that such a family never fails a sync of the other one. A
   * tool that cannot be started at all is still an error.
   */
  async function readStateIfPossible(family: IpFamily): Promise<LiveState | undefined> {
    try {
      return await readState(family);
    } catch (error) {
      // A program that cannot be started at all is never tolerated, even for IPv6.
      if (error instanceof ToolNotStartedError) throw error;
      log(`cannot read the ${family} nat table, leaving it alone: ${(error as Error).message}`);
      return undefined;
    }
  }

  async function restore(family: IpFamily, document: string): Promise<void> {
    const b = await binaries();
    const file = family === "ipv4" ? b.iptablesRestore : b.ip6tablesRestore;
    const result = await run(file, ["--noflush", "-w"], document);
    if (result.exitCode !== 0) {
      throw new ToolRefusedError(
        `${file} refused the ${family} rules, nothing was changed for ${family}` +
          `${failedLine(result.stderr, document)}: ${trimmed(result.stderr)}`,
        file,
        result.exitCode,
        result.stderr.trim(),
      );
    }
  }

  /** Puts our part of a family back the way `previous` had it, after a later family failed. */
  async function rollBack(family: IpFamily, previous: LiveState): Promise<void> {
    const target: TargetState = {
      chains: previous.chains,
      jumps: [...new Map(previous.jumps.map((j) => [j.chain, j])).values()],
    };
    try {
      await restore(family, planTransition(await readState(family), target).document);
      log(`rolled ${family} back to its previous rules`);
    } catch (error) {
      log(`could not roll ${family} back: ${(error as Error).message}`);
    }
  }

  /** Whether a family's nat table holds `target`; false when it cannot be read. */
  async function inPlace(family: IpFamily, target: TargetState): Promise<boolean> {
    try {
      return planTransition(await readState(family), target).upToDate;
    } catch {
      return false;
    }
  }

  /**
   * Each operation reads the state and then writes it, so two running at once could both plan
   * from the same state and insert a jump twice: operations on one backend run one at a time.
   */
  const queue = new SerialQueue();
  const exclusive = <T>(operation: () => Promise<T>) => queue.run(operation);
  /** What the last successful apply left, to apply a change to. */
  let applied: { table: MappingTable; settings: RulesetSettings } | undefined;

  async function applyNow(ruleset: Ruleset, full: boolean): Promise<ApplyResult> {
    const targets = rulesetTargets(ruleset);
    const plans: {
      family: IpFamily;
      live: LiveState;
      target: TargetState;
      document: string;
      upToDate: boolean;
    }[] = [];
    for (const family of FAMILIES) {
      const target = targets.get(family);
      // A family that is no longer enabled loses whatever we left there earlier.
      const live = target ? await readState(family) : await readStateIfPossible(family);
      if (live === undefined || (!target && !hasAnything(live))) continue;
      const goal = target ?? EMPTY_TARGET;
      plans.push({ family, live, target: goal, ...planTransition(live, goal) });
    }
    // The live state is compared rather than the last applied ruleset, so this also holds
    // after a restart and notices rules that someone else removed or edited.
    if (!full && plans.every((plan) => plan.upToDate)) {
      applied = { table: MappingTable.of(ruleset), settings: settingsOf(ruleset) };
      return { mode: "none", changedMappings: 0 };
    }
    const done: (typeof plans)[number][] = [];
    for (const plan of plans) {
      try {
        await restore(plan.family, plan.document);
      } catch (error) {
        // A restore killed after its commit (a time limit, the OOM killer) reports a failure for
        // rules that are in the kernel: undoing the other family then would leave one family new
        // and one old. So a family that had to change and now holds its target counts as
        // applied; any other failure changed nothing and makes the others roll back.
        if (plan.upToDate || !(await inPlace(plan.family, plan.target))) {
          // Each restore is atomic, but two families are two restores: undo the ones that went in.
          for (const earlier of done) await rollBack(earlier.family, earlier.live);
          throw error;
        }
        log(
          `${plan.family}: the restore failed but its rules are in place (${trimmed(String(error))})`,
        );
      }
      done.push(plan);
    }
    applied = { table: MappingTable.of(ruleset), settings: settingsOf(ruleset) };
    return {
      mode: "full",
      changedMappings: ruleset.families.reduce((sum, f) => sum + f.mappings.length, 0),
    };
  }

  return {
    name: "iptables",
    variant,

    render: renderRuleset,

    apply: (ruleset, applyOptions): Promise<ApplyResult> =>
      exclusive(() => applyNow(ruleset, applyOptions?.full === true)),

    applyChanges: (changes): Promise<ApplyResult> =>
      exclusive(async () => {
        validateChanges(changes);
        const next = applied?.table.clone() ?? new MappingTable();
        next.apply(changes);
        return applyNow(next.toRuleset(changes.settings), false);
      }),

    verify: (ruleset): Promise<boolean> =>
      exclusive(async () => {
        const targets = rulesetTargets(ruleset);
        for (const family of FAMILIES) {
          const target = targets.get(family);
          if (target) {
            if (!planTransition(await readState(family), target).upToDate) return false;
          } else {
            const live = await readStateIfPossible(family);
            if (live !== undefined && hasAnything(live)) return false;
          }
        }
        return true;
      }),

    cleanup: (): Promise<boolean> =>
      exclusive(async () => {
        let removed = false;
        for (const family of FAMILIES) {
          const live =
            family === "ipv4" ? await readState(family) : await readStateIfPossible(family);
          if (live === undefined || !hasAnything(live)) continue;
          await restore(family, planTransition(live, EMPTY_TARGET).document);
          removed = true;
        }
        applied = undefined;
        return removed;
      }),
  };
}
