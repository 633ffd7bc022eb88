/**
 * The shared applier: the one implementation of {@link Backend} on top of a {@link Kernel}. It
 * keeps what the kernel holds (the only record of it), whether that can be trusted, and how many
 * writes happened, so that both backends decide alike between a change and a full sync.
 */
import {
  isEmptyDiff,
  type LiveRules,
  liveMatches,
  MappingTable,
  type Ruleset,
  type RulesetSettings,
  type RulesetUpdate,
  sameSettings,
  settingsOf,
  validateRuleset,
  validateUpdate,
} from "@ipvs-node-controller/core";
import type { Applied, ApplyResult, Backend, Kernel } from "./contract.js";
import { SerialQueue } from "./serial-queue.js";

const NOTHING: ApplyResult = { mode: "none", changedMappings: 0 };

/** See the module comment; create one with {@link createBackend}. */
class Applier implements Backend {
  private readonly queue = new SerialQueue();
  /** What the kernel holds; undefined before the first full sync and after cleanup. */
  private applied: Applied | undefined;
  /**
   * False once the kernel may hold something else: a verify found drift, or a write failed half
   * way. The next change is then a full sync rather than a change on top of what is not there.
   */
  private trusted = false;
  /** Counts the writes, so that a verify can tell whether one overlapped its read. */
  private generation = 0;

  constructor(private readonly kernel: Kernel) {}

  get name(): string {
    return this.kernel.name;
  }

  render(ruleset: Ruleset): string {
    validateRuleset(ruleset);
    return this.kernel.render(ruleset);
  }

  apply(ruleset: Ruleset): Promise<ApplyResult> {
    return this.queue.run(async () => {
      validateRuleset(ruleset);
      return this.fullSync(ruleset);
    });
  }

  applyChanges(update: RulesetUpdate): Promise<ApplyResult> {
    return this.queue.run(async () => {
      validateUpdate(update);
      const applied = this.applied;
      const next = () => (applied?.table ?? new MappingTable()).rulesetAfter(update);
      if (
        applied === undefined ||
        !this.trusted ||
        !sameSettings(applied.settings, update.settings)
      ) {
        return this.fullSync(next());
      }
      const changes = applied.table.changesFrom(update);
      const diff = { ...changes, settingsChanged: false, settings: applied.settings };
      if (isEmptyDiff(diff)) return NOTHING;
      // The whole ruleset after the change is built only when the kernel turns the change down:
      // building it costs time in proportion to every Service, the change itself only to it.
      let outcome: Awaited<ReturnType<Kernel["writeChange"]>>;
      try {
        outcome = await this.kernel.writeChange(diff, applied);
      } catch (error) {
        this.trusted = false;
        this.generation += 1;
        throw error;
      }
      if (outcome !== "written") return this.fullSync(next());
      applied.table.apply(diff);
      this.generation += 1;
      return {
        mode: "incremental",
        changedMappings: diff.added.length + diff.removed.length + diff.changed.length,
        changes: diff,
      };
    });
  }

  read(settings: RulesetSettings): Promise<LiveRules> {
    return this.kernel.read(settings);
  }

  async verify(ruleset: Ruleset): Promise<boolean> {
    validateRuleset(ruleset);
    const generation = this.generation;
    const live = await this.kernel.read(settingsOf(ruleset));
    return this.queue.run(async () => {
      if (this.generation !== generation) return true;
      const matches = liveMatches(ruleset, live);
      if (!matches) this.trusted = false;
      return matches;
    });
  }

  cleanup(): Promise<boolean> {
    return this.queue.run(async () => {
      // Whatever happens next, the next apply starts from scratch.
      this.applied = undefined;
      this.trusted = false;
      this.generation += 1;
      return this.kernel.remove();
    });
  }

  private async fullSync(ruleset: Ruleset): Promise<ApplyResult> {
    this.generation += 1;
    try {
      await this.kernel.writeFull(ruleset);
    } catch (error) {
      this.trusted = false;
      throw error;
    }
    const table = MappingTable.of(ruleset);
    this.applied = { table, settings: settingsOf(ruleset) };
    this.trusted = true;
    return { mode: "full", changedMappings: table.size };
  }
}

/** The {@link Backend} of a {@link Kernel}: what `createNftBackend` and `createIptablesBackend` return. */
export function createBackend(kernel: Kernel): Backend {
  return new Applier(kernel);
}
