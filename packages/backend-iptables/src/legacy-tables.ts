/**
 * Looking before touching iptables-legacy.
 *
 * Any iptables-legacy command that names a table (`iptables-legacy-save -t nat`, a restore) makes
 * the kernel create that table in the network namespace, loading the x_tables modules if need be.
 * From then on every iptables-nft command on the node, kube-proxy's included, warns "iptables-legacy
 * tables present". The kernel lists the legacy tables that exist in `/proc/net/ip_tables_names`
 * and `/proc/net/ip6_tables_names`, and reading those creates nothing: so we read them first and
 * run legacy tools only where a table exists.
 */
import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/backend";
import type { IpFamily } from "@ipvs-node-controller/core";

/** Where the kernel lists the existing legacy tables of each family. */
export const LEGACY_TABLE_LISTS: Readonly<Record<IpFamily, string>> = {
  ipv4: "/proc/net/ip_tables_names",
  ipv6: "/proc/net/ip6_tables_names",
};

/**
 * The iptables-legacy tables of `family` that exist in the runner's network namespace. The file
 * is read with `cat` through the runner, because the runner decides the namespace (the test
 * process and the tools may live in different ones). A missing file means that the x_tables
 * module of the family is not loaded, so no table exists. Returns undefined when the list cannot
 * be read (no `cat`, or another failure): the caller must then assume that tables may exist.
 */
export async function legacyTables(
  runner: CommandRunner,
  family: IpFamily,
): Promise<ReadonlySet<string> | undefined> {
  const file = LEGACY_TABLE_LISTS[family];
  try {
    const result = await runner("cat", [file]);
    if (result.exitCode === 0) {
      return new Set(
        result.stdout
          .split("\n")
          .map((line) => line.trim())
          .filter((line) => line !== ""),
      );
    }
    // `cat: FILE: No such file or directory`, not a wrapper's word for a missing `cat`.
    const missing = result.stderr.includes(file) && /No such file or directory/.test(result.stderr);
    return missing ? new Set() : undefined;
  } catch (error) {
    if (error instanceof ToolNotStartedError) return undefined;
    throw error;
  }
}
