/**
 * The default way to start the iptables tools: execa with an argument array, never a shell.
 */
import type { CommandRunner } from "@ipvs-node-controller/core";
import { execa } from "execa";

/** Thrown by {@link execaRunner} when a program could not be started at all (e.g. not installed). */
export class SpawnError extends Error {
  override readonly name = "SpawnError";
  constructor(
    readonly file: string,
    /** The system error code, e.g. `ENOENT`. */
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Runs `file` with `args` in the current network namespace, feeding `input` on stdin. The
 * environment is inherited, so `XTABLES_LOCKFILE` reaches iptables-legacy (which otherwise needs
 * a writable `/run/xtables.lock`). A non-zero exit is returned; a failure to start is thrown as a
 * {@link SpawnError}.
 */
export const execaRunner: CommandRunner = async (file, args, options) => {
  const result = await execa(file, [...args], {
    reject: false,
    stripFinalNewline: false,
    ...(options?.input === undefined ? { stdin: "ignore" as const } : { input: options.input }),
  });
  if (result.exitCode === undefined) {
    const code = (result as { code?: string }).code;
    throw new SpawnError(file, code, `${file} could not be started: ${result.message}`);
  }
  return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode };
};
