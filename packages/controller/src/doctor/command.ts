/**
 * `ipvs-node-controller doctor`: flags in, a report on stdout, the exit code out.
 */
import type { Console } from "../console.js";
import {
  type BackendFlags,
  coreConfigFromFlags,
  createRunner,
  durationFlag,
  type RuleFlags,
} from "../options.js";
import { type DoctorInput, runDoctor } from "./gather.js";
import { formatDoctorReport } from "./text.js";

/** Flags of `doctor` as commander hands them over. */
export interface DoctorFlags extends RuleFlags, BackendFlags {
  services?: string;
  node?: string;
  kubeconfig?: string;
  nodeName?: string;
  probe: boolean;
  probeTimeout: string;
  output: "text" | "json";
}

/**
 * Prints the report (text or JSON) on `io.out` and returns the exit code: 0 when nothing is
 * wrong, 1 otherwise. Throws for bad flags (a `ConfigError`), unreadable input or an API error.
 * The caller has checked that `--services` or `--node-name` is given.
 */
export async function doctorCommand(flags: DoctorFlags, io: Console): Promise<number> {
  const config = coreConfigFromFlags(flags);
  // Checked even without --probe: a bad value is a usage error either way.
  const timeoutMs = durationFlag("--probe-timeout", flags.probeTimeout, 1);
  const probeTimeoutMs = flags.probe ? timeoutMs : undefined;
  const input: DoctorInput =
    flags.services === undefined
      ? { kind: "api", kubeconfig: flags.kubeconfig, nodeName: flags.nodeName ?? "" }
      : { kind: "files", services: flags.services, node: flags.node, nodeName: flags.nodeName };
  const report = await runDoctor({
    input,
    config,
    backend: flags.backend,
    backendFlags: flags,
    runner: createRunner(flags),
    ...(probeTimeoutMs === undefined ? {} : { probeTimeoutMs }),
  });
  io.out(flags.output === "json" ? JSON.stringify(report, null, 2) : formatDoctorReport(report));
  return report.ok ? 0 : 1;
}
