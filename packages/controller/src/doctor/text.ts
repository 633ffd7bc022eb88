/**
 * The human-readable form of a {@link DoctorReport}: the verdict first, then what the node runs
 * on, each Service's translations, what is left over or skipped, and the problems last, where a
 * terminal leaves them in view.
 */
import type {
  DoctorReport,
  MappingStatus,
  PodTrafficFamily,
  ProbeOutcome,
  RulesSummary,
} from "./schema.js";

/** Left-aligned columns, two spaces apart, each as wide as its widest cell. */
function columns(rows: readonly (readonly string[])[], indent: string): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows.map(
    (row) =>
      indent +
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
  );
}

/** `1 problem`, `2 problems`. */
export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** `192.0.2.10 tcp/80`. */
export function keyText(key: {
  readonly externalIP: string;
  readonly protocol: string;
  readonly port: number;
}): string {
  return `${key.externalIP} ${key.protocol}/${key.port}`;
}

/** `ok`, `refused`, `timeout`, or `error` with the system's code. */
export function probeText(outcome: ProbeOutcome): string {
  return outcome.result === "error" ? `error ${outcome.detail ?? ""}`.trim() : outcome.result;
}

/** Whether an address is local to the node, `local?` when unknown. */
function localityText(local: boolean | null): string {
  return local === null ? "local?" : local ? "local" : "not local";
}

function rulesLine(rules: RulesSummary): string {
  if (rules.error !== undefined) return `${rules.backend}: cannot read (${rules.error})`;
  if (!rules.present) return `${rules.backend}: none in the kernel`;
  const state = rules.problems.length === 0 ? "" : `, ${plural(rules.problems.length, "problem")}`;
  return `${rules.backend}: ${plural(rules.mappings, "translation")} in the kernel${state}`;
}

function podTrafficLine(family: PodTrafficFamily): string {
  switch (family.match) {
    case "inputInterface":
      return `${family.family}: arriving on ${family.interface}`;
    case "inputInterfacePrefix":
      return `${family.family}: arriving on ${family.interfacePrefix}*`;
    case "sourceCIDRs":
      return family.cidrs.length === 0
        ? `${family.family}: no pod CIDR (host-network traffic only)`
        : `${family.family}: from ${family.cidrs
            .map(({ cidr, sources }) => `${cidr} (${sources.join(", ") || "unknown source"})`)
            .join(", ")}`;
  }
}

function mappingRow(mapping: MappingStatus): string[] {
  const rule =
    mapping.rule === "wrong-target"
      ? `rule to ${mapping.liveClusterIP ?? "?"}`
      : mapping.rule === "wrong-sources"
        ? `rule for ${mapping.liveAllowedSources?.join(", ") ?? "every source"}`
        : mapping.rule === "present"
          ? "rule ok"
          : `rule ${mapping.rule}`;
  const row = [keyText(mapping), "->", mapping.clusterIP, localityText(mapping.local), rule];
  const probe = mapping.probe;
  if (probe !== undefined) {
    const cluster = probe.clusterIP === undefined ? "" : ` (cluster IP: ${probe.clusterIP.result})`;
    row.push(`probe ${probeText(probe)}${cluster}`);
  }
  return row;
}

