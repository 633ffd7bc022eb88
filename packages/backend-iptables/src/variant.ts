/**
 * Which iptables the host uses: iptables-legacy (x_tables) or iptables-nft (nf_tables).
 *
 * Rules written through one are invisible to the other, so the controller must use the same one
 * as kube-proxy and the kubelet. The detection follows the iptables-wrapper that kube-proxy's
 * image ships: the kubelet's hint chain first, then whichever variant sees more rules.
 */
import { join } from "node:path";
import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/backend";
import { legacyTables } from "./legacy-tables.js";

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

/** Hint chains the kubelet creates in the mangle table of the iptables it uses. */
const HINT_CHAINS = [":KUBE-IPTABLES-HINT ", ":KUBE-KUBELET-CANARY "];

/** Which save runs started, and which of them could not. */
interface Attempts {
  started: number;
  readonly unstartable: string[];
}

/** Output of one save run, or undefined when the program failed or could not be started. */
async function trySave(
  runner: CommandRunner,
  file: string,
  args: readonly string[],
  attempts: Attempts,
): Promise<string | undefined> {
  attempts.started++;
  const { unstartable } = attempts;
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
 * iptables-legacy is only asked about tables that exist (see `legacyTables`): naming a table it
 * does not have would create it, and a node that never used legacy iptables would from then on
 * carry empty legacy tables that make every iptables-nft command warn.
 */
export async function detectIptablesVariant(
  runner: CommandRunner,
  binDir?: string,
): Promise<VariantDetection> {
  const attempts: Attempts = { started: 0, unstartable: [] };
  const nft = variantBinaries("nft", binDir);
  const legacy = variantBinaries("legacy", binDir);
  /** `exists(table)` says whether a save naming that table (or, for "*", any) may run. */
  const evidence = async (
    b: IptablesBinaries,
    exists: (family: "ipv4" | "ipv6", table: string) => boolean,
  ) => {
    const mangle = exists("ipv4", "mangle")
      ? await trySave(runner, b.iptablesSave, ["-t", "mangle"], attempts)
      : undefined;
    const all4 = exists("ipv4", "*")
      ? await trySave(runner, b.iptablesSave, [], attempts)
      : undefined;
    const all6 = exists("ipv6", "*")
      ? await trySave(runner, b.ip6tablesSave, [], attempts)
      : undefined;
    return {
      hinted: HINT_CHAINS.some((chain) => mangle?.includes(chain) ?? false),
      rules: countRules([all4, all6]),
    };
  };
  const nftEvidence = await evidence(nft, () => true);
  const legacyTablesOf = {
    ipv4: await legacyTables(runner, "ipv4"),
    ipv6: await legacyTables(runner, "ipv6"),
  };
  const legacyEvidence = await evidence(legacy, (family, table) => {
    const tables = legacyTablesOf[family];
    // Unknown (the list could not be read): ask the tools, as without the list.
    if (tables === undefined) return true;
    return table === "*" ? tables.size > 0 : tables.has(table);
  });
  const { unstartable } = attempts;
  if (unstartable.length === attempts.started) {
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
