// The report as Markdown: the full tables (bench/results/*.md) and the short table of the root
// README, both generated from the JSON alone.

import { footprintBackends, runsOverlap } from "./goals.mjs";

const count = (n) => Number(n).toLocaleString("en-US");
const ms = (value) =>
  value === undefined || value === null || Number.isNaN(value)
    ? "–"
    : value >= 100
      ? Math.round(value).toLocaleString("en-US")
      : value.toFixed(1);
const pair = (summary) => (summary?.n ? `${ms(summary.p50)} / ${ms(summary.p99)}` : "–");
const percent = (ratio) => `${(ratio * 100).toFixed(1)} %`;

/**
 * Single changes never seen in the kernel, per size, of all made (the unmeasured warm-up ones
 * included): `0 / 0 / 1 of 53`.
 */
const neverSeen = (bySize, report) => {
  const { sizes, changes, warmup } = report.parameters;
  return `${sizes.map((n) => bySize?.[n]?.missed ?? "–").join(" / ")} of ${changes + warmup}`;
};

/** A table with its columns padded to one width, as the formatter (Biome) writes them. */
function table(header, rows) {
  const width = (text) => [...text].length;
  const widths = header.map((_, column) =>
    Math.max(3, ...[header, ...rows].map((cells) => width(cells[column]))),
  );
  const line = (cells) =>
    `| ${cells.map((cell, column) => cell + " ".repeat(widths[column] - width(cell))).join(" | ")} |`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** One line naming the machine, its software and its load. */
export function machineLine(report) {
  const m = report.machine;
  const parts = [
    `${m.cpu} × ${m.cpus}`,
    `${m.memoryGiB} GiB`,
    m.kernel,
    `Node.js ${m.node}`,
    m.nft,
    m.iptablesNft,
    m.iptablesLegacy,
    m.kubeApiserver && `kube-apiserver ${m.kubeApiserver}`,
  ].filter(Boolean);
  return parts.join(", ");
}

function loadLine(report) {
  const { before, after } = report.loadAverage;
  const busy = Math.max(before[0], after[0]) > report.machine.cpus;
  return (
    `load average (1/5/15 min) ${before.join(" / ")} before, ${after.join(" / ")} after` +
    (busy
      ? `: the machine was busy with other work (load above its ${report.machine.cpus} CPUs), so times are pessimistic and rates low`
      : "")
  );
}

function verdict(goal) {
  const note = goal.note ? ` (${goal.note})` : "";
  if (goal.met === null) return `not measured${note}`;
  return `${goal.met ? "met" : `**missed** by ${goal.missedBy}`}${note}`;
}

function goalsSection(report) {
  const rows = report.goals.map((goal) => [
    goal.goal,
    goal.measured === null ? "–" : `${goal.measured}${goal.unit}`,
    goal.target,
    verdict(goal),
  ]);
  return table(["goal", "measured", "target", ""], rows);
}

function incrementalSection(report) {
  const data = report.incrementalSyncMs;
  const sizes = report.parameters.sizes;
  const rows = Object.entries(data).map(([backend, bySize]) => [
    backend,
    ...sizes.map((n) => pair(bySize[n])),
    ...sizes.map((n) => pair(bySize[n]?.applyMs)),
    Object.keys(bySize[sizes.at(-1)]?.applyModes ?? {}).join(", "),
    bySize[sizes.at(-1)]?.outsideRestoreShare === undefined
      ? "–"
      : percent(bySize[sizes.at(-1)].outsideRestoreShare),
    sizes.map((n) => ms(bySize[n]?.fullSyncMs)).join(" / "),
  ]);
  return [
    "## One changed Service: watch event → end of the kernel transaction",
    "",
    "In the controller's process, inside a node namespace: `trimService` + `engine.setService` +",
    "`engine.takeChanges` + `backend.applyChanges`, for a status change that moves one Service (3",
    `ports) to a new LB IP; ${report.parameters.changes} changes per cell after ${report.parameters.warmup} unmeasured ones. p50 / p99 in ms.`,
    "",
    table(
      [
        "backend",
        ...sizes.map((n) => `${count(n)} Services`),
        ...sizes.map((n) => `apply only, ${count(n)}`),
        "apply mode",
        `outside iptables-restore, ${count(sizes.at(-1))}`,
        `full sync (ms), ${sizes.map(count).join(" / ")}`,
      ],
      rows,
    ),
    "",
    "`apply mode` is what `applyChanges` did: `incremental` sends only the changed mappings, `full`",
    "rewrites all of them (the iptables backend reads its chains back and restores them whole).",
  ].join("\n");
}

function latencySection(report) {
  const data = report.programmingLatencyMs;
  const sizes = report.parameters.sizes;
  const large = sizes.at(-1);
  const rows = Object.entries(data).map(([backend, bySize]) => [
    backend,
    ...sizes.map((n) => pair(bySize[n])),
    neverSeen(bySize, report),
    pair(bySize[large]?.controllerSyncMs),
    ms(bySize[large]?.readySeconds * 1000),
  ]);
  const bursts = [];
  for (const [backend, bySize] of Object.entries(data)) {
    for (const n of sizes) {
      const burst = bySize[n]?.burst;
      if (!burst) continue;
      bursts.push([
        backend,
        count(n),
        `${burst.landed} of ${burst.changes} in ${ms(burst.patchWindowMs)} ms`,
        String(burst.syncs),
        burst.syncMs.map(ms).join(", "),
        ms(burst.lastPatchToAllLandedMs),
        ms(burst.boundMs),
        burst.withinBound ? "yes" : "**no**",
        ms(burst.latencyMs.max),
      ]);
    }
  }
  const p = report.parameters;
  return [
    "## Network programming latency: status patch accepted → rule in the kernel",
    "",
    "`ipvs-node-controller run` in a node namespace against a real kube-apiserver + etcd (reached",
    "over a veth), started as the DaemonSet starts it. Each change is a JSON patch of",
    "`status.loadBalancer` moving one Service to a new LB IP, timed from the patch call's response to",
    `the new rule being in the kernel. ${p.changes} changes per cell, each after the previous one landed and`,
    `\`--min-sync-period\` (${p.minSyncPeriod}) passed. p50 / p99 in ms (the p99 of ${p.changes} changes is the`,
    "slowest one). A change whose rule was not seen within 60 s is counted as never seen and left",
    "out of the percentiles. How the rule was seen (see bench/README.md for why):",
    "",
    ...Object.entries(data).map(
      ([backend, bySize]) =>
        `- ${backend}: ${bySize[large]?.watcher ?? "–"}${bySize[large]?.checkMs ? `; one check took ${ms(bySize[large].checkMs.p50)} ms (p50) at ${count(large)}` : ""}`,
    ),
    "",
    table(
      [
        "backend",
        ...sizes.map((n) => `${count(n)} Services`),
        `changes never seen, ${sizes.map(count).join(" / ")}`,
        `controller's own sync, ${count(large)}`,
        `start → all rules in (ms), ${count(large)}`,
      ],
      rows,
    ),
    "",
    `Bursts: ${p.burst} changes to distinct Services patched evenly over ${p.burstWindowMs} ms. The bound is`,
    "`--min-sync-period` plus the longest sync of the burst; the last change must land within it.",
    "",
    table(
      [
        "backend",
        "Services",
        "patched",
        "syncs",
        "sync durations (ms)",
        "last patch → all landed (ms)",
        "bound (ms)",
        "within",
        "slowest change (ms)",
      ],
      bursts,
    ),
  ].join("\n");
}

function connectionSection(report) {
  const data = report.connectionRate;
  const n = data.services;
  const rows = Object.entries(data)
    .filter(([, value]) => typeof value === "object" && value?.[1])
    .map(([backend, value]) => [
      backend,
      count(value[1].perSecond),
      count(value[n].perSecond),
      percent(value.ratio),
      value[1].runs.map(count).join(", "),
      value[n].runs.map(count).join(", "),
      String(value[1].errors + value[n].errors),
    ]);
  const noisy = Object.entries(data)
    .filter(([, value]) => typeof value === "object" && value?.[1])
    .filter(([, value]) => runsOverlap(value[1].runs, value[n].runs))
    .map(([backend]) => backend);
  return [
    "## Per packet: new TCP connections per second to the LB IP of the last Service",
    "",
    "From a pod namespace to the LB IP of the last of the Services (the last rule of an iptables",
    "chain), DNAT to a listener on its cluster IP in the node namespace; rules applied by the",
    `backend itself. ${data.concurrency} connections in flight, each reset by the client once`,
    `established; ${data.runs} runs of ${data.seconds} s per case, the two cases alternating; the median run.`,
    "",
    table(
      [
        "backend",
        "1 Service",
        `${count(n)} Services`,
        "ratio",
        "runs, 1",
        `runs, ${count(n)}`,
        "errors",
      ],
      rows,
    ),
    ...(noisy.length > 0
      ? [
          "",
          `For ${noisy.join(", ")}, the runs of the two cases overlap: the difference between them is within the`,
          "noise of the machine, and the ratio says nothing either way.",
        ]
      : []),
    ...unmatchedSection(data),
  ].join("\n");
}

/** New connections to the cluster IP itself: the cost of our rules for a packet they pass by. */
function unmatchedSection(data) {
  const n = data.services;
  const measured = Object.entries(data).filter(
    ([, value]) => typeof value === "object" && value?.unmatched,
  );
  if (measured.length === 0) return [];
  const rows = measured.map(([backend, { unmatched }]) => [
    backend,
    count(unmatched.none.perSecond),
    count(unmatched[n].perSecond),
    percent(unmatched.ratio),
    unmatched.none.runs.map(count).join(", "),
    unmatched[n].runs.map(count).join(", "),
  ]);
  const noisy = measured
    .filter(([, { unmatched }]) => runsOverlap(unmatched.none.runs, unmatched[n].runs))
    .map(([backend]) => backend);
  return [
    "",
    "A packet the rules do not translate: the same pod connects to the cluster IP itself, with no",
    `rules of ours and with the ${count(n)} Services' rules (its key is not in the map, so nft stops`,
    "after one lookup; iptables after the local-pod match and the bucket's tests).",
    "",
    table(
      [
        "backend",
        "no rules of ours",
        `${count(n)} Services`,
        "ratio",
        "runs, none",
        `runs, ${count(n)}`,
      ],
      rows,
    ),
    ...(noisy.length > 0
      ? ["", `For ${noisy.join(", ")}, the runs of the two cases overlap: within the noise.`]
      : []),
  ];
}

function memorySection(report) {
  const data = report.rssMiB;
  const backends = Object.keys(data.bySize ?? {});
  const rows = [];
  for (const backend of backends) {
    for (const [n, memory] of Object.entries(data.bySize[backend])) {
      rows.push([
        backend,
        count(n),
        String(memory.steadyMiB),
        String(memory.startupPeakMiB),
        `${memory.peakOverChangesMiB} (${memory.changes} changes)`,
        String(memory.heapUsedMiB),
      ]);
    }
  }
  const heap = data.heap;
  const lines = [
    "## Memory of `run`",
    "",
    `Resident memory of the controller's process (\`NODE_OPTIONS=${data.nodeOptions}\` as in the`,
    "DaemonSet, no memory limit), from /proc/PID/status: steady is VmRSS once settled, the start-up",
    "peak is VmHWM up to then; VmHWM is then reset and read again after the changes. MiB.",
    "",
    table(
      [
        "backend",
        "Services",
        "steady",
        "peak at start-up",
        "peak over changes",
        "V8 heap used at the end",
      ],
      rows,
    ),
  ];
  if (heap) {
    const [small, large] = Object.keys(heap.heapMiB);
    lines.push(
      "",
      `Live V8 heap (from heap snapshots, nft): ${heap.heapMiB[small]} MiB at ${count(small)} Services, ` +
        `${heap.heapMiB[large]} MiB at ${count(large)}: **${heap.perServiceKiB} KiB per Service**. ` +
        "Where the difference goes (self size by constructor, the 10 largest):",
      "",
      table(
        ["constructor", "objects", "KiB", "bytes per Service"],
        heap.topGrowth.map((g) => [
          `\`${g.name}\``,
          count(g.count),
          count(g.kib),
          count(g.perServiceBytes),
        ]),
      ),
      "",
      `The whole heap at ${count(large)} Services, the 10 largest:`,
      "",
      table(
        ["constructor", "objects", "KiB"],
        heap.top.map((g) => [`\`${g.name}\``, count(g.count), count(g.kib)]),
      ),
    );
  }
  return lines.join("\n");
}

function originalSection(report) {
  const data = report.originalMethod;
  const backends = Object.keys(Object.values(data)[0]?.oursSeconds ?? {});
  const rows = Object.values(data).map((entry) => [
    count(entry.services),
    String(entry.originalSeconds),
    count(entry.originalProcesses),
    ...backends.map((b) => `${entry.oursSeconds[b]} s (${entry.speedUp[b]}×)`),
  ]);
  const tool = Object.values(data)[0]?.iptables ?? "iptables";
  return [
    "## The original controller's method, emulated, against our full sync",
    "",
    "Not the original controller: its method, emulated (`pnpm bench:report --original-binary PATH`",
    "runs the original itself instead). Per Service (one TCP port), a MARK and a DNAT rule in each",
    `of two chains, each checked and then appended with one \`iptables\` process per step (${tool}),`,
    "one after the other, from Node.js; ours: the same Services through the engine and one full",
    "sync, in process, without the controller's start-up or the API server. Each in a fresh",
    "namespace; seconds until every rule is in, and our speed-up.",
    "",
    table(
      [
        "Services (1 port)",
        "emulated original (s)",
        "iptables processes",
        ...backends.map((b) => `ours, ${b}`),
      ],
      rows,
    ),
  ].join("\n");
}

/** The original controller's programs first, then ours, in the order they ran. */
const programName = (name) =>
  name.startsWith("original-") ? `original, ${name.slice("original-".length)}` : `ours, ${name}`;

function originalControllerSection(report) {
  const data = report.originalController;
  const o = data.original;
  const lines = [
    "## The original controller against ours, end to end",
    "",
    originalLine(o),
    "and ours, each started as its DaemonSet starts it, one after the other in the same node",
    "namespace against the same kube-apiserver, with LoadBalancer Services of 1 TCP port each (the",
    "original translates whole IPs). The original runs `iptables` of the variant its row names",
    `(${Object.values(o.iptables).join(", ")}); ours, its backend.`,
    "",
    "Times are from the process's start. A Service counts once its translation is complete (the",
    "original: its DNAT rules in both of its chains, for pods and for the host; ours: the map",
    "element or the DNAT rule), seen by listing the kernel every 20 ms until the first rule, then",
    "every 250 ms. Memory: VmRSS once settled (steady) and VmHWM at the end of the session (peak),",
    `in MiB. Then ${data.changes} changes, each moving one Service to a new LB IP: from the status patch`,
    "accepted to the new IP's translation in the kernel (p50 / slowest; `nft monitor`, or",
    "back-to-back listings for iptables-legacy), and whether the old IP's translation was still",
    `in the kernel once \`--min-sync-period\` (${report.parameters.minSyncPeriod}) and one more second had passed.`,
  ];
  for (const [n, programs] of Object.entries(data.bySize)) {
    lines.push(
      "",
      `${count(n)} Services:`,
      "",
      table(
        [
          "program",
          "first rule (s)",
          "all rules (s)",
          "RSS steady",
          "RSS peak",
          "one change (ms)",
          "changes never seen",
          "old IP's rules left behind",
        ],
        Object.entries(programs).map(([name, s]) => [
          programName(name),
          String(s.firstRuleSeconds),
          String(s.allRulesSeconds),
          String(s.steadyMiB),
          String(s.peakMiB),
          pair({ ...s.changeMs, p99: s.changeMs.max }),
          `${s.changeMs.missed} of ${s.changes}`,
          `${s.oldRulesLeftBehind} of ${s.changes}`,
        ]),
      ),
    );
  }
  const summary = originalSummary(data);
  if (summary) lines.push("", summary);
  return lines.join("\n");
}

/** At the largest size: how much longer the original takes, and how much more memory ours holds. */
function originalSummary(data) {
  const [n, programs] = Object.entries(data.bySize).at(-1) ?? [];
  if (!programs) return undefined;
  const entries = Object.entries(programs);
  const originals = entries.filter(([name]) => name.startsWith("original-"));
  const ours = entries.filter(([name]) => !name.startsWith("original-"));
  if (originals.length === 0 || ours.length === 0) return undefined;
  const ratios = (pick) =>
    ours.map(([backend, s]) => `${pick(s).toFixed(1)}× (${backend})`).join(", ");
  const sentences = originals.map(
    ([name, original]) =>
      `The original with ${name.slice("original-".length)} takes ` +
      ratios((s) => original.allRulesSeconds / s.allRulesSeconds) +
      " as long as ours to have every rule in, and ours holds " +
      ratios((s) => s.steadyMiB / original.steadyMiB) +
      " its steady memory.",
  );
  return `At ${count(n)} Services: ${sentences.join(" ")}`;
}

/** A size in bytes as KiB. */
const kib = (bytes) => `${count(Math.round(bytes / 1024))} KiB`;

/** The original controller as the report names it: version, binary, how it was built. */
function originalLine(o) {
  const built = [
    o.module && `Go module ${o.module}`,
    o.goVersion && `built with ${o.goVersion}`,
    `sha256 ${o.sha256.slice(0, 12)}…`,
  ].filter(Boolean);
  return `The original controller${o.version ? ` ${o.version}` : ""} (\`${o.binary}\`: ${built.join(", ")})`;
}

/** The image line of the footprint: each architecture's size, or why there is none. */
function imageLine(image) {
  const images = Object.entries(image?.images ?? {});
  if (images.length === 0) return `Image: not measured (${image?.notMeasured ?? "no figures"}).`;
  const each = images.map(([arch, i]) =>
    i.failed
      ? `linux/${arch}: not measured (${i.failed})`
      : `linux/${arch} **${i.mib} MiB** (\`${i.reference}\`, ${i.note ?? `built by this run in ${i.buildSeconds} s`})`,
  );
  return `Image, as \`scripts/image.sh\` builds it from this tree (the size \`docker image inspect\` gives): ${each.join("; ")}.`;
}

function footprintSection(report) {
  const data = report.footprint;
  const settle = data.settleSeconds ?? report.parameters.settleSeconds;
  const rows = [];
  for (const [n, programs] of Object.entries(data.bySize)) {
    for (const [name, s] of Object.entries(programs)) {
      rows.push([
        programName(name),
        count(n),
        String(s.firstRuleSeconds),
        String(s.allRulesSeconds),
        String(s.steadyMiB),
        String(s.peakMiB),
        `${(s.peakMiB / s.steadyMiB).toFixed(2)}×`,
      ]);
    }
  }
  const lines = [
    "## Footprint: start, memory and size",
    "",
    "`ipvs-node-controller run` as the image runs it: the bundle (`packages/controller/bundle/`) with",
    `the DaemonSet's flags and \`NODE_OPTIONS=${data.nodeOptions}\`, no memory limit, started in a node namespace`,
    "against a real kube-apiserver, one backend after the other, with LoadBalancer Services of 1 TCP",
    "port each.",
    ...(data.original
      ? [
          `${originalLine(data.original)} ran in the same way up to 1,000 Services (it`,
          "needs hours for 10,000), with `iptables` of the variant its row names.",
        ]
      : []),
    "",
    "Times are from the process's start to the first Service's and to every Service's translation in",
    "the kernel, seen by listing the kernel every 20 ms until the first, then every 250 ms. Memory,",
    `in MiB: VmRSS once settled (steady: the median of the last ${settle / 2} s of ${settle}), and VmHWM at the end`,
    `of the session, after ${data.changes} single changes (peak).`,
    "",
    table(
      [
        "program",
        "Services",
        "first rule (s)",
        "all rules (s)",
        "RSS steady",
        "RSS peak",
        "peak / steady",
      ],
      rows,
    ),
    "",
    imageLine(data.image),
  ];
  if (data.bundle) {
    const { run, all } = data.bundle;
    lines.push(
      "",
      `Bundle: \`run\` loads **${kib(run.bytes)}** in ${run.files.length} files (${run.files.map((f) => `\`${f}\``).join(", ")});`,
      `the whole bundle, without source maps and esbuild's meta.json, is ${kib(all.bytes)} in ${all.files} files.`,
    );
  }
  return lines.join("\n");
}