/** Renders the report for a terminal, one line per fact. */
export function formatDoctorReport(report: DoctorReport): string {
  const lines: string[] = [];
  const title = report.node.name === undefined ? "this node" : `node ${report.node.name}`;
  lines.push(`ipvs-node-controller doctor: ${title}`);
  lines.push(`verdict: ${report.summary}`);
  lines.push("");

  const ipCounts = report.node.externalIPs
    .map(
      ({ family, total, local }) => `${family} ${local === null ? "?" : local} of ${total} local`,
    )
    .join(", ");
  const { tools, source } = report;
  const sourceText =
    source.kind === "files"
      ? `files: ${source.services}${source.node === undefined ? "" : `, ${source.node}`}`
      : `API ${source.server}${source.nodeFound ? "" : " (Node not found)"}`;
  lines.push("node");
  lines.push(
    ...columns(
      [
        ["kernel", report.node.kernel],
        [
          "kube-ipvs0",
          report.node.kubeIpvsInterface === null
            ? "unknown"
            : report.node.kubeIpvsInterface
              ? "present"
              : "absent",
        ],
        ["external IPs", ipCounts],
        [
          "node IPs",
          report.node.ips
            .map(({ family, address, source }) => `${family} ${address} (${source})`)
            .join(", "),
        ],
        ["nft", tools.nft.version ?? `unavailable (${tools.nft.error ?? ""})`],
        [
          "iptables",
          tools.iptables.variant === undefined
            ? `unavailable (${tools.iptables.error ?? ""})`
            : `iptables-${tools.iptables.variant} (${tools.iptables.reason ?? ""})`,
        ],
        ["rules", rulesLine(report.rules)],
        ["other backend", rulesLine(report.otherBackendRules)],
        [
          "pod traffic",
          `${report.podTraffic.detectLocalMode}; ${report.podTraffic.families.map(podTrafficLine).join("; ")}`,
        ],
        ["source", sourceText],
      ],
      "  ",
    ),
  );

  lines.push("");
  lines.push(`services that need translation (${report.services.length})`);
  if (report.services.length === 0) lines.push("  none");
  for (const service of report.services) {
    lines.push(`  ${service.service}`);
    lines.push(...columns(service.mappings.map(mappingRow), "    "));
  }

  if (report.restrictions.length > 0) {
    const pods: Record<string, string> = {
      all: "all pods",
      some: "some pods",
      none: "no pod",
      unknown: "pods: CIDRs unknown",
    };
    lines.push("");
    lines.push(`restricted by loadBalancerSourceRanges (${report.restrictions.length})`);
    for (const { service, addresses } of report.restrictions) {
      lines.push(`  ${service}`);
      lines.push(
        ...columns(
          addresses.map((address) => [
            `${address.externalIP} ${address.ports.join(" ")}`,
            `from ${address.allowedSources.join(", ")}`,
            `${pods[address.admitsPods]}, ${address.admitsNode ? "the node" : "not the node"}`,
          ]),
          "    ",
        ),
      );
    }
  }

  lines.push("");
  lines.push(`rules of ours that no Service wants (${report.staleRules.length})`);
  if (report.staleRules.length === 0) lines.push("  none");
  lines.push(
    ...columns(
      report.staleRules.map((rule) => [
        keyText(rule),
        "->",
        rule.clusterIP,
        localityText(rule.local),
        rule.owner === "" ? "(no owner named)" : `(was ${rule.owner})`,
      ]),
      "  ",
    ),
  );

  if (report.skipped.length > 0) {
    lines.push("");
    lines.push(`skipped (${report.skipped.length})`);
    for (const entry of report.skipped) {
      lines.push(`  ${entry.service}: ${entry.reason}: ${entry.detail}`);
    }
  }
  if (report.conflicts.length > 0) {
    lines.push("");
    lines.push(`conflicts (${report.conflicts.length})`);
    for (const conflict of report.conflicts) {
      lines.push(`  ${keyText(conflict)}: ${conflict.winner} wins over ${conflict.loser}`);
    }
  }
  if (report.warnings.length > 0) {
    lines.push("");
    lines.push("warnings");
    for (const warning of report.warnings) lines.push(`  ${warning}`);
  }
  if (report.notes.length > 0) {
    lines.push("");
    lines.push("notes");
    for (const note of report.notes) lines.push(`  - ${note.message}`);
  }
  lines.push("");
  lines.push(`problems (${report.problems.length})`);
  if (report.problems.length === 0) lines.push("  none");
  for (const problem of report.problems) lines.push(`  - ${problem.code}: ${problem.message}`);
  return lines.join("\n");
}
