/**
 * Sync cost at scale on the real kernel, in a throwaway network namespace:
 * `npx vitest bench --run --project backend-nft`.
 */
import type { Mapping, Ruleset } from "@ipvs-node-controller/core";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, bench, describe } from "vitest";
import { createNftBackend } from "../src/index.js";
import { ruleset } from "./helpers.js";

const kernel = await kernelTestsEnabled("nft backend benchmarks");
const SIZE = 10_000;

/** `size` IPv4 mappings: 100 LB IPs of 203.0.113.0/24 times `size / 100` ports each. */
function largeRuleset(size: number, clusterOffset = 0): Ruleset {
  const mappings: Mapping[] = [];
  for (let index = 0; index < size; index++) {
    const host = 1 + (index % 100);
    const port = 1000 + Math.floor(index / 100);
    const cluster = index + clusterOffset;
    mappings.push({
      family: "ipv4",
      externalIP: `203.0.113.${host}`,
      protocol: "tcp",
      port,
      clusterIP: `10.96.${Math.floor(cluster / 250) % 250}.${1 + (cluster % 250)}`,
      service: { namespace: "bench", name: `svc-${index}` },
    });
  }
  return ruleset(mappings, { families: ["ipv4"] });
}

const base = largeRuleset(SIZE);
// The same ruleset with the first mapping pointing elsewhere: a one-element change.
const changed: Ruleset = {
  ...base,
  families: base.families.map((family) => ({
    ...family,
    mappings: family.mappings.map((mapping, index) =>
      index === 0 ? { ...mapping, clusterIP: "10.96.255.1" } : mapping,
    ),
  })),
};

// Set up once before the benchmarks are collected: tinybench's own hooks run around warm-up.
const topology: Topology | undefined = kernel
  ? await createTopology({ prefix: "nft-bench" })
  : undefined;
const incremental = topology && createNftBackend({ runner: topology.runner("node") });
await incremental?.apply(base);

describe.skipIf(!topology)(`nft backend, ${SIZE} mappings`, () => {
  const node = () => (topology as Topology).runner("node");
  // Benchmarks do not run afterAll hooks (vitest 4); the last benchmark's teardown destroys the
  // namespaces, and this hook stays for runners that do.
  afterAll(async () => {
    await topology?.destroy();
  });

  bench(
    "render the full-sync document",
    () => {
      createNftBackend().render(base);
    },
    { iterations: 5, time: 0 },
  );

  bench(
    "full sync (replace the table in one transaction)",
    async () => {
      await createNftBackend({ runner: node() }).apply(base);
    },
    { iterations: 5, time: 0 },
  );

  let flip = false;
  bench(
    "incremental sync of 1 changed mapping",
    async () => {
      flip = !flip;
      const result = await incremental?.apply(flip ? changed : base);
      if (result?.mode !== "incremental") {
        throw new Error(`expected an incremental sync, got ${result?.mode}`);
      }
    },
    { iterations: 20, time: 0 },
  );

  bench(
    "verify (read back and compare the whole table)",
    async () => {
      const verifier = createNftBackend({ runner: node() });
      if (!(await verifier.verify(base)) && !(await verifier.verify(changed))) {
        throw new Error("verify found neither ruleset");
      }
    },
    {
      iterations: 5,
      time: 0,
      teardown: async (_task, mode) => {
        if (mode === "run") await topology?.destroy();
      },
    },
  );
});