/** The full report. */
export function renderMarkdown(report) {
  const sections = [
    `# Benchmark report${report.parameters.quick ? " (quick run: small sizes, few samples)" : ""}`,
    "",
    `Generated by \`${report.command}\` on ${report.date} in ${Math.round(report.durationSeconds / 60)} min, ` +
      `commit ${report.commit ?? "unknown"}.`,
    "",
    `Machine: ${machineLine(report)}; ${loadLine(report)}.`,
    "",
    "## Goals",
    "",
    goalsSection(report),
  ];
  if (report.incrementalSyncMs) sections.push("", incrementalSection(report));
  if (report.programmingLatencyMs) sections.push("", latencySection(report));
  if (report.connectionRate) sections.push("", connectionSection(report));
  if (report.rssMiB) sections.push("", memorySection(report));
  if (report.originalController) sections.push("", originalControllerSection(report));
  if (report.footprint) sections.push("", footprintSection(report));
  if (report.originalMethod) sections.push("", originalSection(report));
  return `${sections.join("\n")}\n`;
}

/** The README's figures: a few lines of the report, with where the rest is. */
export function renderReadmeFigures(report, reportPath) {
  const sizes = report.parameters.sizes;
  const large = sizes.at(-1);
  const across = (bySize, pick) => sizes.map((n) => ms(pick(bySize?.[n]))).join(" / ");
  const rows = [];
  const inc = report.incrementalSyncMs ?? {};
  const lat = report.programmingLatencyMs ?? {};
  const n = `${sizes.map(count).join(" / ")} Services`;
  if (inc.nft) {
    rows.push([
      `one changed Service, watch event → end of the nft transaction, p50 (p99), ${n}`,
      `${across(inc.nft, (x) => x?.p50)} ms (${across(inc.nft, (x) => x?.p99)})`,
      `≤ 15 ms, ≤ 1.5× at ${count(sizes[0])}: ${statusOf(report, "incremental-nft")}`,
    ]);
  }
  for (const variant of ["iptables-nft", "iptables-legacy"]) {
    if (!inc[variant]) continue;
    rows.push([
      `the same with ${variant}, p50 (its apply mode: ${Object.keys(inc[variant][large]?.applyModes ?? {}).join(", ")})`,
      `${across(inc[variant], (x) => x?.p50)} ms`,
      `apply ≤ 100 ms, ≤ 2× at ${count(sizes[0])}: ${statusOf(report, `incremental-${variant}`)}`,
    ]);
  }
  for (const [backend, bySize] of Object.entries(lat)) {
    rows.push([
      `status patch accepted → rule in the kernel, ${backend}, p50 (p99); changes never seen`,
      `${across(bySize, (x) => x?.p50)} ms (${across(bySize, (x) => x?.p99)}); ${neverSeen(bySize, report)}`,
      backend === "nft" ? `p99 ≤ 50 ms: ${statusOf(report, "latency-nft")}` : "",
    ]);
  }
  const bursts = Object.entries(lat).filter(([, bySize]) => bySize[large]?.burst);
  if (bursts.length > 0) {
    const { changes } = bursts[0][1][large].burst;
    rows.push([
      `burst of ${changes} changes in 1 s at ${count(large)} Services: last patch → all landed`,
      `${bursts.map(([backend, bySize]) => `${backend} ${ms(bySize[large].burst.lastPatchToAllLandedMs)}`).join(", ")} ms`,
      `within \`--min-sync-period\` + one sync: ${statusOf(report, "burst-")}`,
    ]);
  }
  const full = Object.entries(inc)
    .map(([backend, bySize]) => `${backend} ${ms(bySize[large]?.fullSyncMs)}`)
    .join(", ");
  if (full) rows.push([`full sync of ${count(large)} Services`, `${full} ms`, ""]);
  const rate = report.connectionRate;
  if (rate) {
    rows.push([
      `new connections/s to the last LB IP, ${count(rate.services)} Services over 1 Service`,
      Object.entries(rate)
        .filter(([, value]) => typeof value === "object" && value?.ratio !== undefined)
        .map(([backend, value]) => `${backend} ${percent(value.ratio)}`)
        .join(", "),
      `nft ≥ 95 %: ${statusOf(report, "connections-nft")}`,
    ]);
  }
  const memory = report.rssMiB;
  if (memory) {
    const byBackend = Object.keys(memory.bySize ?? {})
      .filter((backend) => memory[backend])
      .map((backend) => `${backend} ${memory[backend].steady} / ${memory[backend].peak}`)
      .join(", ");
    rows.push([
      `resident memory of \`run\` at ${count(memory.services)} Services, steady / peak (MiB)`,
      byBackend,
      `peak ≤ 1.2× steady: ${statusOf(report, "memory-")}`,
    ]);
    const changes = Object.keys(memory.bySize ?? {})
      .filter((backend) => memory[backend])
      .map((backend) => `${backend} ${memory[backend].peakOverChanges}`)
      .join(", ");
    rows.push([
      `peak resident memory over ${memory[Object.keys(memory.bySize)[0]]?.changes} changes at ${count(memory.services)} Services, no limit (MiB)`,
      changes,
      "",
    ]);
    if (memory.heap) {
      rows.push([
        "V8 heap per Service",
        `${memory.heap.perServiceKiB} KiB`,
        `≤ 1 KiB: ${statusOf(report, "heap")}`,
      ]);
    }
  }
  rows.push(...footprintRows(report), ...originalRows(report));
  return [
    `Generated by \`${report.command}\` on ${report.date.slice(0, 10)}: ${machineLine(report)}; ${loadLine(report)}.`,
    "Services are LoadBalancer Services of 3 ports each, except where a row says 1 port; every",
    `figure, how it is measured and the goals met or missed are in [${reportPath}](${reportPath}).`,
    "",
    table(["what", "figure", "goal"], rows),
  ].join("\n");
}

