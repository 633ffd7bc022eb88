/**
 * {@link CommandRunner}s for tests: one that runs programs directly and one that runs them inside a
 * named network namespace with `ip netns exec`.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CommandResult, CommandRunner } from "@ipvs-node-controller/core";
import { execa } from "execa";

/**
 * The error a runner throws when the program does not exist, so that callers can tell
 * "not installed" apart from "failed". `code` is `"ENOENT"`, as with Node's own spawn errors.
 */
export class ProgramNotFoundError extends Error {
  override readonly name = "ProgramNotFoundError";
  readonly code = "ENOENT";
  constructor(readonly program: string) {
    super(`program not found: ${program}`);
  }
}

/**
 * Returns a read-only descriptor of an already unlinked file holding `input`, for use as stdin.
 * Node connects "piped" stdin through a socket, and some programs (`nft -j -f -` opens
 * /dev/stdin) cannot read from one; a regular file works for every program.
 */
function stdinFile(input: string): number {
  const directory = mkdtempSync(join(tmpdir(), "stdin-"));
  const path = join(directory, "input");
  try {
    writeFileSync(path, input, { mode: 0o600 });
    return openSync(path, "r");
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

async function run(
  file: string,
  args: readonly string[],
  input: string | undefined,
  missingProgram: string,
): Promise<CommandResult> {
  const stdin = input === undefined ? undefined : stdinFile(input);
  const result = await execa(file, [...args], {
    // execa's types only list descriptors 0 and 3-9, but any open descriptor goes to spawn() as is.
    stdin: (stdin ?? "ignore") as "ignore",
    reject: false,
    stripFinalNewline: false,
  }).finally(() => {
    if (stdin !== undefined) closeSync(stdin);
  });
  if (result.exitCode === undefined) {
    // The process never started; execa reports why in `code`.
    if ((result as { code?: string }).code === "ENOENT") {
      throw new ProgramNotFoundError(missingProgram);
    }
    throw new Error(`could not run ${file}: ${result.message}`);
  }
  return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode };
}

/** Runs programs in the current network namespace. */
export const hostRunner: CommandRunner = (file, args, options) =>
  run(file, args, options?.input, file);

/**
 * Runs programs inside the network namespace `namespace` (`ip netns exec NAMESPACE FILE ARGS...`),
 * feeding `input` on stdin. Needs root. A missing `file` inside the namespace is reported the same
 * way as a missing program on the host: by throwing {@link ProgramNotFoundError}.
 */
export function runnerIn(namespace: string): CommandRunner {
  return async (file, args, options) => {
    const result = await run(
      "ip",
      ["netns", "exec", namespace, file, ...args],
      options?.input,
      "ip",
    );
    // `ip netns exec` exits 255 with this message when execvp() fails.
    if (
      result.exitCode === 255 &&
      /exec of ".*" failed: No such file or directory/.test(result.stderr)
    ) {
      throw new ProgramNotFoundError(file);
    }
    return result;
  };
}
