/**
 * The test binaries built from source by the repository's scripts (`envtest-build.sh`,
 * `helm-build.sh`): each prints what it built on its last stdout line, or with `--check` exits 3
 * when nothing is built yet. And the gate every suite that needs one goes through: skip loudly,
 * except under `CI=true`, where a missing binary fails.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

/** Exit status of a build script's `--check` when nothing has been built yet. */
const EXIT_NOT_BUILT = 3;

/** The path of `scripts/<name>` in this repository. */
export function repositoryScript(name: string): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "scripts", name);
}

/**
 * Runs a build script (with `options.args` after its own `--check`) and returns the last line it
 * printed (a path). With `build: false` nothing is compiled and undefined means "not built yet";
 * with `build: true` a missing binary is built, which can take minutes. Throws `fail(message)`
 * when the script fails.
 */
export async function runBuildScript(
  script: string,
  options: { readonly build: boolean; readonly args?: readonly string[] },
  fail: (message: string) => Error,
): Promise<string | undefined> {
  const flags = options.build ? [] : ["--check"];
  const result = await execa("bash", [script, ...flags, ...(options.args ?? [])], {
    reject: false,
    stdin: "ignore",
  });
  if (!options.build && result.exitCode === EXIT_NOT_BUILT) return undefined;
  const built = result.stdout.trim().split("\n").at(-1);
  if (result.exitCode !== 0 || !built) {
    const stderr = result.stderr.trim().split("\n").slice(-20).join("\n");
    throw fail(`scripts/${script.split("/").at(-1)} failed (exit ${result.exitCode}): ${stderr}`);
  }
  return built;
}

/**
 * Decides whether a suite that needs a built binary runs: `locate(build)` finds it (building it
 * when `build` is true, which it is under `CI=true`). Under `CI=true` a missing binary throws
 * `fail(...)`; elsewhere the suite is skipped with a loud warning naming `howToGet`.
 */
export async function builtBinaryGate(
  suite: string,
  locate: (build: boolean) => Promise<string | undefined>,
  howToGet: string,
  fail: (message: string) => Error,
): Promise<string | undefined> {
  const inCi = process.env.CI === "true";
  const found = await locate(inCi);
  if (found) return found;
  if (inCi) throw fail(`${suite} cannot run and CI=true forbids skipping`);
  console.warn(`\n!!! SKIPPING ${suite}: ${howToGet} !!!\n`);
  return undefined;
}
