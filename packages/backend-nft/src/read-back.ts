/**
 * Reading our table back: which translations the kernel holds, and how the rest of the table
 * differs from what a sync writes. Reads only; never changes anything.
 */
import type { LiveRules, RulesetSettings } from "@ipvs-node-controller/core";
import { listedMappings, parseListing, structureProblems } from "./live.js";

/**
 * What a listing of our table (`nft -j list table inet NAME`, or undefined when there is no such
 * table) holds, compared with a full sync of `settings`. Pure: the parsing half of the backend's
 * `read`. Throws on output that is not nft's JSON.
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
