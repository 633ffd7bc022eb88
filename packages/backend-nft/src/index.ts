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
  type NftDocument,
  type NftObject,
  podSetName,
} from "./compile.js";
export { nftLiveRules } from "./read-back.js";