/** The memory figures of the controller's README: `run` with the nft backend at each size. */
export function renderMemoryFigures(report, reportPath) {
  const bySize = report.rssMiB?.bySize?.nft;
  if (!bySize) return undefined;
  const rows = Object.entries(bySize).map(([n, memory]) => [
    count(n),
    `${memory.steadyMiB} MiB`,
    `${memory.startupPeakMiB} MiB`,
    `${memory.peakOverChangesMiB} MiB`,
    `${memory.heapUsedMiB} MiB`,
  ]);
  const changes = Object.values(bySize)[0]?.changes;
  const heap = report.rssMiB.heap;
  return [
    `Generated by \`${report.command}\` on ${report.date.slice(0, 10)}: ${machineLine(report)}; ${loadLine(report)}.`,
    `nft backend, LoadBalancer Services of 3 ports each; the whole report: [${reportPath}](${reportPath}).`,
    "",
    table(
      [
        "Services",
        "RSS steady",
        "RSS peak (start-up)",
        `RSS peak over ${changes} changes`,
        "V8 heap used",
      ],
      rows,
    ),
    ...(heap
      ? [
          "",
          `Live V8 heap per Service, from heap snapshots at ${Object.keys(heap.heapMiB).map(count).join(" and ")} Services: ${heap.perServiceKiB} KiB.`,
        ]
      : []),
  ].join("\n");
}

