/**
 * @ipvs-node-controller/core — the pure rule engine of ipvs-node-controller.
 *
 * Services (+ node facts and configuration) in, an abstract NAT ruleset out, plus diffing.
 * No I/O, no processes, no clock.
 *
 * @packageDocumentation
 */
export {
  type CanonicalCIDR,
  type CanonicalIP,
  type Parsed,
  parseCIDR,
  parseClusterIP,
  parseExternalIP,
  parseIP,
} from "./address.js";
export * from "./backend.js";
export {
  computeRuleset,
  emptyRuleset,
  type RulesetInput,
  type RulesetResult,
  SKIP_ANNOTATION,
} from "./compute.js";
export {
  ConfigError,
  DEFAULT_CONFIG,
  markForBit,
  parseFamilies,
  resolveConfig,
  validateInterfaceName,
} from "./config.js";
export { applyDiff, diffRulesets, isEmptyDiff } from "./diff.js";
export { compareMappings, type MappingKeyFields, mappingKey, sortMappings } from "./mapping.js";
export * from "./types.js";
