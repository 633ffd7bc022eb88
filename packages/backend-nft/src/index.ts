/**
 * @ipvs-node-controller/backend-nft — applies an ipvs-node-controller ruleset with nftables.
 *
 * @packageDocumentation
 */
export { createNftBackend, DEFAULT_TABLE_NAME, type NftBackendOptions } from "./backend.js";
export {
  CHAIN_PRIORITY,
  elementComment,
  fullSyncDocument,
  fullSyncJson,
  incrementalDocument,
  mapName,
  podSetName,
} from "./compile.js";
export type * from "./nft-json.js";
export { nftLiveRules } from "./read-back.js";
