/**
 * The one-shot subcommands: `render` prints what would be fed to the kernel, `sync --once` applies
 * it, `cleanup` removes everything of ours.
 */

import { type Backend, ToolNotStartedError } from "@ipvs-node-controller/backend";
import { computeRuleset, type RulesetResult } from "@ipvs-node-controller/core";
import type { Console } from "./console.js";
import { readNode, readServicesFile } from "./input-files.js";
import {
  type BackendFlags,
  type BackendName,
  coreConfigFromFlags,
  createBackend,
  createRunner,
  type RuleFlags,
} from "./options.js";
import { describeSkips, groupConflicts, groupSkips } from "./skip-report.js";

/** Flags of `render` and `sync`. */
export interface OneShotFlags extends RuleFlags, BackendFlags {
  services: string;
  node?: string;
}

/**
 * Prints every skipped Service, every pair of conflicting Services and every warning as one line
 * on the error stream: a Service with many bad ports, or losing many ports to another, is one line.
 */
export function reportDiagnostics(result: RulesetResult, log: (line: string) => void): void {
  for (const group of groupSkips(result.skipped)) {
    log(`skipped ${group.service}: ${describeSkips(group)}`);
  }
  for (const pair of groupConflicts(result.conflicts)) {
    const more = pair.count > 1 ? ` and ${pair.count - 1} more` : "";
    log(`conflict ${pair.example}${more}: ${pair.winner} wins over ${pair.loser}`);
  }
  for (const warning of result.warnings) log(`warning: ${warning}`);
}

async function computeFromFiles(flags: OneShotFlags): Promise<RulesetResult> {
  const config = coreConfigFromFlags(flags);
  const services = await readServicesFile(flags.services);
  const node = flags.node === undefined ? undefined : await readNode(flags.node);
  return computeRuleset({ services, node, config });
}

/** `render`: prints the document a full sync would feed to the kernel tool. */
export async function renderCommand(flags: OneShotFlags, io: Console): Promise<void> {
  const result = await computeFromFiles(flags);
  reportDiagnostics(result, io.err);
  io.out(createBackend(flags.backend, flags, createRunner(flags)).render(result.ruleset));
}

/** `sync --once`: applies the rules to the current network namespace. */
export async function syncOnceCommand(flags: OneShotFlags, io: Console): Promise<void> {
  const result = await computeFromFiles(flags);
  reportDiagnostics(result, io.err);
  const backend = createBackend(flags.backend, flags, createRunner(flags), io.err);
  // A fresh process knows nothing of what is in the kernel: always a full, atomic replace.
  const applied = await backend.apply(result.ruleset);
  const mappings = result.ruleset.families.reduce((sum, family) => sum + family.mappings.length, 0);
  io.err(`applied ${mappings} mappings with ${backend.name} (${applied.mode} sync)`);
}

/** `cleanup`: removes what the chosen backend(s) created. Succeeds when there was nothing to remove. */
export async function cleanupCommand(
  flags: Omit<BackendFlags, "backend"> & { backend: BackendName | "all" },
  io: Console,
): Promise<void> {
  const names: BackendName[] = flags.backend === "all" ? ["nft", "iptables"] : [flags.backend];
  const runner = createRunner(flags);
  for (const name of names) {
    const backend: Backend = createBackend(name, flags, runner, io.err);
    let removed: boolean;
    try {
      removed = await backend.cleanup();
    } catch (error) {
      // With `all`, a tool that is not installed cannot have left rules behind.
      if (flags.backend === "all" && error instanceof ToolNotStartedError) {
        io.err(`no ${name} rules to remove (${error.message})`);
        continue;
      }
      throw error;
    }
    io.err(removed ? `removed the ${name} rules` : `no ${name} rules to remove`);
  }
}
