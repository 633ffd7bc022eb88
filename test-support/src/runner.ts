/**
 * {@link CommandRunner}s for tests: the production runner for this namespace, and the same runner
 * wrapped in `ip netns exec` for another one.
 */
import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/core";
import { runTool } from "@ipvs-node-controller/exec";

/** Runs programs in the current network namespace: the production runner itself. */
export const hostRunner: CommandRunner = runTool;

/**
 * Runs programs inside the network namespace `namespace` (`ip netns exec NAMESPACE FILE ARGS...`)
 * through the production runner. Needs root. A missing `file` inside the namespace fails the way
 * a missing program fails on the host: with a `ToolNotStartedError` naming it.
 */
export function runnerIn(namespace: string): CommandRunner {
  return async (file, args, options) => {
    const result = await runTool("ip", ["netns", "exec", namespace, file, ...args], options);
    // `ip netns exec` exits 255 with this message when execvp() fails.
    const failed = /exec of ".*" failed: (.*)$/m.exec(result.stderr);
    if (result.exitCode === 255 && failed) {
      throw new ToolNotStartedError(
        file,
        /No such file/.test(failed[1] ?? "") ? "ENOENT" : (failed[1] ?? ""),
      );
    }
    return result;
  };
}
