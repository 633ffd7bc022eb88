/**
 * Cost of one changed Service (its LB IP moves: one rule out, one in) with 100 and 10,000 present,
 * one TCP port per LB IP, IPv4 only, for both variants, each in a fresh network namespace:
 * `pnpm exec vitest bench --run --project backend-iptables incremental`. The LB IP moves either
 * within its DNAT bucket (same last byte: one bucket chain edited) or to an address ending in .0,
 * which no other Service uses (a bucket chain created with its jump, and removed on the way back).
 *
 * Besides vitest's table, each case prints one line: p50 and p99 of `applyChanges`, the mean time
 * spent inside the iptables programs and inside restores alone (process start included, as the
 * runner sees it), the share of the apply spent outside restores and outside every program
 * (reading the kernel back; planning, validation, documents, bookkeeping), and
 * the CPU time the programs used per apply (user + system, from this process's reaped children),
 * which unlike wall time does not grow when other work shares the machine.
 * The change is computed before timing starts, as the controller's engine hands it over.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import type { CommandRunner } from "@ipvs-node-controller/backend";
import { type Mapping, type Ruleset, updateBetween } from "@ipvs-node-controller/core";
import { hostRunner, kernelTestsEnabled, runnerIn } from "@ipvs-node-controller/test-support";
import { bench, describe } from "vitest";
import { createIptablesBackend, type IptablesVariant } from "../src/index.js";
import { family, mapping, ruleset } from "./fixtures.js";

const enabled = await kernelTestsEnabled("iptables incremental-sync benchmark");

const SIZES = [100, 10_000];
const VARIANTS: IptablesVariant[] = ["nft", "legacy"];
const ITERATIONS = 40;

/** Where the moved Service's LB IP goes: its own bucket, or a new one. */
type Move = "same bucket" | "new bucket";
const MOVES: Move[] = ["same bucket", "new bucket"];

/**
 * Service `i`'s LB IP in 172.16.0.0/12, ending in .1 to .250; `moved` gives it one in
 * 172.31.0.0/16 instead, with the same last byte or ending in .0.
 */
function serviceMapping(i: number, moved?: Move): Mapping {
  const hi = Math.floor(i / 250);
  const lo = (i % 250) + 1;
  const ip =
    moved === undefined ? `172.16.${hi}.${lo}` : `172.31.${hi}.${moved === "same bucket" ? lo : 0}`;
  return mapping(ip, 443, `10.96.${hi}.${lo}`, { name: `svc-${i}` });
}

function services(count: number, move?: { index: number; to: Move }): Ruleset {
  const mappings = Array.from({ length: count }, (_, i) =>
    serviceMapping(i, i === move?.index ? move.to : undefined),
  );
  mappings.sort((a, b) => {
    const key = (m: Mapping) => m.externalIP.split(".").map((part) => part.padStart(3, "0"));
    return key(a).join(".") < key(b).join(".") ? -1 : 1;
  });
  return ruleset([family("ipv4", { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] }, mappings)]);
}

/** Time spent inside each program, by file name. */
function timedRunner(inner: CommandRunner, spent: Map<string, number>): CommandRunner {
  return async (file, args, options) => {
    const start = performance.now();
    try {
      return await inner(file, args, options);
    } finally {
      spent.set(file, (spent.get(file) ?? 0) + performance.now() - start);
    }
  };
}

function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** CPU time (ms) of this process's reaped children: `cutime` + `cstime` of /proc/self/stat. */
function childCpuMs(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  // Fields after the parenthesised command name; cutime and cstime are fields 16 and 17.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[13]) + Number(fields[14]);
  // USER_HZ is 100 on every Linux architecture that Node supports.
  return ticks * 10;
}

let counter = 0;
/** A namespace name per case; the namespace itself is made when the case runs. */
function namespaceName(): string {
  return `iptinc-${process.pid}-${++counter}`;
}

/**
 * Makes `namespace` unless it exists. Cases are set up only when they run, so a run filtered with
 * `-t` leaves no namespace behind for the cases it skips.
 */
function addNamespace(namespace: string): void {
  if (spawnSync("ip", ["netns", "pids", namespace]).status === 0) return;
  const added = spawnSync("ip", ["netns", "add", namespace]);
  if (added.status !== 0) throw new Error(`ip netns add: ${added.stderr}`);
}

for (const variant of VARIANTS) {
  for (const size of SIZES) {
    for (const to of MOVES) {
      const namespace = namespaceName();
      describe.skipIf(!enabled)(`iptables-${variant}, ${size} mappings, ${to}`, () => {
        const spent = new Map<string, number>();
        const backend = createIptablesBackend({
          mode: variant,
          runner: timedRunner(enabled ? runnerIn(namespace) : hostRunner, spent),
        });
        const base = services(size);
        const moved = services(size, { index: Math.floor(size / 2), to });
        const forth = updateBetween(base, moved);
        const back = updateBetween(moved, base);
        const applyMs: number[] = [];
        const modes = new Map<string, number>();
        let toolMs = 0;
        let restoreMs = 0;
        let cpuAtStart = 0;
        let flip = false;

        bench(
          `one changed Service (its LB IP moves to ${to === "same bucket" ? "the same" : "a new"} bucket)`,
          async () => {
            flip = !flip;
            spent.clear();
            const start = performance.now();
            const result = await backend.applyChanges(flip ? forth : back);
            applyMs.push(performance.now() - start);
            toolMs += [...spent.values()].reduce((sum, ms) => sum + ms, 0);
            restoreMs += [...spent].reduce(
              (sum, [file, ms]) => (file.endsWith("-restore") ? sum + ms : sum),
              0,
            );
            if (result.mode === "none") throw new Error("the change was not applied");
            modes.set(result.mode, (modes.get(result.mode) ?? 0) + 1);
          },
          {
            iterations: ITERATIONS,
            warmupIterations: 0,
            time: 0,
            warmupTime: 0,
            setup: async () => {
              addNamespace(namespace);
              await backend.apply(base);
              flip = false;
              applyMs.length = 0;
              modes.clear();
              toolMs = 0;
              restoreMs = 0;
              cpuAtStart = childCpuMs();
            },
            teardown: (_task, mode) => {
              if (mode !== "run") return;
              const total = applyMs.reduce((sum, ms) => sum + ms, 0);
              const cpu = (childCpuMs() - cpuAtStart) / applyMs.length;
              console.log(
                `iptables-${variant} ${size} mappings, one changed Service (${to}), N=${applyMs.length}: ` +
                  `apply p50 ${percentile(applyMs, 50).toFixed(1)} ms, ` +
                  `p99 ${percentile(applyMs, 99).toFixed(1)} ms, ` +
                  `mean ${(total / applyMs.length).toFixed(1)} ms; ` +
                  `inside iptables programs ${(toolMs / applyMs.length).toFixed(1)} ms ` +
                  `(restore ${(restoreMs / applyMs.length).toFixed(1)} ms, CPU ${cpu.toFixed(1)} ms); ` +
                  `outside restore ${(((total - restoreMs) / total) * 100).toFixed(1)} %, ` +
                  `outside all programs ${(((total - toolMs) / total) * 100).toFixed(1)} %; ` +
                  `modes ${[...modes].map(([mode, n]) => `${mode} ${n}`).join(", ")}`,
              );
              spawnSync("ip", ["netns", "del", namespace]);
            },
          },
        );
      });
    }
  }
}
