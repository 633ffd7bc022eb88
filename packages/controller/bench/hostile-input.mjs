// Hostile input at scale: the cost of 1,000 malformed Services mixed into 10,000 good ones (see
// test-support/src/hostile-services.ts), against the same good Services alone.
//
// - `sync --once --backend nft --services FILE` in a throwaway network namespace: wall time and
//   peak RSS of the whole process (read the file, compute, apply), median of --runs runs, clean and
//   hostile alternating so that a change in the machine's load hits both alike;
// - the rule engine in this process: compute time (median), and the heap it retains after settled
//   full collections.
//
//   node packages/controller/bench/hostile-input.mjs [--good N] [--bad N] [--runs N]   (root)

import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { RulesetEngine } from "@ipvs-node-controller/core";
import { hostileServiceSet } from "@ipvs-node-controller/test-support";

const { values: flags } = parseArgs({
  options: {
    good: { type: "string", default: "10000" },
    bad: { type: "string", default: "1000" },
    runs: { type: "string", default: "5" },
  },
});
const runs = Number(flags.runs);
const cli = fileURLToPath(new URL("../bundle/ipvs-node-controller.mjs", import.meta.url));
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

const set = hostileServiceSet({ good: Number(flags.good), bad: Number(flags.bad) });
const dir = mkdtempSync(join(tmpdir(), "hostile-bench-"));
const files = {
  clean: join(dir, "clean.json"),
  hostile: join(dir, "hostile.json"),
};
const asList = (items) => JSON.stringify({ apiVersion: "v1", kind: "List", items });
writeFileSync(files.clean, asList(set.good));
writeFileSync(files.hostile, asList(set.services));
const namespace = `hostile-bench-${process.pid}`;
execFileSync("ip", ["netns", "add", namespace]);

try {
  // The whole CLI, as an administrator would run it.
  const cliRuns = { clean: [], hostile: [] };
  for (let run = 0; run < runs; run++) {
    for (const kind of ["clean", "hostile"]) {
      const started = performance.now();
      const child = spawnSync(
        "/usr/bin/time",
        [
          "-f",
          "maxrss_kib=%M",
          "ip",
          "netns",
          "exec",
          namespace,
          process.execPath,
          cli,
          "sync",
          "--once",
          "--backend=nft",
          `--services=${files[kind]}`,
        ],
        { encoding: "utf8", stdio: ["ignore", "ignore", "pipe"], maxBuffer: 64 * 1024 * 1024 },
      );
      if (child.status !== 0) throw new Error(`sync --once failed: ${child.stderr.slice(-2000)}`);
      const out = child.stderr;
      const ms = performance.now() - started;
      const rss = Number(/maxrss_kib=(\d+)/.exec(out)?.[1]) * 1024;
      cliRuns[kind].push({ ms, rss });
    }
  }

  // The engine alone, in this process.
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc");
  const settledHeap = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    return process.memoryUsage().heapUsed;
  };
  const engineRun = async (services) => {
    const before = await settledHeap();
    const started = performance.now();
    const engine = new RulesetEngine({});
    services.forEach((service, index) => {
      engine.setService(String(index), service);
    });
    const result = engine.result();
    const ms = performance.now() - started;
    const after = await settledHeap();
    return { ms, retained: after - before, mappings: result.ruleset.families[0].mappings.length };
  };
  await engineRun(set.good); // warm-up: compiled code and caches are paid once
  const engineRuns = { clean: [], hostile: [] };
  for (let run = 0; run < runs; run++) {
    engineRuns.clean.push(await engineRun(set.good));
    engineRuns.hostile.push(await engineRun(set.services));
  }

  const row = (kind) => {
    const cliMs = median(cliRuns[kind].map((r) => r.ms));
    const cliRss = median(cliRuns[kind].map((r) => r.rss));
    const engineMs = median(engineRuns[kind].map((r) => r.ms));
    const retained = median(engineRuns[kind].map((r) => r.retained));
    return { cliMs, cliRss, engineMs, retained };
  };
  const clean = row("clean");
  const hostile = row("hostile");
  console.log(
    `hostile input: ${set.good.length} good Services (${engineRuns.clean[0].mappings} mappings), ` +
      `+${set.bad.length} bad and ${set.ignored} ignored objects; median of ${runs} runs`,
  );
  console.log("                         clean        hostile      ratio");
  const line = (label, a, b, format) =>
    console.log(
      `  ${label.padEnd(22)} ${format(a).padEnd(12)} ${format(b).padEnd(12)} ${(b / a).toFixed(2)}x`,
    );
  line("sync --once wall time", clean.cliMs, hostile.cliMs, (v) => `${v.toFixed(0)} ms`);
  line("sync --once peak RSS", clean.cliRss, hostile.cliRss, mib);
  line("engine compute", clean.engineMs, hostile.engineMs, (v) => `${v.toFixed(0)} ms`);
  line("engine heap retained", clean.retained, hostile.retained, mib);
  console.log(
    `  load average ${loadavg()
      .map((v) => v.toFixed(2))
      .join(" ")}`,
  );
} finally {
  execFileSync("ip", ["netns", "del", namespace]);
  rmSync(dir, { recursive: true, force: true });
}