/** The README's rows about the original controller: end to end when it ran, else its method emulated. */
/**
 * The figure `pick` of each program of a session, the original's first when it ran:
 * `original: iptables-nft A, iptables-legacy B; ours: nft C, …`, or `nft C, …` without it.
 */
function sideBySide(programs, pick) {
  const entries = Object.entries(programs);
  const groups = ["original", "ours"]
    .map((who) => [
      who,
      entries.filter(([name]) => name.startsWith("original-") === (who === "original")),
    ])
    .filter(([, mine]) => mine.length > 0);
  const text = (mine) =>
    mine.map(([name, s]) => `${name.replace(/^original-/, "")} ${pick(s)}`).join(", ");
  if (groups.length === 1 && groups[0][0] === "ours") return text(groups[0][1]);
  return groups.map(([who, mine]) => `${who}: ${text(mine)}`).join("; ");
}

/** The original controller as the README names it. */
const originalName = (o) =>
  `the original controller (kakao/ipvs-node-controller${o?.version ? ` ${o.version}` : ""})`;

/** The size at which the README compares the footprints: 1,000 Services, or the largest below. */
function comparedAt(footprint) {
  const sizes = Object.keys(footprint.bySize).map(Number);
  return Math.max(...sizes.filter((n) => n <= 1000), Math.min(...sizes));
}

