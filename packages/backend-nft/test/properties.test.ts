import {
  diffRulesets,
  InvalidRulesetError,
  liveMatches,
  mappingKey,
  type Ruleset,
  settingsOf,
} from "@ipvs-node-controller/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fullSyncDocument, fullSyncJson, incrementalDocument } from "../src/compile.js";
import { createNftBackend } from "../src/index.js";
import { nftLiveRules } from "../src/read-back.js";
import { arbitraryRuleset } from "./arbitraries.js";

/** A JSON object of a document, read without its schema, as the assertions below walk it. */
type NftObject = Record<string, unknown>;

const TABLE = "ipvs-node-controller";
/** Hundreds of generated rulesets per property: generous on a busy machine, never a measurement. */
const PROPERTY_TIMEOUT_MS = 60_000;
const backend = createNftBackend({
  runner: async () => {
    throw new Error("render never runs a program");
  },
});

/** Every string anywhere in a JSON value. */
function strings(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).flatMap(([key, item]) => [key, ...strings(item)]);
  }
  return [];
}

/** `ip|protocol|port` of every element of every map in a document, in order. */
function mapElementKeys(document: { readonly nftables: readonly NftObject[] }): string[] {
  return document.nftables.flatMap((command) => {
    const map = (command.add as NftObject | undefined)?.map as
      | { name: string; elem?: unknown[] }
      | undefined;
    return (map?.elem ?? []).map((element) => {
      const [key] = element as [{ elem: { val: { concat: unknown[] } } }, string];
      const family = map?.name === "mappings-ipv4" ? "ipv4" : "ipv6";
      return [family, ...key.elem.val.concat].join("|");
    });
  });
}

function allKeys(ruleset: Ruleset): string[] {
  return ruleset.families.flatMap((family) => family.mappings.map(mappingKey));
}

/** What `nft -j list table` prints after a full sync: the added objects, without the commands. */
function listingOf(ruleset: Ruleset): string {
  const objects = fullSyncDocument(ruleset, TABLE)
    .nftables.slice(3)
    .map((command) => ("add" in command ? command.add : {}));
  return JSON.stringify({ nftables: [{ table: { family: "inet", name: TABLE } }, ...objects] });
}

/** Only these characters ever appear in a document: no quote, backslash, space or control character. */
const SAFE = /^[A-Za-z0-9_.:/*@|=!-]*$/;

describe("render (properties)", () => {
  it(
    "is valid JSON holding every mapping exactly once, or refuses a hostile owner",
    () => {
      const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
      fc.assert(
        fc.property(arbitraryRuleset(), (ruleset) => {
          const hostile = ruleset.families.some((family) =>
            family.mappings.some(
              ({ service }) => !dnsLabel.test(service.namespace) || !dnsLabel.test(service.name),
            ),
          );
          if (hostile) {
            expect(() => backend.render(ruleset)).toThrow(InvalidRulesetError);
            return;
          }
          const document = JSON.parse(backend.render(ruleset)) as {
            readonly nftables: readonly NftObject[];
          };
          expect(mapElementKeys(document).sort()).toEqual(allKeys(ruleset).sort());
          const sets = ruleset.families.filter(
            (family) => family.localPods.kind === "sourceCIDRs",
          ).length;
          // 3 table commands, pod sets, per family a map and two sets of restrictions, per family
          // one or two regular chains of two rules each, 2 base chains with one rule per family.
          const families = ruleset.families.length;
          const regular = (ruleset.markPodTraffic ? 1 : 2) * families;
          expect(document.nftables).toHaveLength(
            3 + sets + 3 * families + regular + 2 + 2 * regular + 2 * families,
          );
          for (const text of strings(document)) expect(text).toMatch(SAFE);
        }),
        { numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT_MS,
  );

  it(
    "serialises a full sync element by element to exactly the document's JSON",
    () => {
      fc.assert(
        fc.property(arbitraryRuleset({ hostileNames: false }), (ruleset) => {
          expect(fullSyncJson(ruleset, TABLE)).toBe(
            JSON.stringify(fullSyncDocument(ruleset, TABLE)),
          );
        }),
        { numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT_MS,
  );

  it(
    "incremental documents delete and add exactly the keys that changed",
    () => {
      fc.assert(
        fc.property(
          arbitraryRuleset({ hostileNames: false }),
          arbitraryRuleset({ hostileNames: false }),
          (before, other) => {
            // Same settings, other mappings: what an incremental sync handles.
            const after: Ruleset = {
              ...before,
              families: before.families.map((family) => ({
                ...family,
                mappings:
                  other.families.find((o) => o.family === family.family)?.mappings ??
                  family.mappings,
              })),
            };
            const diff = diffRulesets(before, after);
            const document = incrementalDocument(diff, TABLE);
            const deleted = document.nftables.flatMap((command) => {
              const element = ("delete" in command ? (command.delete as NftObject) : undefined)
                ?.element as { name: string; elem: { concat: unknown[] }[] } | undefined;
              if (!element?.name.startsWith("mappings-")) return [];
              return (element?.elem ?? []).map((key) =>
                [element?.name.slice(9), ...key.concat].join("|"),
              );
            });
            const added = document.nftables.flatMap((command) => {
              const element = ("add" in command ? (command.add as NftObject) : undefined)
                ?.element as
                | { name: string; elem: [{ elem: { val: { concat: unknown[] } } }, string][] }
                | undefined;
              if (!element?.name.startsWith("mappings-")) return [];
              return (element?.elem ?? []).map(([key]) =>
                [element?.name.slice(9), ...key.elem.val.concat].join("|"),
              );
            });
            const changed = diff.changed.map(({ after: mapping }) => mappingKey(mapping));
            expect(deleted.sort()).toEqual([...diff.removed.map(mappingKey), ...changed].sort());
            expect(added.sort()).toEqual([...diff.added.map(mappingKey), ...changed].sort());
            for (const text of strings(document)) expect(text).toMatch(SAFE);
          },
        ),
        { numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT_MS,
  );

  it(
    "verify accepts the listing of a full sync of the same ruleset and rejects any other",
    () => {
      fc.assert(
        fc.property(
          arbitraryRuleset({ maxMappings: 5, hostileNames: false }),
          arbitraryRuleset({ maxMappings: 5, hostileNames: false }),
          (ruleset, other) => {
            const matches = (listing: string) =>
              liveMatches(ruleset, nftLiveRules(listing, settingsOf(ruleset)));
            expect(matches(listingOf(ruleset))).toBe(true);
            const same =
              JSON.stringify(fullSyncDocument(ruleset, TABLE)) ===
              JSON.stringify(fullSyncDocument(other, TABLE));
            expect(matches(listingOf(other))).toBe(same);
          },
        ),
        { numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT_MS,
  );
});
