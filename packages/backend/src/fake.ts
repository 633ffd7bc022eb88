/**
 * A {@link Backend} whose "kernel" is memory, for tests of code that drives a backend (the
 * controller's sync loop, a library user's own loop). It is the shared applier over an in-memory
 * {@link Kernel}, so it decides between changes and full syncs exactly as the real backends do;
 * it records every call, and can be told to fail, to hang, or to lose its state.
 */
import {
  type LiveRules,
  MappingTable,
  ownerOf,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
  type RulesetUpdate,
  sameSettings,
  settingsOf,
} from "@ipvs-node-controller/core";
import { createBackend } from "./applier.js";
import type { Applied, ApplyResult, Backend, ChangeOutcome, Kernel } from "./contract.js";

/** One recorded call. */
export type FakeBackendCall =
  | { readonly method: "apply"; readonly result: ApplyResult }
  | { readonly method: "applyChanges"; readonly result: ApplyResult }
  | { readonly method: "verify"; readonly result: boolean }
  | { readonly method: "read"; readonly result: LiveRules }
  | { readonly method: "cleanup"; readonly result: boolean }
  | { readonly method: keyof Backend; readonly error: Error };

/** A kernel in memory: the mappings and settings of the last write, or nothing. */
class MemoryKernel implements Kernel {
  readonly name = "fake";
  state: { table: MappingTable; settings: RulesetSettings } | undefined;

  render(ruleset: Ruleset): string {
    return `${JSON.stringify(ruleset)}\n`;
  }

  async writeFull(ruleset: Ruleset): Promise<void> {
    this.state = { table: MappingTable.of(ruleset), settings: settingsOf(ruleset) };
  }

  async writeChange(diff: RulesetDiff, _applied: Applied): Promise<ChangeOutcome> {
    // A kernel that lost its state refuses the change, as nft does.
    if (this.state === undefined) return "refused";
    this.state.table.apply(diff);
    return "written";
  }

  async read(settings: RulesetSettings): Promise<LiveRules> {
    if (this.state === undefined) {
      return { backend: "fake", tool: "memory", present: false, mappings: [], problems: [] };
    }
    const mappings = this.state.table
      .toRuleset(this.state.settings)
      .families.flatMap((family) => family.mappings)
      .map(({ service, ...mapping }) => ({ ...mapping, owner: ownerOf({ service } as never) }));
    return {
      backend: "fake",
      tool: "memory",
      present: true,
      mappings,
      problems: sameSettings(this.state.settings, settings) ? [] : ["other settings"],
    };
  }

  async remove(): Promise<boolean> {
    const had = this.state !== undefined;
    this.state = undefined;
    return had;
  }
}

/** See the module comment. */
export class FakeBackend implements Backend {
  readonly name = "fake";
  /** Every call, in order. */
  readonly calls: FakeBackendCall[] = [];
  private readonly kernel = new MemoryKernel();
  private readonly backend = createBackend(this.kernel);
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
    const state = this.kernel.state;
    return state?.table.toRuleset(state.settings);
  }

  /** Empties the "kernel" behind the backend's back, as an operator flushing the table would. */
  drift(): void {
    this.kernel.state = undefined;
  }

  render(ruleset: Ruleset): string {
    return this.backend.render(ruleset);
  }

  apply(ruleset: Ruleset): Promise<ApplyResult> {
    return this.record("apply", () => this.backend.apply(ruleset));
  }

  applyChanges(update: RulesetUpdate): Promise<ApplyResult> {
    return this.record("applyChanges", () => this.backend.applyChanges(update));
  }

  read(settings: RulesetSettings): Promise<LiveRules> {
    return this.record("read", () => this.backend.read(settings));
  }

  verify(ruleset: Ruleset): Promise<boolean> {
    return this.record("verify", () => this.backend.verify(ruleset));
  }

  cleanup(): Promise<boolean> {
    return this.record("cleanup", () => this.backend.cleanup());
  }

  private async record<T extends ApplyResult | boolean | LiveRules>(
    method: keyof Backend,
    operation: () => Promise<T>,
  ): Promise<T> {
    const hold = this.hold;
    if (hold !== undefined && (hold.only === undefined || hold.only === method)) await hold.release;
    try {
      const failure = this.failures.shift();
      if (failure !== undefined) throw failure;
      const result = await operation();
      this.calls.push({ method, result } as FakeBackendCall);
      return result;
    } catch (error) {
      this.calls.push({ method, error: error as Error });
      throw error;
    }
  }
}
