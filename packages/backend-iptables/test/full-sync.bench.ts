/**
 * Time of a full sync of 1k and 10k mappings (one TCP port per LB IP), for both variants, each in
 * a fresh network namespace. Run with `npx vitest bench --run --project backend-iptables`.
 *
 * Figures: "sync changing every mapping" alternates between two rulesets that differ in every
 * cluster IP (each iteration replaces all rules), "full re-sync" forces a restore of identical
 * rules (`full: true`), "no-op apply after a restart" is the first apply of a new instance, which
 * reads the state back and finds nothing to do (a later apply of the same instance diffs in memory
 * and reads nothing). One changed Service is timed in incremental-sync.bench.ts.
 */
import { spawnSync } from "node:child_process";
import type { Ruleset } from "@ipvs-node-controller/core";
import { hostRunner, kernelTestsEnabled, runnerIn } from "@ipvs-node-controller/test-support";
import { bench, describe } from "vitest";
import { createIptablesBackend, type IptablesVariant } from "../src/index.js";
import { family, mapping, ruleset } from "./fixtures.js";

const enabled = await kernelTestsEnabled("iptables full-sync benchmark");

/**
 * `count` mappings, each on its own external IP (172.16.0.0/12) to its own cluster IP; `variant`
 * shifts every cluster IP so that two variants differ in every mapping.
 */
function manyMappings(count: number, variant = 0): Ruleset {
  const mappings = Array.from({ length: count }, (_, i) => {
    const hi = Math.floor(i / 250);
    const lo = (i % 250) + 1;
    return mapping(`172.16.${hi}.${lo}`, 443, `10.${96 + variant}.${hi}.${lo}`, {
      name: `svc-${i}`,
    });
  }).sort((a, b) => (a.externalIP < b.externalIP ? -1 : a.externalIP > b.externalIP ? 1 : 0));
  return ruleset([family("ipv4", { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] }, mappings)]);
}

const SIZES = [1_000, 10_000];
const VARIANTS: IptablesVariant[] = ["nft", "legacy"];
let counter = 0;

// Benchmarks run no beforeAll/afterAll hooks: each namespace is made here and removed by the
// teardown of the last benchmark that uses it.
async function addNamespace(): Promise<string> {
  const namespace = `iptbench-${process.pid}-${++counter}`;
  const added = await hostRunner("ip", ["netns", "add", namespace]);
  if (added.exitCode !== 0) throw new Error(`ip netns add: ${added.stderr}`);
  return namespace;
}

for (const variant of VARIANTS) {
  for (const size of SIZES) {
    const namespace = enabled ? await addNamespace() : "";
    describe.skipIf(!enabled)(`iptables-${variant}, ${size} mappings`, () => {
      const desired = manyMappings(size);
      const backend = createIptablesBackend({ mode: variant, runner: runnerIn(namespace) });

      const desiredOther = manyMappings(size, 1);
      const options = { iterations: 3, warmupIterations: 0, time: 0, warmupTime: 0 };
      let flip = false;
      bench(
        "sync changing every mapping",
        async () => {
          flip = !flip;
          await backend.apply(flip ? desiredOther : desired);
        },
        {
          ...options,
          // An odd number of iterations ends on `desiredOther`: set up `desired` first.
          setup: async () => {
            await backend.apply(desired);
          },
        },
      );
      bench(
        "full re-sync",
        async () => {
          await backend.apply(desired);
        },
        options,
      );
      bench(
        "no-op apply after a restart",
        async () => {
          const restarted = createIptablesBackend({ mode: variant, runner: runnerIn(namespace) });
          const result = await restarted.apply(desired);
          if (result.mode !== "none") throw new Error(`expected no change, got ${result.mode}`);
        },
        {
          ...options,
          teardown: (_task, mode) => {
            if (mode === "run") spawnSync("ip", ["netns", "del", namespace]);
          },
        },
      );
    });
  }
}
