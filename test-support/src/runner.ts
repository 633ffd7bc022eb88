/**
 * {@link CommandRunner}s for tests: the production runner for this namespace, and the same runner
 * wrapped in `ip netns exec` for another one.
 */

import { type CommandRunner, runTool, ToolNotStartedError } from "@ipvs-node-controller/backend";

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
    // `ip netns exec` prints this when execvp() fails, and exits 255 or, in newer iproute2
    // releases, 1; the program's name in it tells the message from one the program printed.
    const failed = /^exec of "(.*)" failed: (.*)$/m.exec(result.stderr);
    if (result.exitCode !== 0 && failed && failed[1] === file) {
      throw new ToolNotStartedError(
        file,
        /No such file/.test(failed[2] ?? "") ? "ENOENT" : (failed[2] ?? ""),
      );
    }
    return result;
  };
}
