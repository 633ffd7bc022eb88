/**
 * The `helm` binary for the chart's tests, and a way to run it that ignores the user's own Helm
 * configuration (repositories, plugins, registry logins, HELM_* variables).
 *
 * The binary comes from `scripts/helm-build.sh`, which compiles it from the Go module proxy and
 * caches it by version, or from `HELM_BINARY`.
 *
 * @example
 * ```ts
 * const binary = await helmTestsEnabled("chart tests");
 * const helm = await createHelm(binary as string);
 * try {
 *   const { stdout } = await helm.run(["template", "demo", "deploy/helm/ipvs-node-controller"]);
 * } finally {
 *   await helm.dispose();
 * }
 * ```
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { builtBinaryGate, repositoryScript, runBuildScript } from "./built-binary.js";

const BUILD_SCRIPT = repositoryScript("helm-build.sh");

/** Thrown when helm cannot be found or built. */
export class HelmUnavailableError extends Error {
  override readonly name = "HelmUnavailableError";
}

/**
 * Finds the helm binary: `HELM_BINARY` if set (checked, never built), else the version cache of
 * `scripts/helm-build.sh`. With `build: false` nothing is compiled and `undefined` means "not
 * built yet"; with `build: true` (the default) a missing binary is built, which takes minutes.
 *
 * @throws HelmUnavailableError when `HELM_BINARY` is unusable or the build fails.
 */
export async function locateHelm(options: { build?: boolean } = {}): Promise<string | undefined> {
  return runBuildScript(
    BUILD_SCRIPT,
    { build: options.build ?? true },
    (message) => new HelmUnavailableError(message),
  );
}

/**
 * Decides whether a suite that needs helm runs. Under `CI=true` helm must be there (it is built
 * if need be, and a failure throws); elsewhere a missing build skips the suite with a loud
 * warning. Returns the binary's path, or undefined to skip.
 */
export function helmTestsEnabled(suite: string): Promise<string | undefined> {
  return builtBinaryGate(
    suite,
    (build) => locateHelm({ build }),
    "no helm binary (run scripts/helm-build.sh or set HELM_BINARY)",
    (message) => new HelmUnavailableError(message),
  );
}

/** Outcome of a {@link Helm.run} call. */
export interface HelmResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Options of {@link Helm.run}. */
export interface HelmRunOptions {
  /** Sent to helm's stdin (for `--values -`). */
  input?: string;
  /** Kubeconfig for commands that talk to a cluster. */
  kubeconfig?: string;
  /** When false, a non-zero exit resolves instead of throwing. Default true. */
  reject?: boolean;
}

/** A helm binary with a private, empty configuration. */
export interface Helm {
  readonly binary: string;
  /** What `helm version` reports, e.g. `v4.3.2`. */
  readonly version: string;
  run(args: readonly string[], options?: HelmRunOptions): Promise<HelmResult>;
  /** Removes the private configuration directory. */
  dispose(): Promise<void>;
}

/** Wraps `binary` so that every run uses a fresh configuration of its own. */
export async function createHelm(binary: string): Promise<Helm> {
  const home = await mkdtemp(join(tmpdir(), `helm-${process.pid}-`));
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    // Anything helm reads from the environment would make results depend on the machine.
    if (value !== undefined && !name.startsWith("HELM_") && name !== "KUBECONFIG") {
      env[name] = value;
    }
  }
  env.HELM_CACHE_HOME = join(home, "cache");
  env.HELM_CONFIG_HOME = join(home, "config");
  env.HELM_DATA_HOME = join(home, "data");

  const run = async (args: readonly string[], options: HelmRunOptions = {}) => {
    const result = await execa(
      binary,
      [...args, ...(options.kubeconfig ? ["--kubeconfig", options.kubeconfig] : [])],
      {
        env,
        extendEnv: false,
        reject: false,
        ...(options.input === undefined ? { stdin: "ignore" as const } : { input: options.input }),
      },
    );
    const outcome: HelmResult = {
      stdout: result.stdout,
      stderr: result.stderr,
      exitCode: result.exitCode ?? -1,
    };
    if (options.reject !== false && outcome.exitCode !== 0) {
      throw new Error(`helm ${args.join(" ")} exited ${outcome.exitCode}: ${outcome.stderr}`);
    }
    return outcome;
  };
  const version = (await run(["version", "--template", "{{ .Version }}"])).stdout.trim();
  return {
    binary,
    version,
    run,
    dispose: () => rm(home, { recursive: true, force: true }),
  };
}
