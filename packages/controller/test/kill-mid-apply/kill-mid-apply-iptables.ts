/**
 * The SIGKILL suite of kill-mid-apply.ts for one iptables variant. Each family is one restore, so
 * a kill can land in the first or in the second; when the second fails the backend puts the first
 * family back, which this suite proves as well (the whole ruleset is old or new).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createIptablesBackend,
  type IptablesVariant,
} from "@ipvs-node-controller/backend-iptables";
import {
  createTopology,
  kernelTestsEnabled,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  feed,
  type KernelSnapshot,
  KILLS,
  KUBE_PROXY_LIKE,
  nftSnapshot,
  rulesets,
  runKillSuite,
  UNRELATED_NFT_TABLE,
} from "./kill-mid-apply.js";

/**
 * Both families' `*-save` output of `variant` (without comments and counters), our chains and
 * jumps apart from the rest, plus every nft table.
 */
async function iptablesSnapshot(
  topology: Topology,
  variant: IptablesVariant,
): Promise<KernelSnapshot> {
  const nft = await nftSnapshot(topology);
  const ours: string[] = [];
  const others = [...nft.others];
  for (const save of [`iptables-${variant}-save`, `ip6tables-${variant}-save`]) {
    const result = await topology.runner("node")(save, []);
    if (result.exitCode !== 0) throw new Error(`${save}: ${result.stderr}`);
    for (const line of result.stdout.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const tagged = `${save} ${line.replace(/\[\d+:\d+\]/g, "[0:0]")}`;
      (line.includes("IPVSNC-") ? ours : others).push(tagged);
    }
  }
  return { ours: ours.join("\n"), others };
}

/**
 * Defines the suite for `variant` with `mappings` mappings per ruleset. iptables-nft rereads and
 * rewrites whole chains through nf_tables and takes several times as long as iptables-legacy for
 * the same document, so its suite uses fewer mappings to stay within a CI run's budget.
 */
export async function defineIptablesKillSuite(
  variant: IptablesVariant,
  mappings: number,
): Promise<void> {
  const enabled = await kernelTestsEnabled(`SIGKILL mid-apply tests (iptables-${variant})`);

  describe.skipIf(!enabled)(
    `SIGKILL of iptables-${variant}-restore in the middle of a sync`,
    () => {
      let topology: Topology;
      let lockDir: string;
      beforeAll(async () => {
        // iptables-legacy serialises on a lock file; this file's own, as a container would have.
        lockDir = mkdtempSync(join(tmpdir(), "kill-mid-apply-xtables-"));
        process.env.XTABLES_LOCKFILE = join(lockDir, "xtables.lock");
        topology = await createTopology({ prefix: `kill${variant[0]}` });
      });
      afterAll(async () => {
        await topology?.destroy();
        rmSync(lockDir, { recursive: true, force: true });
      });

      it(`leaves the complete old or the complete new rules, both seen, over ${KILLS} kills`, async () => {
        const figures = await runKillSuite(
          topology,
          {
            backend: (runner) => createIptablesBackend({ mode: variant, runner }),
            async seed(topology) {
              await feed(topology, `iptables-${variant}-restore`, [], KUBE_PROXY_LIKE.ipv4);
              await feed(topology, `ip6tables-${variant}-restore`, [], KUBE_PROXY_LIKE.ipv6);
              await feed(topology, "nft", ["-f", "-"], UNRELATED_NFT_TABLE);
            },
            snapshot: (topology) => iptablesSnapshot(topology, variant),
          },
          rulesets(mappings),
        );
        console.log(`iptables-${variant} kills (${mappings} mappings): ${JSON.stringify(figures)}`);
        expect(figures.landed).toBeGreaterThanOrEqual(KILLS);
      }, 600_000);
    },
  );
}
