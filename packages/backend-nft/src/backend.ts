import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ApplyResult,
  type Backend,
  BackendError,
  type CommandResult,
  type CommandRunner,
  diffRulesets,
  isEmptyDiff,
  type Ruleset,
} from "@ipvs-node-controller/core";
import { execa } from "execa";
import { formatJson, fullSyncDocument, incrementalDocument, type NftDocument } from "./compile.js";
import { parseListing, tableMatches } from "./live.js";
import { validateRuleset } from "./validate.js";

/** Options of {@link createNftBackend}. */
export interface NftBackendOptions {
  /** The nft executable, a name looked up on PATH or a path. Default `"nft"`. */
  readonly nftPath?: string;
  /**
   * Starts processes. Default: execa, directly. Tests pass one that runs inside a network namespace.
   * It should throw an error with `code: "ENOENT"` when the program does not exist.
   */
  readonly runner?: CommandRunner;
  /** Name of our `inet` table. Default `"ipvs-node-controller"`. Nothing outside it is ever touched. */
  readonly tableName?: string;
}

/** The default table name. */
export const DEFAULT_TABLE_NAME = "ipvs-node-controller";

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/**
 * Returns a read-only descriptor of an already unlinked file holding `input`, for use as stdin.
 * Node connects "piped" stdin through a socket, and `nft -j -f -` opens /dev/stdin, which fails
 * on a socket ("No such device or address"); a regular file works, and leaves nothing behind.
 */
