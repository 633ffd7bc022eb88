/**
 * The nftables implementation of core's {@link Backend}: one `inet` table of its own, replaced
 * atomically by a full sync, changed element by element otherwise.
 */
import {
  type ApplyResult,
  type Backend,
  type CommandRunner,
  ConfigError,
  diffTable,
  isEmptyDiff,
  MappingTable,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
  settingsOf,
  validateChanges,
  validateRuleset,
} from "@ipvs-node-controller/core";
import { runTool, SerialQueue } from "@ipvs-node-controller/exec";
import { formatJson, fullSyncDocument, fullSyncJson, incrementalDocument } from "./compile.js";
import { parseListing, tableMatches } from "./live.js";
import { NftTool } from "./nft-tool.js";

/** Options of {@link createNftBackend}. */
export interface NftBackendOptions {
  /** The nft executable, a name looked up on PATH or a path. Default `"nft"`. */
  readonly nftPath?: string;
  /** Starts processes. Default: `runTool`. Tests pass one that runs inside a network namespace. */
  readonly runner?: CommandRunner;
  /** Name of our `inet` table. Default `"ipvs-node-controller"`. Nothing outside it is ever touched. */
  readonly tableName?: string;
}

/** The default table name. */
export const DEFAULT_TABLE_NAME = "ipvs-node-controller";

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/** What the kernel holds since our last successful transaction. */
interface Applied {
  readonly table: MappingTable;
  settings: RulesetSettings;
  /**
   * False once `verify` found the kernel elsewhere (someone flushed our rules): changes are then
   * not applied element by element on top of what is no longer there, the next one is a full sync.
   */
  trusted: boolean;
}

const mappingCount = (diff: RulesetDiff) =>
  diff.added.length + diff.removed.length + diff.changed.length;

/** See the module comment; create one with {@link createNftBackend}. */
class NftBackend implements Backend {
  readonly name = "nft";
  private readonly queue = new SerialQueue();
  /** Undefined before the first successful sync, and after cleanup. */
  private applied: Applied | undefined;
  /** Counts the transactions that changed the table, so a verify can tell whether one overlapped it. */
  private generation = 0;

  constructor(
    private readonly nft: NftTool,
    private readonly table: string,
  ) {}

  render(ruleset: Ruleset): string {
    validateRuleset(ruleset);
    return `${formatJson(fullSyncDocument(ruleset, this.table))}\n`;
  }

  apply(ruleset: Ruleset, options?: { readonly full?: boolean }): Promise<ApplyResult> {
    return this.queue.run(async () => {
      validateRuleset(ruleset);
      if (this.applied === undefined || options?.full === true) return this.fullSync(ruleset);
      const diff = diffTable(this.applied.table, this.applied.settings, ruleset);
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

  /**
   * Reads the table without waiting for changes queued meanwhile (a listing of 30,000 elements
   * takes half a second, and a change must not wait for it): nft lists one consistent generation
   * of the table. If a transaction of ours landed while it read, the listing may hold either
   * state, so the answer is true and the next verify decides.
   */
  async verify(ruleset: Ruleset): Promise<boolean> {
    validateRuleset(ruleset);
    const generation = this.generation;
    const listing = await this.nft.listTable(this.table);
    return this.queue.run(async () => {
      if (this.generation !== generation) return true;
      let matches = false;
      try {
        matches = listing !== undefined && tableMatches(parseListing(listing), ruleset);
      } catch {
        // A listing we cannot make sense of is not the table we wrote.
      }
      if (!matches && this.applied) this.applied.trusted = false;
      return matches;
    });
  }

  cleanup(): Promise<boolean> {
    return this.queue.run(async () => {
      const present = await this.nft.hasTable(this.table);
      // Whatever happens next, the next apply must rebuild the table from scratch.
      this.applied = undefined;
      this.generation += 1;
      return present && (await this.nft.deleteTable(this.table));
    });
  }

  /**
   * Applies `diff` element by element; a settings change, or nothing applied yet, needs the whole
   * ruleset, which `next` builds only then.
   */
  private async change(diff: RulesetDiff, next: () => Ruleset): Promise<ApplyResult> {
    const applied = this.applied;
    if (applied === undefined || !applied.trusted || diff.settingsChanged) {
      return this.fullSync(next());
    }
    if (isEmptyDiff(diff)) return { mode: "none", changedMappings: 0 };
    const refused = await this.nft.transact(incrementalDocument(diff, this.table));
    // The kernel disagreed with our idea of its state (drift, e.g. a vanished element or table):
    // nothing of the transaction was applied, so rebuild everything.
    if (refused !== undefined) return this.fullSync(next());
    applied.table.apply(diff);
    this.generation += 1;
    return { mode: "incremental", changedMappings: mappingCount(diff) };
  }

  private async fullSync(ruleset: Ruleset): Promise<ApplyResult> {
    const refused = await this.nft.transact(fullSyncJson(ruleset, this.table));
    if (refused !== undefined) {
      throw this.nft.refused(`nft rejected the full sync of table inet ${this.table}`, {
        exitCode: 1,
        stderr: refused,
      });
    }
    const table = MappingTable.of(ruleset);
    this.applied = { table, settings: settingsOf(ruleset), trusted: true };
    this.generation += 1;
    return { mode: "full", changedMappings: table.size };
  }
}

/**
 * Creates the nftables backend. It owns one `inet` table and never reads or writes anything else.
 *
 * @example
 * const backend = createNftBackend();
 * await backend.apply(computeRuleset({ services, node }).ruleset); // full sync
 * await backend.applyChanges(engine.takeChanges()); // then only what changed
 * await backend.verify(ruleset); // true while nobody tampered with the table
 * await backend.cleanup(); // removes the table
 */
export function createNftBackend(options: NftBackendOptions = {}): Backend {
  const table = options.tableName ?? DEFAULT_TABLE_NAME;
  if (!TABLE_NAME.test(table)) {
    throw new ConfigError(
      `invalid tableName ${JSON.stringify(table)}: 1-64 of A-Z a-z 0-9 _ -, starting with a letter`,
    );
  }
  return new NftBackend(new NftTool(options.nftPath ?? "nft", options.runner ?? runTool), table);
}
