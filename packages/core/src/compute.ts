/**
 * Services in, ruleset out, in one call: the rule engine fed everything at once.
 */
import { RulesetEngine } from "./engine.js";
import type { NodeInput, ServiceInput } from "./input.js";
import type { CoreConfig, RulesetResult } from "./types.js";

/** What {@link computeRuleset} needs. */
export interface RulesetInput {
  /** Services as the Kubernetes API returns them (`V1Service`, parsed JSON/YAML, or trimmed). */
  readonly services: readonly ServiceInput[];
  /** This node (`V1Node`); only the NodeCIDR detection mode reads it. */
  readonly node?: NodeInput;
  /** Options; missing ones take `DEFAULT_CONFIG`'s values. */
  readonly config?: Partial<CoreConfig>;
}

/**
 * Computes the complete desired NAT state of a node.
 *
 * Pure and deterministic: no I/O, no clock; the same Services in any order give a byte-identical
 * ruleset. Bad Service data never throws — the offending Service (or just the offending address or
 * port) is reported in `skipped` — while bad configuration throws a `ConfigError`.
 *
 * @example
 * ```ts
 * const { ruleset, skipped } = computeRuleset({ services, node }); // node: a V1Node
 * ```
 */
export function computeRuleset(input: RulesetInput): RulesetResult {
  const engine = new RulesetEngine({ config: input.config, node: input.node });
  // The same object listed twice counts once; two objects with one name are two claimants.
  [...new Set(input.services)].forEach((service, index) => {
    engine.setService(String(index), service);
  });
  return engine.result();
}
