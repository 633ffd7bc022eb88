/**
 * {@link CommandRunner}s for tests: one that runs programs directly and one that runs them inside a
 * named network namespace with `ip netns exec`.
 */
import { execaRunner } from "@ipvs-node-controller/backend-nft";
import type { CommandResult, CommandRunner } from "@ipvs-node-controller/core";

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
 * Runs one program with the nft backend's runner, which feeds stdin from a file: some programs
 * (`nft -j -f -` opens /dev/stdin) cannot read the socket Node connects by default.
 */
async function run(
  file: string,
  args: readonly string[],
  input: string | undefined,
  missingProgram: string,
): Promise<CommandResult> {
  try {
    return await execaRunner(file, args, input === undefined ? undefined : { input });
  } catch (error) {
    // The process never started; execaRunner keeps the spawn error's code.
    if ((error as { code?: unknown }).code === "ENOENT")
      throw new ProgramNotFoundError(missingProgram);
    throw new Error(`could not run ${file}: ${(error as Error).message}`);
  }
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
