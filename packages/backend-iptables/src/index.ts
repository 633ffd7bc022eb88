/**
 * iptables backend of ipvs-node-controller: compiles a core Ruleset to `iptables-restore
 * --noflush` documents and applies them atomically per IP family, with iptables-legacy or
 * iptables-nft; a change sends only the DNAT rules that change.
 *
 * @packageDocumentation
 */
export {
  createIptablesBackend,
  type IptablesBackend,
  type IptablesBackendOptions,
  MAX_INCREMENTAL_DELETES,
} from "./backend.js";
export { dnatKey } from "./dnat-order.js";
export { LEGACY_TABLE_LISTS, legacyTables } from "./legacy-tables.js";
export * from "./live.js";
export {
  CHAINS,
  dnatRule,
  EMPTY_TARGET,
  familyTarget,
  JUMP_COMMENT,
  planTransition,
  renderRuleset,
  restoreToolName,
  rulesetTargets,
  type TargetState,
  type TransitionPlan,
} from "./render.js";
export {
  CHAIN_PREFIX,
  EMPTY_STATE,
  type LiveJump,
  type LiveState,
  normalizeSpec,
  parseNatSave,
  tokenize,
} from "./state.js";
export {
  detectIptablesVariant,
  type IptablesBinaries,
  type IptablesMode,
  type IptablesVariant,
  type VariantDetection,
  variantBinaries,
} from "./variant.js";
