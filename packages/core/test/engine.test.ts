import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type CoreConfig,
  computeRuleset,
  MappingTable,
  type NodeInput,
  type Ruleset,
  RulesetEngine,
  type ServiceInput,
  type SkippedEntry,
} from "../src/index.js";
import { serviceArbitrary } from "./arbitraries.js";
import { lbService } from "./fixtures.js";

const config: Partial<CoreConfig> = { families: ["ipv4", "ipv6"] };
const node: NodeInput = { spec: { podCIDRs: ["10.244.1.0/24", "fd00:10:244:1::/64"] } };

const web = lbService({ name: "web", ingress: [{ ip: "192.0.2.10" }] });
const older = lbService({
  name: "older",
  clusterIP: "10.96.0.20",
  ingress: [{ ip: "192.0.2.10" }],
  created: "2023-01-01T00:00:00Z",
});

/** What a backend holds after each engine's changes so far, by engine. */
const kernels = new WeakMap<RulesetEngine, MappingTable>();

/**
 * Takes the engine's changes and measures them as a backend does, against what it applied:
 * the mappings they add, remove and change, with the rest of what `takeChanges` reports.
 */
function take(engine: RulesetEngine) {
  const table = kernels.get(engine) ?? new MappingTable();
  kernels.set(engine, table);
  const changes = engine.takeChanges();
  const diff = table.changesFrom(changes);
  table.apply(diff);
  return { ...changes, ...diff };
}

function engineWith(...services: ServiceInput[]): RulesetEngine {
  const engine = new RulesetEngine({ config, node });
  for (const service of services) {
    engine.setService(`${service.metadata?.namespace}/${service.metadata?.name}`, service);
  }
  return engine;
}

describe("RulesetEngine", () => {
  it("reports every mapping as added the first time, and nothing after", () => {
    const engine = engineWith(web);
    const first = take(engine);
    expect(first.added.map((m) => `${m.externalIP}:${m.port}`)).toEqual(["192.0.2.10:80"]);
    expect(first).toMatchObject({ removed: [], changed: [], settingsChanged: false });
    expect(take(engine)).toMatchObject({ added: [], removed: [], changed: [] });
  });

  it("reports an updated Service as changed, and a deleted one as removed", () => {
    const engine = engineWith(web);
    take(engine);
    engine.setService("default/web", lbService({ name: "web", clusterIP: "10.96.0.11" }));
    const update = take(engine);
    expect(update.changed).toHaveLength(1);
    expect(update.changed[0]?.before.clusterIP).toBe("10.96.0.10");
    expect(update.changed[0]?.after.clusterIP).toBe("10.96.0.11");
    engine.setService("default/web", undefined);
    expect(take(engine).removed.map((m) => m.clusterIP)).toEqual(["10.96.0.11"]);
  });

  it("says whether an update changed anything the core reads", () => {
    const engine = engineWith(web);
    take(engine);
    const labelled = { ...web, metadata: { ...web.metadata, labels: { team: "x" } } };
    expect(engine.setService("default/web", labelled)).toBe(false);
    expect(engine.setService("default/web", structuredClone(web))).toBe(false);
    expect(
      engine.setService("default/web", lbService({ name: "web", clusterIP: "10.96.0.9" })),
    ).toBe(true);
    expect(engine.setService("default/absent", undefined)).toBe(false);
    expect(engine.setNode(node)).toBe(false);
    expect(engine.setNode({ spec: { podCIDRs: ["10.244.9.0/24"] } })).toBe(true);
    expect(take(engine).changed).toHaveLength(1);
  });

  it("nets out changes between two takes: added then removed is nothing", () => {
    const engine = engineWith();
    take(engine);
    engine.setService("default/web", web);
    engine.setService("default/web", undefined);
    expect(take(engine)).toMatchObject({ added: [], removed: [], changed: [] });
  });

  it("hands a key to the next claimant when the older Service goes, and reports the conflict's end", () => {
    const engine = engineWith(web, older);
    const first = take(engine);
    expect(first.added.map((m) => m.service.name)).toEqual(["older"]);
    expect(first.skipsAppeared.map((s) => `${s.service} ${s.reason}`)).toEqual([
      "default/web Conflict",
    ]);
    expect(engine.stats().conflicts).toBe(1);
    engine.setService("default/older", undefined);
    const handover = take(engine);
    expect(handover.changed.map(({ after }) => after.service.name)).toEqual(["web"]);
    expect(handover.skipsDisappeared.map((s) => s.reason)).toEqual(["Conflict"]);
    expect(engine.stats()).toMatchObject({ conflicts: 0, mappings: { ipv4: 1, ipv6: 0 } });
  });

  it("reports a skip once when it appears and once when it goes", () => {
    const engine = engineWith(lbService({ name: "bad", ingress: [{ ip: "192.0.2.300" }] }));
    expect(take(engine).skipsAppeared.map((s) => s.reason)).toEqual(["InvalidIP"]);
    engine.setService("default/bad", lbService({ name: "bad", ingress: [{ ip: "192.0.2.300" }] }));
    expect(take(engine)).toMatchObject({ skipsAppeared: [], skipsDisappeared: [] });
    expect(engine.stats().skipped.get("InvalidIP")).toBe(1);
    engine.setService("default/bad", undefined);
    expect(take(engine).skipsDisappeared.map((s) => s.reason)).toEqual(["InvalidIP"]);
    expect(engine.stats().skipped.size).toBe(0);
  });

  it("turns a change of the Node's pod CIDRs into a settings change, and warns once", () => {
    const engine = new RulesetEngine({ config: { families: ["ipv4"] } });
    engine.setService("default/web", web);
    const first = take(engine);
    expect(first.settingsChanged).toBe(false);
    expect(first.warningsAppeared).toEqual([
      "no ipv4 pod CIDR is known for this node: only host-network traffic is translated for ipv4",
    ]);
    expect(take(engine).warningsAppeared).toEqual([]);
    engine.setNode({ spec: { podCIDRs: ["10.244.7.0/24"] } });
    const changed = take(engine);
    expect(changed.settingsChanged).toBe(true);
    expect(changed.settings.families[0]?.localPods).toEqual({
      kind: "sourceCIDRs",
      cidrs: ["10.244.7.0/24"],
    });
    expect(changed.added).toEqual([]);
  });

  it("reads the operator's extra pod CIDRs besides the Node's", () => {
    const engine = new RulesetEngine({
      config: { families: ["ipv4"], extraPodCIDRs: ["10.245.0.0/16"] },
      node: { spec: { podCIDR: "10.244.1.0/24" } },
    });
    expect(engine.result().ruleset.families[0]?.localPods).toEqual({
      kind: "sourceCIDRs",
      cidrs: ["10.244.1.0/24", "10.245.0.0/16"],
    });
  });
});

