/**
 * Docker for the image tests: whether they can run here, the `docker` CLI, and builds through
 * `scripts/image.sh` (which installs and starts Docker Engine, and builds base images, where they
 * are missing).
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { envtestTestsEnabled, kernelTestsEnabled } from "@ipvs-node-controller/test-support";
import { execa } from "execa";

const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
export const IMAGE_SCRIPT = `${REPO_ROOT}scripts/image.sh`;

/** The controller package's version: the image's tag. */
export const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;

/** Why Docker cannot run here at all, or undefined when it can (image.sh may install it). */
async function dockerUnavailable(): Promise<string | undefined> {
  const info = await execa("docker", ["info"], { reject: false, stdin: "ignore" });
  if (info.exitCode === 0) return undefined;
  if (process.getuid?.() !== 0) {
    return "no Docker engine answers and installing one needs root";
  }
  const has = async (program: string) =>
    (await execa("sh", ["-c", `command -v ${program}`], { reject: false })).exitCode === 0;
  if ((await has("dockerd")) || (await has("apt-get"))) return undefined;
  return "no Docker engine answers, and neither dockerd nor apt-get is there to provide one";
}

/**
 * Whether an image suite runs: Docker (or root to install it), network namespaces, and, when
 * `envtest` is set, the test API server. Skips loudly, except under `CI=true`, where it throws.
 */
export async function imageTestsEnabled(
  suite: string,
  needs: { readonly envtest: boolean },
): Promise<boolean> {
  const reason = await dockerUnavailable();
  if (reason !== undefined) {
    if (process.env.CI === "true") {
      throw new Error(`${suite} cannot run and CI=true forbids skipping: ${reason}`);
    }
    console.warn(`\n!!! SKIPPING ${suite}: ${reason} !!!\n`);
    return false;
  }
  if (!(await kernelTestsEnabled(suite))) return false;
  return !needs.envtest || (await envtestTestsEnabled(suite)) !== undefined;
}

/** Runs `docker args` and returns its stdout; throws with its stderr when it fails. */
export async function docker(args: readonly string[]): Promise<string> {
  const result = await execa("docker", args, { reject: false, stdin: "ignore" });
  if (result.exitCode !== 0) {
    throw new Error(`docker ${args.join(" ")} failed (exit ${result.exitCode}): ${result.stderr}`);
  }
  return result.stdout;
}

export const tail = (text: string, lines: number) =>
  text.trim().split("\n").slice(-lines).join("\n");
export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/**
 * Builds the image with `scripts/image.sh args` and returns the reference it printed last; logs
 * how long the build took (seconds when warm).
 */
export async function buildImage(args: readonly string[] = []): Promise<string> {
  const started = performance.now();
  const built = await execa("bash", [IMAGE_SCRIPT, ...args], { reject: false, stdin: "ignore" });
  if (built.exitCode !== 0) {
    throw new Error(`scripts/image.sh failed (exit ${built.exitCode}):\n${tail(built.stderr, 30)}`);
  }
  const image = tail(built.stdout, 1);
  console.log(
    `image: ${image} from scripts/image.sh ${args.join(" ")} in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  return image;
}

const CONTAINER_PREFIX = "ipvs-node-controller-test-";

/** The name of a test container: the test process's id in it tells stale ones apart. */
export const containerName = (what: string) => `${CONTAINER_PREFIX}${process.pid}-${what}`;

/** Removes the containers of earlier test runs whose process is gone (killed runs). */
export async function removeStaleContainers(): Promise<void> {
  const names = await docker([
    "ps",
    "--all",
    `--filter=name=${CONTAINER_PREFIX}`,
    "--format={{.Names}}",
  ]);
  const stale = names.split("\n").filter((container) => {
    const pid = Number(container.slice(CONTAINER_PREFIX.length).split("-")[0]);
    if (!container.startsWith(CONTAINER_PREFIX) || !Number.isInteger(pid) || pid === process.pid) {
      return false;
    }
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
  if (stale.length > 0) await docker(["rm", "--force", ...stale]);
}

/**
 * Starts a "node": a long-lived container of `image` holding a network namespace (`--network
 * none`) for a topology to be built around; returns its first process's id.
 */
export async function startNodeContainer(
  image: string,
  name: string,
  runArgs: readonly string[] = [],
): Promise<number> {
  await docker([
    "run",
    "--detach",
    `--name=${name}`,
    ...runArgs,
    "--network=none",
    // A node has IPv6, which Docker turns off in a container without an IPv6 network.
    "--sysctl=net.ipv6.conf.all.disable_ipv6=0",
    "--sysctl=net.ipv6.conf.default.disable_ipv6=0",
    "--cap-drop=ALL",
    "--entrypoint=sleep",
    image,
    "infinity",
  ]);
  return Number(await docker(["inspect", "--format={{.State.Pid}}", name]));
}