/**
 * The README's rows of the footprint: ours beside the original at 1,000 Services (or the largest
 * size up to it), first rule and memory; ours at the largest size; the image and the bundle.
 */
function footprintRows(report) {
  const data = report.footprint;
  if (!data) return [];
  const small = comparedAt(data);
  const large = Math.max(...Object.keys(data.bySize).map(Number));
  const programs = data.bySize[small];
  const vs = Object.keys(programs).some((name) => name.startsWith("original-"))
    ? ` vs ${originalName(data.original)}`
    : "";
  const rows = [
    [
      `start of \`run\`${vs}, ${count(small)} Services of 1 port: process start → first rule / all rules in the kernel`,
      `${sideBySide(programs, (s) => `${s.firstRuleSeconds} / ${s.allRulesSeconds}`)} s`,
      `first rule ≤ 0.6 s at 1,000: ${statusOf(report, "footprint-first-rule-")}`,
    ],
    [
      "the same: resident memory, steady / peak (MiB)",
      sideBySide(programs, (s) => `${s.steadyMiB} / ${s.peakMiB}`),
      `steady ≤ 64 MiB at 1,000: ${statusOf(report, "footprint-steady-1000-")}`,
    ],
  ];
  if (large > small) {
    const ours = Object.fromEntries(
      footprintBackends(data).map((backend) => [backend, data.bySize[large][backend]]),
    );
    rows.push([
      `resident memory of \`run\` at ${count(large)} Services of 1 port, steady / peak (MiB)`,
      sideBySide(ours, (s) => `${s.steadyMiB} / ${s.peakMiB}`),
      `steady ≤ 96 MiB at 10,000: ${statusOf(report, "footprint-steady-10000-")}; peak ≤ 1.2× steady: ${statusOf(report, "footprint-peak-")}`,
    ]);
  }
  const images = Object.entries(data.image?.images ?? {}).filter(([, image]) => !image.failed);
  const bundle = data.bundle ? `; the bundle \`run\` loads: ${kib(data.bundle.run.bytes)}` : "";
  rows.push([
    "size of the image (`docker image inspect`), and of what `run` loads of the bundle",
    (images.length > 0
      ? images
          .map(
            ([arch, image]) =>
              `linux/${arch} ${image.mib} MiB${image.note ? " (not built by this run)" : ""}`,
          )
          .join(", ")
      : "image not measured") + bundle,
    `image ≤ 120 MiB: ${statusOf(report, "image")}`,
  ]);
  return rows;
}