function stdinFile(input: string): number {
  const directory = mkdtempSync(join(tmpdir(), "nft-input-"));
  const path = join(directory, "input.json");
  try {
    writeFileSync(path, input, { mode: 0o600 });
    return openSync(path, "r");
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/** Runs a program with execa: an argument array, stdin input, no shell, non-zero exit returned. */
export const execaRunner: CommandRunner = async (file, args, options) => {
  const stdin = options?.input === undefined ? undefined : stdinFile(options.input);
  const result = await execa(file, [...args], {
    // execa's types only list descriptors 0 and 3-9, but any open descriptor goes to spawn() as is.
    stdin: (stdin ?? "ignore") as "ignore",
    reject: false,
    stripFinalNewline: false,
  }).finally(() => {
    if (stdin !== undefined) closeSync(stdin);
  });
  if (result.exitCode === undefined) {
    // Never started: keep the spawn error's `code`, which tells ENOENT apart from other failures.
    const code = (result as { code?: string }).code;
    throw Object.assign(new Error(result.message), { code });
  }
  return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode };
};

/** Matches nft's message when an object (table, chain, element) does not exist. */
const NOT_FOUND = /No such file or directory/;

/**
 * Creates the nftables backend. It owns one `inet` table and never reads or writes anything else.
 *
 * @example
 * const backend = createNftBackend();
 * await backend.apply(computeRuleset({ services, node }).ruleset); // full sync, then incremental
 * await backend.verify(ruleset); // true while nobody tampered with the table
 * await backend.cleanup(); // removes the table
 */
export function createNftBackend(options: NftBackendOptions = {}): Backend {
  const nftPath = options.nftPath ?? "nft";
  const runner = options.runner ?? execaRunner;
  const table = options.tableName ?? DEFAULT_TABLE_NAME;
  if (!TABLE_NAME.test(table)) {
    throw new BackendError(
      `invalid tableName ${JSON.stringify(table)}: 1-64 of A-Z a-z 0-9 _ -, starting with a letter`,
      "nft",
    );
  }

  /** The ruleset the kernel holds since our last successful apply; undefined before the first. */
  let lastApplied: Ruleset | undefined;
  /** The tail of the operations queued so far; see `serialised`. */
  let queue: Promise<unknown> = Promise.resolve();

  async function nft(args: readonly string[], input?: string): Promise<CommandResult> {
    try {
      return await runner(nftPath, args, input === undefined ? undefined : { input });
    } catch (error) {
      if ((error as { code?: unknown }).code === "ENOENT") {
        const message = `nft not found (looked for ${JSON.stringify(nftPath)})`;
        throw new BackendError(message, "nft", "", true);
      }
      throw new BackendError(`could not run nft: ${(error as Error).message}`, "nft", "", true);
    }
  }

  /** Runs one transaction. Returns undefined when nft applied it, nft's stderr when it refused it. */
  async function transact(document: NftDocument): Promise<string | undefined> {
    const result = await nft(["-j", "-f", "-"], JSON.stringify(document));
    return result.exitCode === 0 ? undefined : result.stderr.trim();
  }

  async function fullSync(ruleset: Ruleset): Promise<ApplyResult> {
    const refused = await transact(fullSyncDocument(ruleset, table));
    if (refused !== undefined) {
      throw new BackendError(
        `nft rejected the full sync of table inet ${table}: ${refused}`,
        "nft",
        refused,
      );
    }
    lastApplied = ruleset;
    const mappings = ruleset.families.reduce((sum, family) => sum + family.mappings.length, 0);
    return { mode: "full", changedMappings: mappings };
  }

  async function applyNow(ruleset: Ruleset, full: boolean): Promise<ApplyResult> {
    validateRuleset(ruleset);
    if (lastApplied === undefined || full) return fullSync(ruleset);
    const diff = diffRulesets(lastApplied, ruleset);
    if (diff.settingsChanged) return fullSync(ruleset);
    if (isEmptyDiff(diff)) return { mode: "none", changedMappings: 0 };
    const refused = await transact(incrementalDocument(ruleset, diff, table));
    // The kernel disagreed with our idea of its state (drift, e.g. a vanished element or table):
    // nothing of the transaction was applied, so rebuild everything.
    if (refused !== undefined) return fullSync(ruleset);
    lastApplied = ruleset;
    return {
      mode: "incremental",
      changedMappings: diff.added.length + diff.removed.length + diff.changed.length,
    };
  }

  async function verifyNow(ruleset: Ruleset): Promise<boolean> {
    validateRuleset(ruleset);
    const result = await nft(["-j", "list", "table", "inet", table]);
    if (result.exitCode !== 0) {
      if (NOT_FOUND.test(result.stderr)) return false;
      const stderr = result.stderr.trim();
      throw new BackendError(`nft could not list table inet ${table}: ${stderr}`, "nft", stderr);
    }
    try {
      return tableMatches(parseListing(result.stdout), ruleset);
    } catch {
      // A listing we cannot make sense of is not the table we wrote.
      return false;
    }
  }

  async function cleanupNow(): Promise<boolean> {
    // Listing table names is cheap whatever the size of the table; only ours is deleted.
    const listed = await nft(["-j", "list", "tables", "inet"]);
    if (listed.exitCode !== 0) {
      const stderr = listed.stderr.trim();
      throw new BackendError(`nft could not list tables: ${stderr}`, "nft", stderr);
    }
    let present: boolean;
    try {
      present = (
        JSON.parse(listed.stdout) as { nftables: { table?: { name?: string } }[] }
      ).nftables.some((item) => item.table?.name === table);
    } catch (error) {
      throw new BackendError(`nft printed an unreadable table list: ${String(error)}`, "nft");
    }
    // Whatever happens next, the next apply must rebuild the table from scratch.
    lastApplied = undefined;
    if (!present) return false;
    const deleted = await nft(["delete", "table", "inet", table]);
    if (deleted.exitCode === 0) return true;
    if (NOT_FOUND.test(deleted.stderr)) return false;
    const stderr = deleted.stderr.trim();
    throw new BackendError(`nft could not delete table inet ${table}: ${stderr}`, "nft", stderr);
  }

  /** Runs operations one after another: each diff must start from the state the previous one left. */
  function serialised<T>(operation: () => Promise<T>): Promise<T> {
    const run = queue.then(operation);
    queue = run.catch(() => undefined);
    return run;
  }

  return {
    name: "nft",
    render(ruleset) {
      validateRuleset(ruleset);
      return `${formatJson(fullSyncDocument(ruleset, table))}\n`;
    },
    apply: (ruleset, applyOptions) =>
      serialised(() => applyNow(ruleset, applyOptions?.full === true)),
    verify: (ruleset) => serialised(() => verifyNow(ruleset)),
    cleanup: () => serialised(cleanupNow),
  };
}
