// What ships, and how large it is: the bundle (the files `run` loads, and all of it) and the image
// that scripts/image.sh builds, for this machine's architecture and for arm64.

import { readdirSync, readFileSync, statfsSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runTool } from "@ipvs-node-controller/backend";
import { startProcess } from "./cleanup.mjs";
import { CLI, MiB } from "./controller-process.mjs";
import { log } from "./log.mjs";
import { round } from "./stats.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BUNDLE = dirname(CLI);

/**
 * The bundle's size in bytes: the files `run` loads (the entry, the chain of dynamic imports from
 * it to run's own chunk, and every chunk those import statically, from esbuild's meta.json), and
 * every file of the bundle but the source maps and meta.json itself.
 */
export function bundleSizes() {
  const meta = JSON.parse(readFileSync(join(BUNDLE, "meta.json"), "utf8"));
  // Output paths are relative to where esbuild ran; the bundle is one flat directory.
  const outputs = new Map(
    Object.entries(meta.outputs)
      .filter(([path]) => !path.endsWith(".map"))
      .map(([path, output]) => [basename(path), output]),
  );
  const importsOf = (file, kinds) =>
    outputs
      .get(file)
      .imports.filter((imported) => !imported.external && kinds.includes(imported.kind))
      .map((imported) => basename(imported.path));
  const entry = basename(CLI);
  const run = [...outputs].find(([, output]) => output.entryPoint?.endsWith("src/run.ts"))?.[0];
  if (run === undefined) throw new Error(`${BUNDLE}/meta.json has no chunk of src/run.ts`);

  // The shortest chain of imports from the entry to run's chunk.
  const from = new Map([[entry, undefined]]);
  const queue = [entry];
  while (queue.length > 0 && !from.has(run)) {
    const file = queue.shift();
    for (const next of importsOf(file, ["import-statement", "dynamic-import"])) {
      if (from.has(next)) continue;
      from.set(next, file);
      queue.push(next);
    }
  }
  if (!from.has(run)) throw new Error(`${run} is not reachable from ${entry}`);
  const chain = [];
  for (let file = run; file !== undefined; file = from.get(file)) chain.unshift(file);

  // Each file of the chain, and whatever it imports statically.
  const loaded = new Set();
  const pending = [...chain];
  while (pending.length > 0) {
    const file = pending.pop();
    if (loaded.has(file)) continue;
    loaded.add(file);
    pending.push(...importsOf(file, ["import-statement"]));
  }
  const bytes = (files) => files.reduce((sum, file) => sum + statSync(join(BUNDLE, file)).size, 0);
  const all = readdirSync(BUNDLE).filter((file) => !file.endsWith(".map") && file !== "meta.json");
  return {
    run: { bytes: bytes([...loaded]), files: [...loaded].sort() },
    all: { bytes: bytes(all), files: all.length },
  };
}

/** The version of the controller package: the images' tag. */
const version = () =>
  JSON.parse(readFileSync(join(ROOT, "packages/controller/package.json"), "utf8")).version;

/**
 * Disk space a build may need. With Docker's vfs storage driver (what scripts/image.sh starts
 * where no engine runs), every layer is a full copy of the file system below it: one build of a
 * changed tree takes gigabytes, and a full disk fails every other user of the machine too.
 */
const BUILD_NEEDS_GIB = 10;

/**
 * The size (`docker image inspect`) of the image scripts/image.sh builds for this machine's
 * architecture, built from this tree first, and of the arm64 one: built too with `--image-arm64`
 * (cold, about 10 minutes under emulation), else the one present, as it is. An image that could
 * not be built (too little disk space for Docker) is measured as present, and says so. Without
 * Docker, says so.
 */
export async function imageSizes(options) {
  const docker = await runTool("docker", ["version", "--format", "{{.Server.Arch}}"]).catch(
    (error) => ({ exitCode: -1, stderr: error.message }),
  );
  if (docker.exitCode !== 0) {
    return { notMeasured: `Docker is not available: ${lastLine(docker.stderr)}` };
  }
  const native = docker.stdout.trim();
  const images = { [native]: await image([], `ipvs-node-controller:${version()}`, true) };
  if (native !== "arm64") {
    const reference = `ipvs-node-controller:${version()}-arm64`;
    if (options.imageArm64 || (options.imageArm64 === undefined && (await inspect(reference)))) {
      images.arm64 = await image(["--platform", "linux/arm64"], reference, options.imageArm64);
    }
  }
  return { images };
}

/**
 * `reference`, built with scripts/image.sh `args` first when `build` and the disk has room, and
 * measured.
 */
async function image(args, reference, build) {
  let built;
  let note;
  if (build) {
    const free = await freeGiB();
    if (free >= BUILD_NEEDS_GIB) {
      built = await buildImage(args);
      if (built.failed) return built;
    } else {
      note = `not built: ${free} GiB free for Docker, a build may need ${BUILD_NEEDS_GIB}`;
    }
  }
  const found = await inspect(built?.reference ?? reference);
  if (!found) return { failed: `${reference} is not present${note ? ` and was ${note}` : ""}` };
  const result = { ...found, ...(built ? { buildSeconds: built.buildSeconds } : {}) };
  if (!built) result.note = `${note ?? "not built by this run"}; present, created ${found.created}`;
  log(
    "footprint",
    `${result.reference} (${result.platform}): ${result.mib} MiB${result.note ? ` (${result.note})` : ""}`,
  );
  return result;
}

/** GiB available where Docker keeps its images. */
async function freeGiB() {
  const root = await runTool("docker", ["info", "--format", "{{.DockerRootDir}}"]);
  const stats = statfsSync(root.stdout.trim() || "/");
  return round((stats.bavail * stats.bsize) / 1024 ** 3, 1);
}

/** Size, platform, id and creation time of `reference`, or `undefined` when absent. */
async function inspect(reference) {
  const inspected = await runTool("docker", [
    "image",
    "inspect",
    "--format",
    "{{.Size}} {{.Os}}/{{.Architecture}} {{.Id}} {{.Created}}",
    reference,
  ]);
  if (inspected.exitCode !== 0) return undefined;
  const [size, platform, id, created] = inspected.stdout.trim().split(" ");
  return {
    reference,
    platform,
    id: id.slice(0, 19),
    created: created.replace(/\.\d+Z$/, "Z"),
    mib: round(Number(size) / MiB, 1),
  };
}

const lastLine = (text) => text.trim().split("\n").at(-1) ?? "";

/** Builds with scripts/image.sh `args`: the reference it printed last, and how long it took. */
async function buildImage(args) {
  const started = performance.now();
  log("footprint", `bash scripts/image.sh ${args.join(" ")}`.trim());
  const build = startProcess("bash", ["scripts/image.sh", ...args], { cwd: ROOT, detached: true });
  let stdout = "";
  let stderr = "";
  build.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  build.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const { code } = await build.exited;
  await build.stop();
  if (code !== 0) return { failed: `scripts/image.sh exited ${code}: ${lastLine(stderr)}` };
  return {
    reference: lastLine(stdout),
    buildSeconds: Math.round((performance.now() - started) / 1000),
  };
}
