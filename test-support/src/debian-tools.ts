/**
 * Programs from Debian packages that some suites need besides the build: the reference OCI
 * registry and promtool. `scripts/tools.sh` finds them, or installs their package (root only).
 * And QEMU's user-mode emulation of another architecture, through `scripts/emulation.sh`.
 *
 * @example
 * ```ts
 * const promtool = await debianToolGate("alert rule tests", "promtool");
 * const release = await acquireEmulation("arm64"); // arm64 programs and containers run here
 * await release();
 * ```
 */
import { execa } from "execa";
import { builtBinaryGate, repositoryScript, runBuildScript } from "./built-binary.js";

const TOOLS_SCRIPT = repositoryScript("tools.sh");
const EMULATION_SCRIPT = repositoryScript("emulation.sh");

let holders = 0;

/** The programs `scripts/tools.sh` knows. */
export type DebianTool = "docker-registry" | "promtool";

/** Thrown when a program cannot be found or installed, or emulation cannot be enabled. */
export class DebianToolUnavailableError extends Error {
  override readonly name = "DebianToolUnavailableError";
}

/**
 * Decides whether a suite that needs `program` runs. Under `CI=true` it must be there (its
 * package is installed if need be, which needs root; a failure throws); elsewhere a missing
 * program skips the suite with a loud warning. Returns the program's path, or undefined to skip.
 */
export function debianToolGate(suite: string, program: DebianTool): Promise<string | undefined> {
  return builtBinaryGate(
    suite,
    (install) =>
      runBuildScript(
        TOOLS_SCRIPT,
        { build: install, args: [program] },
        (message) => new DebianToolUnavailableError(message),
      ),
    `no ${program} (run scripts/tools.sh ${program} as root)`,
    (message) => new DebianToolUnavailableError(message),
  );
}

/**
 * Makes programs of Debian architecture `arch` (e.g. `arm64`) run on this machine, containers
 * included, until the returned function is called. Several holders may overlap, in this process
 * and others; the last one to release leaves the machine's binfmt_misc as it found it. Needs root.
 */
export async function acquireEmulation(arch: string): Promise<() => Promise<void>> {
  const run = async (args: readonly string[]) => {
    const result = await execa("bash", [EMULATION_SCRIPT, ...args], {
      reject: false,
      stdin: "ignore",
    });
    if (result.exitCode !== 0) {
      throw new DebianToolUnavailableError(
        `scripts/emulation.sh ${args.join(" ")} failed (exit ${result.exitCode}): ${result.stderr}`,
      );
    }
  };
  const holder = `${process.pid}-${++holders}`;
  await run(["acquire", holder, arch]);
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    await run(["release", holder]);
  };
}