/** Services crowded onto two IPs and two ports, so that claims collide and conflicts come and go. */
const crowdedServiceArbitrary = fc
  .record({
    name: fc.constantFrom("a", "b", "c"),
    ip: fc.constantFrom("192.0.2.1", "192.0.2.2", "2001:db8::1"),
    port: fc.constantFrom(80, 443),
    clusterIP: fc.constantFrom("10.96.0.1", "10.96.0.2"),
    created: fc.constantFrom("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
  })
  .map(({ name, ip, port, clusterIP, created }) =>
    lbService({
      name,
      clusterIP,
      clusterIPs: [clusterIP, "fd00:96::1"],
      ingress: [{ ip }],
      ports: [{ port, protocol: "TCP" }],
      created,
    }),
  );

/** One event of the model: a Service under one of a few keys set or removed, or the Node changed. */
const eventArbitrary = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("service" as const),
      key: fc.constantFrom("a", "b", "c", "d", "e"),
      service: fc.option(fc.oneof(serviceArbitrary, crowdedServiceArbitrary), { nil: undefined }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("node" as const),
      podCIDRs: fc.subarray(["10.244.1.0/24", "10.244.2.0/24", "fd00:10:244:1::/64", "bad"]),
    }),
  },
);

const skipText = (entry: SkippedEntry) => `${entry.service}|${entry.reason}|${entry.detail}`;

describe("RulesetEngine model", () => {
  it("after any sequence of events equals computeRuleset from scratch, conflicts and skips included", () => {
    fc.assert(
      fc.property(
        fc.array(eventArbitrary, { maxLength: 30 }),
        fc.boolean(),
        (events, takeOften) => {
          const engine = new RulesetEngine({ config, node });
          const present = new Map<string, ServiceInput>();
          let currentNode: NodeInput = node;
          // What a consumer of takeChanges() rebuilds: the ruleset, and the skips it has seen.
          let reported: Ruleset = new RulesetEngine({ config, node }).result().ruleset;
          const skips = new Map<string, number>();
          const take = () => {
            const changes = engine.takeChanges();
            reported = MappingTable.of(reported).rulesetAfter(changes);
            for (const entry of changes.skipsAppeared) {
              skips.set(skipText(entry), (skips.get(skipText(entry)) ?? 0) + 1);
            }
            for (const entry of changes.skipsDisappeared) {
              skips.set(skipText(entry), (skips.get(skipText(entry)) ?? 0) - 1);
            }
          };
          for (const event of events) {
            if (event.kind === "node") {
              currentNode = { spec: { podCIDRs: event.podCIDRs } };
              engine.setNode(currentNode);
            } else {
              engine.setService(event.key, event.service);
              if (event.service === undefined) present.delete(event.key);
              else present.set(event.key, event.service);
            }
            if (takeOften) take();
          }
          take();
          // Copies: computeRuleset counts one object listed twice once, the engine by key.
          const scratch = computeRuleset({
            services: [...present.values()].map((service) => structuredClone(service)),
            node: currentNode,
            config,
          });
          const incremental = engine.result();
          expect(JSON.stringify(incremental.ruleset)).toBe(JSON.stringify(scratch.ruleset));
          expect(incremental.skipped).toEqual(scratch.skipped);
          expect(incremental.conflicts).toEqual(scratch.conflicts);
          expect(incremental.warnings).toEqual(scratch.warnings);
          expect(JSON.stringify(reported)).toBe(JSON.stringify(scratch.ruleset));
          const seen = [...skips].flatMap(([text, count]) => Array<string>(count).fill(text));
          expect(seen.sort()).toEqual(scratch.skipped.map(skipText).sort());
          const stats = engine.stats();
          expect(stats.conflicts).toBe(scratch.conflicts.length);
          for (const family of scratch.ruleset.families) {
            expect(stats.mappings[family.family]).toBe(family.mappings.length);
          }
          const reasons = new Map<string, number>();
          for (const { reason } of scratch.skipped)
            reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
          expect(new Map(stats.skipped)).toEqual(reasons);
        },
      ),
      { numRuns: 300 },
    );
  });
});
