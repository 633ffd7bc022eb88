import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type CoreConfig,
  computeRuleset,
  diffRulesets,
  isEmptyDiff,
  MappingTable,
  parseIP,
  updateBetween,
} from "../src/index.js";
import { servicesArbitrary } from "./arbitraries.js";

const config: Partial<CoreConfig> = { families: ["ipv4", "ipv6"] };
const node = { spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] } };
const compute = (services: Parameters<typeof computeRuleset>[0]["services"]) =>
  computeRuleset({ services, node, config });

/** Service-level reasons: when one of these is reported, the Service has no mapping at all. */
const WHOLE_SERVICE_REASONS = new Set([
  "InvalidMetadata",
  "OptedOut",
  "NotLocalTrafficPolicy",
  "NoClusterIP",
  "NoPorts",
  "NoIngress",
]);

describe("computeRuleset properties", () => {
  it("gives a byte-identical ruleset for any order of the same Services", () => {
    fc.assert(
      fc.property(servicesArbitrary, fc.array(fc.nat()), (services, seeds) => {
        const shuffled = services
          .map((service, index) => ({ service, seed: seeds[index] ?? index }))
          .sort((a, b) => a.seed - b.seed)
          .map((entry) => entry.service);
        const a = compute(services);
        const b = compute(shuffled);
        expect(JSON.stringify(b.ruleset)).toBe(JSON.stringify(a.ruleset));
        expect(b.skipped).toEqual(a.skipped);
      }),
    );
  });

  it("is idempotent: the same input twice, or each Service twice, gives the same ruleset", () => {
    fc.assert(
      fc.property(servicesArbitrary, (services) => {
        const once = JSON.stringify(compute(services).ruleset);
        expect(JSON.stringify(compute(services).ruleset)).toBe(once);
        expect(JSON.stringify(compute([...services, ...services]).ruleset)).toBe(once);
      }),
    );
  });

  it("emits only valid, canonical addresses of the mapping's family and valid ports", () => {
    fc.assert(
      fc.property(servicesArbitrary, (services) => {
        for (const family of compute(services).ruleset.families) {
          for (const mapping of family.mappings) {
            expect(mapping.family).toBe(family.family);
            for (const address of [mapping.externalIP, mapping.clusterIP]) {
              const parsed = parseIP(address);
              expect(
                parsed.ok &&
                  parsed.value.family === mapping.family &&
                  parsed.value.address === address,
              ).toBe(true);
            }
            expect(
              Number.isInteger(mapping.port) && mapping.port >= 1 && mapping.port <= 65535,
            ).toBe(true);
            expect(["tcp", "udp", "sctp"]).toContain(mapping.protocol);
            expect(`${mapping.service.namespace}/${mapping.service.name}`).toMatch(
              /^[a-z0-9-]+\/[a-z0-9-]+$/,
            );
          }
        }
      }),
    );
  });

  it("emits no mapping for a Service skipped as a whole, and unique sorted keys", () => {
    fc.assert(
      fc.property(servicesArbitrary, (services) => {
        const result = compute(services);
        const mappings = result.ruleset.families.flatMap((f) => f.mappings);
        const owners = new Set(mappings.map((m) => `${m.service.namespace}/${m.service.name}`));
        for (const entry of result.skipped) {
          if (WHOLE_SERVICE_REASONS.has(entry.reason)) {
            // Another Service with the same namespace/name may exist in random input; only assert
            // when the name is unique.
            const sameName = services.filter(
              (s) => `${s.metadata?.namespace}/${s.metadata?.name}` === entry.service,
            );
            if (sameName.length === 1) expect(owners.has(entry.service)).toBe(false);
          }
        }
        const keys = mappings.map((m) => `${m.family}|${m.externalIP}|${m.protocol}|${m.port}`);
        expect(new Set(keys).size).toBe(keys.length);
      }),
    );
  });
});

describe("diff properties", () => {
  it("diff(a, a) is empty", () => {
    fc.assert(
      fc.property(servicesArbitrary, (services) => {
        const { ruleset } = compute(services);
        expect(isEmptyDiff(diffRulesets(ruleset, ruleset))).toBe(true);
      }),
    );
  });

  it("applying diff(a, b) to a gives b", () => {
    fc.assert(
      fc.property(
        servicesArbitrary,
        servicesArbitrary,
        fc.integer({ min: 0, max: 31 }),
        (x, y, bit) => {
          const a = compute(x).ruleset;
          const b = computeRuleset({
            services: y,
            node,
            config: { ...config, masqueradeBit: bit },
          }).ruleset;
          expect(JSON.stringify(MappingTable.of(a).rulesetAfter(updateBetween(a, b)))).toBe(
            JSON.stringify(b),
          );
        },
      ),
    );
  });
});
