/**
 * Reading our table back for a diagnosis: which translations the kernel holds, and how the rest
 * of the table differs from what a sync writes. Reads only; never changes anything.
 */
import type { CommandRunner, LiveRules, RulesetSettings } from "@ipvs-node-controller/core";
import { runTool } from "@ipvs-node-controller/exec";
import { DEFAULT_TABLE_NAME } from "./backend.js";
import { listedMappings, parseListing, structureProblems } from "./live.js";
import { NftTool } from "./nft-tool.js";

/** Options of {@link readNftLiveRules}: the same as the backend's. */
export interface NftReadBackOptions {
  /** The nft executable. Default `"nft"`. */
  readonly nftPath?: string;
  /** Starts processes. Default: `runTool`. */
  readonly runner?: CommandRunner;
  /** Name of our `inet` table. Default `"ipvs-node-controller"`. */
  readonly tableName?: string;
}

/**
 * What a listing of our table (`nft -j list table inet NAME`, or undefined when there is no such
 * table) holds, compared with a full sync of `settings`. Pure: the parsing half of
 * {@link readNftLiveRules}. Throws on output that is not nft's JSON.
 */
export function nftLiveRules(listing: string | undefined, settings: RulesetSettings): LiveRules {
  if (listing === undefined) {
    return { backend: "nft", tool: "nft", present: false, mappings: [], problems: [] };
  }
  const live = parseListing(listing);
  const { mappings, unreadable } = listedMappings(live);
  return {
    backend: "nft",
    tool: "nft",
    present: true,
    mappings,
    problems: [...structureProblems(live, settings), ...unreadable],
  };
}

/**
 * Lists our table and returns the translations in it and what differs from a full sync of
 * `settings`. A missing table is `present: false`, not an error; a tool that cannot start or
 * refuses throws the backend's errors (`ToolNotStartedError`, `ToolRefusedError`).
 *
 * @example
 * const live = await readNftLiveRules({}, settingsOf(ruleset));
 * live.mappings; // [{ family: "ipv4", externalIP: "192.0.2.10", protocol: "tcp", port: 80, clusterIP: "10.96.0.10", owner: "default/web" }]
 * live.problems; // [] when the table is exactly as a sync leaves it
 */
export async function readNftLiveRules(
  options: NftReadBackOptions,
  settings: RulesetSettings,
): Promise<LiveRules> {
  const tool = new NftTool(options.nftPath ?? "nft", options.runner ?? runTool);
  const table = options.tableName ?? DEFAULT_TABLE_NAME;
  const listing = await tool.listTable(table);
  try {
    return { ...nftLiveRules(listing, settings), tool: tool.path };
  } catch (error) {
    throw tool.refused(`nft printed a listing of table inet ${table} that cannot be read`, {
      exitCode: 0,
      stderr: (error as Error).message,
    });
  }
}
