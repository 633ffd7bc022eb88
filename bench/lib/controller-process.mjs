// What the benchmarks start as "our controller", and how they read a process's memory.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const ROOT = new URL("../../", import.meta.url);

/** The CLI the DaemonSet runs, as built by `scripts/setup.sh`. */
export const CLI = fileURLToPath(
  new URL("packages/controller/bundle/ipvs-node-controller.mjs", ROOT),
);

/** The NODE_OPTIONS the DaemonSet sets, read from its manifest so that both stay the same. */
export function daemonSetNodeOptions() {
  const manifest = readFileSync(new URL("deploy/base/daemonset.yaml", ROOT), "utf8");
  const match = /name: NODE_OPTIONS\s+value: (.+)/.exec(manifest);
  return match ? match[1].trim() : "";
}

/** VmRSS and VmHWM of a process, in bytes. */
export function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}

export const MiB = 1024 * 1024;

/** Bytes as MiB, to one decimal. */
export const mib = (bytes) => Number((bytes / MiB).toFixed(1));

/** Resolves with the promise's value, or `undefined` after `ms`. */
export const within = (promise, ms) =>
  Promise.race([promise, new Promise((resolve) => setTimeout(resolve, ms, undefined))]);

/** Milliseconds of a duration flag such as `--min-sync-period` (`500ms`, `1s`, `2m`). */
export function durationMs(text) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!match) throw new Error(`--min-sync-period ${text}: use e.g. 500ms or 1s`);
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[match[2]];
}
