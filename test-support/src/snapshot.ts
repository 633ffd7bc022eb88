/**
 * Listings of netfilter state that two snapshots can be compared with: what is in the kernel,
 * without what changes by itself (handles, packet counters, the order a hash set prints in).
 */
import type { CommandRunner } from "@ipvs-node-controller/backend";

/**
 * One nft table as a list of lines, one JSON object per line (`nft -j list table`): without
 * handles, with counters zeroed, objects sorted by kind and name and set and map elements
 * sorted, rules kept in their order within each chain. Two listings are equal exactly when the
 * table holds the same chains, rules, sets, maps and elements. An absent table yields no lines.
 */
export async function nftTableLines(
  runner: CommandRunner,
  family: "ip" | "ip6" | "inet",
  table: string,
): Promise<string[]> {
  const listed = await runner("nft", ["-j", "list", "table", family, table]);
  if (listed.exitCode !== 0) {
    if (/No such file or directory/.test(listed.stderr)) return [];
    throw new Error(`nft list table ${family} ${table}: ${listed.stderr.trim()}`);
  }
  const document = JSON.parse(listed.stdout) as { nftables: Record<string, unknown>[] };
  return document.nftables
    .filter((item) => !("metainfo" in item))
    .map((item) => ({ key: objectKey(item), line: JSON.stringify(canonical(item)) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map(({ key: _, line }) => line);
}

/**
 * Where an object of a listing sorts: by kind, then by name, and rules by their chain. nft lists
 * objects in the order they were created, which a program that rebuilds its table may change
 * without changing what the table does; the order of rules within a chain does matter, and the
 * stable sort keeps it.
 */
function objectKey(item: Record<string, unknown>): string {
  const [kind, body] = Object.entries(item)[0] ?? ["", {}];
  const fields = (body ?? {}) as { chain?: unknown; name?: unknown };
  return `${kind} ${String(kind === "rule" ? fields.chain : fields.name)}`;
}

/**
 * `iptables-save` and `ip6tables-save` (the ones on PATH) as a list of lines, each prefixed with
 * its family (`ipv4 ` / `ipv6 `), without comment lines and with counters zeroed. `table`
 * restricts it to one table (`-t`).
 */
export async function iptablesSaveLines(
  runner: CommandRunner,
  options: { readonly table?: string } = {},
): Promise<string[]> {
  const args = options.table === undefined ? [] : ["-t", options.table];
  const lines: string[] = [];
  for (const [save, family] of [
    ["iptables-save", "ipv4"],
    ["ip6tables-save", "ipv6"],
  ] as const) {
    const saved = await runner(save, args);
    if (saved.exitCode !== 0) throw new Error(`${save}: ${saved.stderr.trim()}`);
    for (const line of saved.stdout.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      lines.push(`${family} ${line.replace(/\[\d+:\d+\]/g, "[0:0]")}`);
    }
  }
  return lines;
}

/** A copy without `handle` keys, with counters zeroed and element lists sorted. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === "handle") continue;
    if (key === "counter" && inner !== null && typeof inner === "object") {
      out[key] = { packets: 0, bytes: 0 };
    } else if (key === "elem" && Array.isArray(inner)) {
      out[key] = inner
        .map((element) => JSON.stringify(canonical(element)))
        .sort()
        .map((element) => JSON.parse(element) as unknown);
    } else {
      out[key] = canonical(inner);
    }
  }
  return out;
}

/**
 * `iptables-save` lines (as {@link iptablesSaveLines} gives them) with the rules of each chain
 * named `prefix*` sorted, every other line in place. kube-proxy's iptables mode writes the rules
 * of independent Services into its chains in an order that changes from one run to the next
 * (they match disjoint destinations, so the order means nothing); the built-in chains, where the
 * order of jumps matters, and everyone else's chains stay as listed.
 */
export function sortChainsNamed(lines: readonly string[], prefix: string): string[] {
  const out: string[] = [];
  let group: string[] = [];
  let groupChain: string | undefined;
  const flush = () => {
    out.push(...group.sort());
    group = [];
    groupChain = undefined;
  };
  for (const line of lines) {
    const chain = /^ipv[46] -A (\S+) /.exec(line)?.[1];
    if (chain?.startsWith(prefix)) {
      if (chain !== groupChain) flush();
      groupChain = chain;
      group.push(line);
    } else {
      flush();
      out.push(line);
    }
  }
  flush();
  return out;
}
