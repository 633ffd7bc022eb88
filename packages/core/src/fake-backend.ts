/**
 * A {@link Backend} that keeps its "kernel" in memory, for tests of code that drives a backend
 * (the controller's sync loop, a library user's own loop): it validates and applies exactly as
 * the contract says, records every call, and can be told to fail or to lose its state.
 */
import type { ApplyResult, Backend } from "./backend.js";
import { diffTable, isEmptyDiff, settingsOf } from "./diff.js";
import { MappingTable } from "./mapping-table.js";
import type { Ruleset, RulesetDiff, RulesetSettings } from "./types.js";
import { validateChanges, validateRuleset } from "./validate.js";

/** One recorded call. */
export type FakeBackendCall =
  | { readonly method: "apply"; readonly full: boolean; readonly result: ApplyResult }
  | { readonly method: "applyChanges"; readonly result: ApplyResult }
  | { readonly method: "verify"; readonly result: boolean }
  | { readonly method: "cleanup"; readonly result: boolean }
  | { readonly method: keyof Backend; readonly error: Error };

/** See the module comment. */
export class FakeBackend implements Backend {
  readonly name = "fake";
  /** Every call, in order. */
  readonly calls: FakeBackendCall[] = [];
  /** The "kernel": undefined while nothing is applied. */
  private kernel: { table: MappingTable; settings: RulesetSettings } | undefined;
  /** What the backend believes it applied last; differs from the kernel after {@link drift}. */
  private applied: { table: MappingTable; settings: RulesetSettings } | undefined;
  private readonly failures: Error[] = [];
  private hold: { release: Promise<void>; only?: keyof Backend } | undefined;

  /** Makes the next `count` calls that would reach the kernel throw `error`. */
  failNext(error: Error, count = 1): void {
    for (let i = 0; i < count; i++) this.failures.push(error);
  }

  /** Forgets the failures still queued by {@link failNext}. */
  stopFailing(): void {
    this.failures.length = 0;
  }

  /**
   * Makes calls (or only calls of method `only`) wait until `release` settles: a kernel tool that
   * hangs, or a long read of the kernel.
   */
  blockUntil(release: Promise<void>, only?: keyof Backend): void {
    this.hold = { release, only };
  }

  /** What the "kernel" holds, as a canonical ruleset (undefined when nothing). */
  ruleset(): Ruleset | undefined {
    return this.kernel?.table.toRuleset(this.kernel.settings);
  }

  /** Empties the "kernel" behind the backend's back, as an operator flushing the table would. */
  drift(): void {
    this.kernel = undefined;
  }

  render(ruleset: Ruleset): string {
    validateRuleset(ruleset);
    return `${JSON.stringify(ruleset)}\n`;
  }

  async apply(ruleset: Ruleset, options?: { readonly full?: boolean }): Promise<ApplyResult> {
    return this.record(
      "apply",
      async () => {
        validateRuleset(ruleset);
        const full = options?.full === true || this.applied === undefined;
        if (!full && this.applied !== undefined) {
          const diff = diffTable(this.applied.table, this.applied.settings, ruleset);
          if (!diff.settingsChanged) return this.update(diff);
        }
        return this.replace(ruleset);
      },
      { full: options?.full === true },
    );
  }

  async applyChanges(changes: RulesetDiff): Promise<ApplyResult> {
    return this.record("applyChanges", async () => {
      validateChanges(changes);
      if (this.applied === undefined || changes.settingsChanged) {
        const table = this.applied?.table ?? new MappingTable();
        return this.replace(table.rulesetAfter(changes));
      }
      return this.update(changes);
    });
  }

  async verify(ruleset: Ruleset): Promise<boolean> {
    return this.record("verify", async () => {
      validateRuleset(ruleset);
      if (this.kernel === undefined) return false;
      const diff = diffTable(this.kernel.table, this.kernel.settings, ruleset);
      return isEmptyDiff(diff);
    });
  }

  async cleanup(): Promise<boolean> {
    return this.record("cleanup", async () => {
      const had = this.kernel !== undefined;
      this.kernel = undefined;
      this.applied = undefined;
      return had;
    });
  }

  private replace(ruleset: Ruleset): ApplyResult {
    const table = MappingTable.of(ruleset);
    this.kernel = { table, settings: settingsOf(ruleset) };
    this.applied = { table: table.clone(), settings: settingsOf(ruleset) };
    return { mode: "full", changedMappings: table.size };
  }

  private update(diff: RulesetDiff): ApplyResult {
    if (isEmptyDiff(diff)) return { mode: "none", changedMappings: 0 };
    const applied = this.applied as { table: MappingTable; settings: RulesetSettings };
    // A kernel that lost its state refuses the change, as nft does: rebuild everything.
    if (this.kernel === undefined) {
      return this.replace(applied.table.rulesetAfter(diff));
    }
    this.kernel.table.apply(diff);
    applied.table.apply(diff);
    return {
      mode: "incremental",
      changedMappings: diff.added.length + diff.removed.length + diff.changed.length,
    };
  }

  private async record<T extends ApplyResult | boolean>(
    method: keyof Backend,
    operation: () => Promise<T>,
    extra: { full?: boolean } = {},
  ): Promise<T> {
    const hold = this.hold;
    if (hold !== undefined && (hold.only === undefined || hold.only === method)) await hold.release;
    try {
      const failure = this.failures.shift();
      if (failure !== undefined) throw failure;
      const result = await operation();
      this.calls.push({ method, ...extra, result } as FakeBackendCall);
      return result;
    } catch (error) {
      this.calls.push({ method, error: error as Error });
      throw error;
    }
  }
}
