/**
 * Which iptables the host uses: iptables-legacy (x_tables) or iptables-nft (nf_tables).
 *
 * Rules written through one are invisible to the other, so the controller must use the same one
 * as kube-proxy and the kubelet. The detection follows the iptables-wrapper that kube-proxy's
 * image ships: the kubelet's hint chain first, then whichever variant sees more rules.
 */
import { join } from "node:path";
import { type CommandRunner, type IpFamily, ToolNotStartedError } from "@ipvs-node-controller/core";

/** The two implementations of the iptables tools. */
export type IptablesVariant = "legacy" | "nft";

/** How the variant is chosen: `auto` detects it, the others force it. */
export type IptablesMode = "auto" | IptablesVariant;

/** The four programs a backend runs. */
export interface IptablesBinaries {
  readonly iptablesRestore: string;
  readonly iptablesSave: string;
  readonly ip6tablesRestore: string;
  readonly ip6tablesSave: string;
}

/** The outcome of {@link detectIptablesVariant}, with the evidence for logs. */
export interface VariantDetection {
  readonly variant: IptablesVariant;
  /** Rules (`-A ...` lines, both families, all tables) that iptables-legacy-save reported. */
  readonly legacyRules: number;
  /** The same for iptables-nft-save. */
  readonly nftRules: number;
  /** Why this variant was chosen, in words. */
  readonly reason: string;
}

/** The default program names of a variant, optionally inside `binDir`. */
export function variantBinaries(variant: IptablesVariant, binDir?: string): IptablesBinaries {
  const path = (name: string) => (binDir ? join(binDir, name) : name);
  return {
    iptablesRestore: path(`iptables-${variant}-restore`),
    iptablesSave: path(`iptables-${variant}-save`),
    ip6tablesRestore: path(`ip6tables-${variant}-restore`),
    ip6tablesSave: path(`ip6tables-${variant}-save`),
  };
}

/**
 * The iptables-legacy tables that exist in a family's kernel (`/proc/net/ip_tables_names`,
 * `/proc/net/ip6_tables_names`). Naming a legacy table to a legacy tool (`-t mangle`) creates it
 * when it does not exist yet, so a caller that must leave the node as it found it asks this first.
 */
export type LegacyTableNames = (family: IpFamily) => Promise<ReadonlySet<string>>;

/** Hint chains the kubelet creates in the mangle table of the iptables it uses. */
const HINT_CHAINS = [":KUBE-IPTABLES-HINT ", ":KUBE-KUBELET-CANARY "];

/** Output of one save run, or undefined when the program failed or could not be started. */
async function trySave(
  runner: CommandRunner,
  file: string,
  args: readonly string[],
  unstartable: string[],
): Promise<string | undefined> {
  try {
    const result = await runner(file, args);
    if (result.exitCode === 0) return result.stdout;
    // A runner that wraps the program (e.g. `ip netns exec`) reports a missing one this way.
    if (/No such file or directory/.test(result.stderr)) unstartable.push(file);
    return undefined;
  } catch {
    unstartable.push(file);
    return undefined;
  }
}

function countRules(outputs: readonly (string | undefined)[]): number {
  let count = 0;
  for (const output of outputs) {
    for (const line of output?.split("\n") ?? []) if (line.startsWith("-")) count++;
  }
  return count;
}

/**
 * Detects the host's iptables variant like kube-proxy's iptables-wrapper: if the kubelet's
 * `KUBE-IPTABLES-HINT` (or `KUBE-KUBELET-CANARY`) chain exists in the mangle table of one variant
 * (nft checked first), that one; otherwise the variant whose save tools report more rules over
 * both families; nft on a tie, including when neither sees anything, as current distributions
 * default to it. Throws a BackendError when none of the save tools can be started.
 *
 * With `legacyTables`, the legacy mangle table is read only when it exists, so that detecting
 * changes nothing on the node (reading every table at once never creates one).
 */
export async function detectIptablesVariant(
  runner: CommandRunner,
  binDir?: string,
  options: { readonly legacyTables?: LegacyTableNames } = {},
): Promise<VariantDetection> {
  const unstartable: string[] = [];
  let attempts = 0;
  const nft = variantBinaries("nft", binDir);
  const legacy = variantBinaries("legacy", binDir);
  const legacyMangle =
    options.legacyTables === undefined || (await options.legacyTables("ipv4")).has("mangle");
  const evidence = async (b: IptablesBinaries, readMangle: boolean) => {
    attempts += readMangle ? 3 : 2;
    const mangle = readMangle
      ? await trySave(runner, b.iptablesSave, ["-t", "mangle"], unstartable)
      : undefined;
    const all4 = await trySave(runner, b.iptablesSave, [], unstartable);
    const all6 = await trySave(runner, b.ip6tablesSave, [], unstartable);
    return {
      hinted: HINT_CHAINS.some((chain) => mangle?.includes(chain) ?? false),
      rules: countRules([all4, all6]),
    };
  };
  const nftEvidence = await evidence(nft, true);
  const legacyEvidence = await evidence(legacy, legacyMangle);
  if (unstartable.length === attempts) {
    throw new ToolNotStartedError(
      nft.iptablesSave,
      `cannot detect the iptables variant: none of ${[...new Set(unstartable)].join(", ")} could be started`,
    );
  }
  const counts = { legacyRules: legacyEvidence.rules, nftRules: nftEvidence.rules };
  if (nftEvidence.hinted) {
    return { variant: "nft", ...counts, reason: "the kubelet's hint chain is in iptables-nft" };
  }
  if (legacyEvidence.hinted) {
    return {
      variant: "legacy",
      ...counts,
      reason: "the kubelet's hint chain is in iptables-legacy",
    };
  }
  if (counts.legacyRules > counts.nftRules) {
    return {
      variant: "legacy",
      ...counts,
      reason: `iptables-legacy sees more rules (${counts.legacyRules} > ${counts.nftRules})`,
    };
  }
  return {
    variant: "nft",
    ...counts,
    reason:
      counts.nftRules > counts.legacyRules
        ? `iptables-nft sees more rules (${counts.nftRules} > ${counts.legacyRules})`
        : `both variants see ${counts.nftRules} rules; nft is the default on a tie`,
  };
}
