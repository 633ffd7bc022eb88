/**
 * nft as this backend uses it: transactions in libnftables JSON, listings of our table, and the
 * difference between "refused" and "not there".
 */
import {
  type CommandResult,
  type CommandRunner,
  ToolRefusedError,
} from "@ipvs-node-controller/backend";
import type { NftDocument } from "./nft-json.js";

/** Matches nft's message when an object (table, chain, element) does not exist. */
const NOT_FOUND = /No such file or directory/;

/** One nft program and the runner that starts it. */
export class NftTool {
  constructor(
    /** The executable, a name on PATH or a path. */
    readonly path: string,
    private readonly runner: CommandRunner,
  ) {}

  /**
   * Runs one atomic transaction (a document, or its JSON text). Returns undefined when nft applied it, its stderr when it refused
   * (nothing of the transaction is then in force). A tool that cannot start still throws.
   */
  async transact(document: NftDocument | string): Promise<string | undefined> {
    const text = typeof document === "string" ? document : JSON.stringify(document);
    const result = await this.run(["-j", "-f", "-"], text);
    return result.exitCode === 0 ? undefined : result.stderr.trim();
  }

  /** `nft -j list table inet NAME`, or undefined when the table does not exist. */
  async listTable(table: string): Promise<string | undefined> {
    const result = await this.run(["-j", "list", "table", "inet", table]);
    if (result.exitCode === 0) return result.stdout;
    if (NOT_FOUND.test(result.stderr)) return undefined;
    throw this.refused(`nft could not list table inet ${table}`, result);
  }

  /** Whether an `inet` table of this name exists; listing names is cheap whatever their size. */
  async hasTable(table: string): Promise<boolean> {
    const result = await this.run(["-j", "list", "tables", "inet"]);
    if (result.exitCode !== 0) throw this.refused("nft could not list tables", result);
    let document: { nftables?: { table?: { name?: unknown } }[] };
    try {
      document = JSON.parse(result.stdout);
    } catch (error) {
      throw this.refused(`nft printed an unreadable table list (${String(error)})`, result);
    }
    return (document.nftables ?? []).some((item) => item.table?.name === table);
  }

  /** Deletes an `inet` table; false when it was already gone. */
  async deleteTable(table: string): Promise<boolean> {
    const result = await this.run(["delete", "table", "inet", table]);
    if (result.exitCode === 0) return true;
    if (NOT_FOUND.test(result.stderr)) return false;
    throw this.refused(`nft could not delete table inet ${table}`, result);
  }

  /** A {@link ToolRefusedError} quoting nft's stderr after `what`. */
  refused(what: string, result: Pick<CommandResult, "exitCode" | "stderr">): ToolRefusedError {
    const stderr = result.stderr.trim();
    return new ToolRefusedError(`${what}: ${stderr}`, "nft", result.exitCode, stderr);
  }

  private run(args: readonly string[], input?: string): Promise<CommandResult> {
    return this.runner(this.path, args, input === undefined ? undefined : { input });
  }
}
