/**
 * The nftables backend: one `inet` table of its own, replaced atomically by a full sync, changed
 * element by element otherwise. What it supplies to the shared applier is the {@link Kernel}
 * below: documents, one transaction each, and the read-back.
 */
import {
  type Applied,
  type Backend,
  type ChangeOutcome,
  type CommandRunner,
  createBackend,
  type Kernel,
  runTool,
} from "@ipvs-node-controller/backend";
import {
  ConfigError,
  type LiveRules,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
} from "@ipvs-node-controller/core";
import { formatJson, fullSyncDocument, fullSyncJson, incrementalDocument } from "./compile.js";
import { NftTool } from "./nft-tool.js";
import { nftLiveRules } from "./read-back.js";

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

/** What nft supplies to the shared applier. */
class NftKernel implements Kernel {
  readonly name = "nft";

  constructor(
    private readonly nft: NftTool,
    private readonly table: string,
  ) {}

  render(ruleset: Ruleset): string {
    return `${formatJson(fullSyncDocument(ruleset, this.table))}\n`;
  }

  async writeFull(ruleset: Ruleset): Promise<void> {
    const refused = await this.nft.transact(fullSyncJson(ruleset, this.table));
    if (refused !== undefined) {
      throw this.nft.refused(`nft rejected the full sync of table inet ${this.table}`, {
        exitCode: 1,
        stderr: refused,
      });
    }
  }

  /**
   * Element changes only. A refusal means the kernel disagreed with what was applied (a vanished
   * element or table): nothing of the transaction is in force, and the applier rebuilds all.
   */
  async writeChange(diff: RulesetDiff, _applied: Applied): Promise<ChangeOutcome> {
    const refused = await this.nft.transact(incrementalDocument(diff, this.table));
    return refused === undefined ? "written" : "refused";
  }

  async read(settings: RulesetSettings): Promise<LiveRules> {
    const listing = await this.nft.listTable(this.table);
    try {
      return { ...nftLiveRules(listing, settings), tool: this.nft.path };
    } catch (error) {
      throw this.nft.refused(
        `nft printed a listing of table inet ${this.table} that cannot be read`,
        {
          exitCode: 0,
          stderr: (error as Error).message,
        },
      );
    }
  }

  async remove(): Promise<boolean> {
    // Listing table names is cheap whatever their size.
    return (await this.nft.hasTable(this.table)) && this.nft.deleteTable(this.table);
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
  const nft = new NftTool(options.nftPath ?? "nft", options.runner ?? runTool);
  return createBackend(new NftKernel(nft, table));
}
