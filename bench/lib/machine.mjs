// What a figure depends on besides the code: the machine, its software, and how busy it was.

import { readFileSync } from "node:fs";
import os from "node:os";
import { runTool } from "@ipvs-node-controller/backend";

async function firstLine(file, args) {
  try {
    const result = await runTool(file, args);
    return (result.stdout || result.stderr).trim().split("\n")[0] || undefined;
  } catch {
    return undefined;
  }
}

function cpuModel() {
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (match) return match[1].trim();
  } catch {
    // Not Linux, or no /proc: fall back to what Node.js knows.
  }
  return os.cpus()[0]?.model ?? "unknown";
}

/** The machine and the versions of everything the figures depend on. */
export async function machineInfo() {
  return {
    cpu: cpuModel(),
    cpus: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    nft: await firstLine("nft", ["--version"]),
    iptablesNft: await firstLine("iptables-nft", ["--version"]),
    iptablesLegacy: await firstLine("iptables-legacy", ["--version"]),
  };
}

/** The 1, 5 and 15 minute load averages. */
export const loadAverage = () => os.loadavg().map((load) => Number(load.toFixed(2)));

/** The commit measured, marked when the tree has changes of its own. */
export async function commitOf(directory) {
  const head = await firstLine("git", ["-C", directory, "rev-parse", "--short=12", "HEAD"]);
  if (head === undefined || head.startsWith("fatal")) return undefined;
  const status = await runTool("git", [
    "-C",
    directory,
    "status",
    "--porcelain",
    "--",
    ":!bench/results",
    ":!README.md",
  ]);
  return status.stdout.trim() === "" ? head : `${head} with local changes`;
}
