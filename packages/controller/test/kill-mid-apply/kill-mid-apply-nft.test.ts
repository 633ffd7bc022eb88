/**
 * SIGKILL of `nft -j -f -` in the middle of a full sync of 10,000 mappings: see kill-mid-apply.ts.
 */
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  feed,
  KILLS,
  KUBE_PROXY_LIKE,
  nftSnapshot,
  rulesets,
  runKillSuite,
  UNRELATED_NFT_TABLE,
} from "./kill-mid-apply.js";

const enabled = await kernelTestsEnabled("SIGKILL mid-apply tests (nft)");

describe.skipIf(!enabled)("SIGKILL of nft in the middle of a full sync", () => {
  let topology: Topology;
  beforeAll(async () => {
    topology = await createTopology({ prefix: "killnft" });
  });
  afterAll(async () => {
    await topology?.destroy();
  });

  it(`leaves the complete old or the complete new table, both seen, over ${KILLS} kills`, async () => {
    const figures = await runKillSuite(
      topology,
      {
        backend: (runner) => createNftBackend({ runner }),
        async seed(topology) {
          await feed(topology, "iptables-nft-restore", [], KUBE_PROXY_LIKE.ipv4);
          await feed(topology, "ip6tables-nft-restore", [], KUBE_PROXY_LIKE.ipv6);
          await feed(topology, "nft", ["-f", "-"], UNRELATED_NFT_TABLE);
        },
        snapshot: nftSnapshot,
      },
      rulesets(),
    );
    console.log(`nft kills: ${JSON.stringify(figures)}`);
    expect(figures.landed).toBeGreaterThanOrEqual(KILLS);
  }, 600_000);
});
