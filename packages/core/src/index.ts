/**
 * @ipvs-node-controller/core — the pure rule engine of ipvs-node-controller.
 *
 * Services (+ node facts and configuration) in, an abstract NAT ruleset out, plus diffing, the
 * incremental engine, the canonical-ruleset check, the backend contract and its error vocabulary.
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
export type { ApplyResult, Backend, CommandResult, CommandRunner } from "./backend.js";
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
} from "./conntrack.js";
export { applyDiff, diffRulesets, diffTable, isEmptyDiff, settingsOf } from "./diff.js";
export { RulesetEngine, type RulesetEngineOptions, type RulesetStats } from "./engine.js";
export {
  BackendError,
  InvalidRulesetError,
  quote,
  ToolNotStartedError,
  ToolRefusedError,
  ToolTimedOutError,
} from "./errors.js";
export { FakeBackend, type FakeBackendCall } from "./fake-backend.js";
export {
  type IngressInput,
  type NodeAddressInput,
  type NodeInput,
  podCIDRsOf,
  type ServiceInput,
  type ServicePortInput,
  SKIP_ANNOTATION,
  sameNodeInput,
  sameServiceInput,
  trimNode,
  trimService,
} from "./input.js";
export type { LiveMapping, LiveRules } from "./live.js";
export {
  compareMappings,
  type MappingKeyFields,
  mappingKey,
  portKey,
  sameSources,
  sameTranslation,
  sortMappings,
} from "./mapping.js";
export { MappingTable } from "./mapping-table.js";
export { type NodeIPSource, type NodeIPs, nodeIPsOf } from "./settings.js";
export * from "./types.js";
export { validateChanges, validateMapping, validateRuleset } from "./validate.js";
