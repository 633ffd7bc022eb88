/**
 * @ipvs-node-controller/core — the pure rule engine of ipvs-node-controller.
 *
 * Services (+ node facts and configuration) in, an abstract NAT ruleset out, plus diffing, the
 * incremental engine, the canonical-ruleset check and the comparison of what a backend reads back.
 * No I/O, no processes, no clock.
 *
 * @packageDocumentation
 */
export {
  type AddressRange,
  addressValue,
  type CanonicalCIDR,
  type CanonicalIP,
  cidrContains,
  cidrRange,
  outermostCIDRs,
  type Parsed,
  parseCIDR,
  parseClusterIP,
  parseExternalIP,
  parseIP,
  parseSourceRange,
} from "./address.js";
export { computeRuleset, type RulesetInput } from "./compute.js";
export {
  ConfigError,
  DEFAULT_CONFIG,
  markForBit,
  parseFamilies,
  resolveConfig,
  validateInterfaceName,
} from "./config.js";
export {
  destinationKey,
  staleUdpDestinations,
  type UdpDestination,
  udpDestinations,
  udpDestinationsOf,
} from "./conntrack.js";
export {
  diffRulesets,
  isEmptyChanges,
  isEmptyDiff,
  sameSettings,
  settingsOf,
  updateBetween,
} from "./diff.js";
export { RulesetEngine, type RulesetEngineOptions, type RulesetStats } from "./engine.js";
export { InvalidRulesetError, quote } from "./errors.js";
export {
  type IngressInput,
  isObject,
  type NodeAddressInput,
  type NodeInput,
  podCIDRsOf,
  type ServiceInput,
  type ServicePortInput,
  SKIP_ANNOTATION,
  sameNodeInput,
  trimNode,
  trimService,
} from "./input.js";
export {
  compareLive,
  type LiveComparison,
  type LiveMapping,
  type LiveRules,
  liveMatches,
  ownerOf,
  sameLiveMapping,
} from "./live.js";
export {
  compareMappings,
  keyOfPort,
  mappingKey,
  portKey,
  sameSources,
  sameTranslation,
  sortMappings,
} from "./mapping.js";
export { MappingTable } from "./mapping-table.js";
export { type NodeIPSource, type NodeIPs, nodeIPsOf } from "./settings.js";
export * from "./types.js";
export { validateMapping, validateRuleset, validateUpdate } from "./validate.js";
