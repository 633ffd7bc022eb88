// The benchmark report: runs every benchmark of this directory, then writes
// bench/results/latest.json, bench/results/latest.md and the figures of the READMEs (GENERATED).
//
//   pnpm bench:report              (root; after scripts/setup.sh; under half an hour on 2 cores)
//   pnpm bench:report --quick      (a smoke run in a few minutes: bench/results/quick.*, READMEs untouched)
//   pnpm bench:report --original-binary PATH   (the original controller itself beside ours)
//   pnpm bench:report --parts footprint        (one part: bench/results/partial.*, READMEs untouched)
//
// Flags and BENCH_* variables change the parameters (see lib/options.mjs), e.g.
// `--parts incremental,connections`, `--backends nft`, `--sizes 100,1000`, `--changes 20`.
// `--render bench/results/latest.json` writes its Markdown and the READMEs' figures again from
// the JSON alone, measuring nothing.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { measureConnectionRate } from "./connection-rate.mjs";
import { measureController } from "./controller.mjs";
import { measureSessions } from "./footprint.mjs";
import { measureIncrementalSync } from "./incremental-sync.mjs";
import { main } from "./lib/cleanup.mjs";
import { evaluateGoals } from "./lib/goals.mjs";
import { log } from "./lib/log.mjs";
import { commitOf, loadAverage, machineInfo } from "./lib/machine.mjs";
import { renderMarkdown, renderMemoryFigures, renderReadmeFigures } from "./lib/markdown.mjs";
import { PARTS, parseOptions } from "./lib/options.mjs";
import { measureOriginalMethod } from "./original-method.mjs";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
/**
 * The figures the READMEs carry, each between `<!-- NAME:start -->` and `<!-- NAME:end -->` in
 * its file and rendered from the report alone (`undefined` when the report lacks its figures).
 */
const GENERATED = [
  {
    file: "README.md",
    name: "figures",
    render: (report) => renderReadmeFigures(report, "bench/results/latest.md"),
  },
  {
    file: "packages/controller/README.md",
    name: "memory",
    render: (report) => renderMemoryFigures(report, "../../bench/results/latest.md"),
  },
];

/** Replaces what lies between a file's markers. */
function updateBetweenMarkers(file, name, text) {
  const path = `${ROOT}${file}`;
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const content = readFileSync(path, "utf8");
  const from = content.indexOf(start);
  const to = content.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${file} lacks ${start} … ${end}`);
  writeFileSync(path, `${content.slice(0, from + start.length)}\n${text}\n${content.slice(to)}`);
}

/**
 * The command line as the report prints it: the original binary by its file name, since where it
 * lies on this machine means nothing elsewhere.
 */
function withoutDirectories(args) {
  return args.map((arg, i) =>
    args[i - 1] === "--original-binary"
      ? basename(arg)
      : arg.replace(/^(--original-binary=).*\/([^/]*)$/, "$1$2"),
  );
}

/** Moves the controller benchmark's sessions into the report's sections. */
function controllerSections(result, options) {
  const large = options.sizes.at(-1);
  const programmingLatencyMs = {};
  const rssMiB = { services: large, nodeOptions: result.nodeOptions, bySize: {} };
  for (const [backend, sessions] of Object.entries(result.results)) {
    programmingLatencyMs[backend] = {};
    rssMiB.bySize[backend] = {};
    for (const [n, session] of Object.entries(sessions)) {
      const { memory, latencyMs, ...rest } = session;
      programmingLatencyMs[backend][n] = { ...latencyMs, ...rest };
      rssMiB.bySize[backend][n] = memory;
    }
    const memory = sessions[large]?.memory;
    if (memory) {
      rssMiB[backend] = {
        steady: memory.steadyMiB,
        peak: memory.startupPeakMiB,
        changes: memory.changes,
        peakOverChanges: memory.peakOverChangesMiB,
      };
    }
  }
  if (result.heap) rssMiB.heap = result.heap;
  return { programmingLatencyMs, rssMiB };
}

/** Writes the Markdown report next to the JSON one, and the README's figures when asked to. */
function render(report, out, options) {
  writeFileSync(`${out}.md`, renderMarkdown(report));
  if (!options.readme) return;
  for (const { file, name, render } of GENERATED) {
    const text = render(report);
    if (text === undefined) continue;
    updateBetweenMarkers(file, name, text);
    log("report", `updated the ${name} of ${file}`);
  }
}

await main(async () => {
  const options = parseOptions(process.argv.slice(2));
  if (options.render !== undefined) {
    // Renders a report again from its JSON, measuring nothing.
    const report = JSON.parse(readFileSync(options.render, "utf8"));
    report.goals = evaluateGoals(report);
    writeFileSync(options.render, `${JSON.stringify(report, null, 2)}\n`);
    render(report, options.render.replace(/\.json$/, ""), options);
    return;
  }
  if (process.getuid?.() !== 0) {
    throw new Error("the benchmarks need root (network namespaces, nft, iptables)");
  }
  // A smoke run, or one of some parts only, leaves bench/results/latest.* alone.
  const complete = PARTS.every((part) => options.parts.includes(part));
  const name = options.quick ? "quick" : complete ? "latest" : "partial";
  const out = options.out ?? `${ROOT}bench/results/${name}`;
  const started = Date.now();
  const report = {
    command: ["pnpm bench:report", ...withoutDirectories(process.argv.slice(2))].join(" "),
    date: new Date(started).toISOString().replace(/\.\d+Z$/, "Z"),
    commit: await commitOf(ROOT),
    machine: await machineInfo(),
    loadAverage: { before: loadAverage() },
    parameters: {
      ...options,
      ...(options.originalBinary ? { originalBinary: basename(options.originalBinary) } : {}),
    },
  };
  log("report", `parts: ${options.parts.join(", ")}; load average ${report.loadAverage.before}`);

  // Cheap and kernel-only first; the API server's part is the longest.
  if (options.parts.includes("incremental")) {
    report.incrementalSyncMs = await measureIncrementalSync(options);
  }
  if (options.parts.includes("connections")) {
    report.connectionRate = await measureConnectionRate(options);
  }
  if (options.parts.includes("controller")) {
    const result = await measureController(options);
    report.machine.kubeApiserver = result.kubeApiserver;
    Object.assign(report, controllerSections(result, options));
  }
  // The original controller itself when given, else its method emulated; the footprint's and
  // the original's sessions run in one cluster, each once.
  const sessions = await measureSessions(options, options.parts);
  Object.assign(report, sessions);
  for (const section of Object.values(sessions)) {
    report.machine.kubeApiserver ??= section.kubeApiserver;
  }
  if (options.parts.includes("original") && !options.originalBinary) {
    report.originalMethod = await measureOriginalMethod(options);
  }

  report.loadAverage.after = loadAverage();
  report.durationSeconds = Math.round((Date.now() - started) / 1000);
  report.goals = evaluateGoals(report);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(`${out}.json`, `${JSON.stringify(report, null, 2)}\n`);
  render(report, out, options);
  log(
    "report",
    `wrote ${out}.json and ${out}.md in ${Math.round(report.durationSeconds / 60)} min`,
  );
  for (const goal of report.goals) {
    const verdict =
      goal.met === null ? "not measured" : goal.met ? "met" : `MISSED by ${goal.missedBy}`;
    log("report", `${goal.goal}: ${goal.measured}${goal.unit ?? ""} (${goal.target}) ${verdict}`);
  }
});