function originalRows(report) {
  const e2e = report.originalController;
  if (e2e) {
    const [n, programs] = Object.entries(e2e.bySize).at(-1);
    const side = (pick) => sideBySide(programs, pick);
    const what = `${originalName(e2e.original)} vs ours, ${count(n)} Services of 1 port`;
    // The footprint's rows show start and memory of the same sessions when it ran them too.
    const footprint = report.footprint;
    const inFootprint =
      footprint !== undefined &&
      comparedAt(footprint) === Number(n) &&
      Object.keys(footprint.bySize[n] ?? {}).some((name) => name.startsWith("original-"));
    return [
      ...(inFootprint
        ? []
        : [
            [
              `${what}: process start → first rule / all rules in the kernel`,
              `${side((s) => `${s.firstRuleSeconds} / ${s.allRulesSeconds}`)} s`,
              "",
            ],
            [
              "the same: resident memory, steady / peak (MiB)",
              side((s) => `${s.steadyMiB} / ${s.peakMiB}`),
              "",
            ],
          ]),
      [
        `${inFootprint ? what : "the same"}: one LB IP change → new rule in the kernel, p50 (changes never seen)`,
        `${side((s) => `${ms(s.changeMs.p50)} (${s.changeMs.missed})`)} ms`,
        "",
      ],
      [
        `the same: the old LB IP's rules left in the kernel, of ${e2e.changes} changes`,
        side((s) => String(s.oldRulesLeftBehind)),
        "",
      ],
    ];
  }
  const original = report.originalMethod;
  if (!original) return [];
  const largest = Object.values(original).at(-1);
  return [
    [
      `emulated: one iptables process per rule (the original's method) vs our full sync in process (no start-up, no API), ${count(largest.services)} Services of 1 port`,
      `${largest.originalSeconds} s vs ${Object.entries(largest.oursSeconds)
        .map(([backend, s]) => `${backend} ${s} s`)
        .join(", ")}`,
      "",
    ],
  ];
}

/**
 * "met", "missed" or "not measured" for the goals whose id starts with `prefix`; when some are
 * met and some missed, which (by the rest of their ids, e.g. the backend).
 */
function statusOf(report, prefix) {
  const found = report.goals.filter((g) => g.id.startsWith(prefix) && g.met !== null);
  if (found.length === 0) return "not measured";
  const note = found.some((g) => g.note?.includes("noise")) ? " (within the noise)" : "";
  if (found.every((g) => g.met)) return `met${note}`;
  if (found.every((g) => !g.met)) return `missed${note}`;
  // What tells the goals apart: a backend, or the time and the growth goal of one backend.
  const nameOf = (goal) => {
    const rest = goal.id.slice(prefix.length).replace(/^-/, "");
    if (rest === "") return "the time";
    return rest === "growth" ? "the growth" : rest;
  };
  const names = (met) =>
    found
      .filter((g) => g.met === met)
      .map(nameOf)
      .join(", ");
  return `met for ${names(true)}; missed for ${names(false)}`;
}
