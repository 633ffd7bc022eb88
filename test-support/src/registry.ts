/**
 * A real OCI registry for tests: Debian's `docker-registry` (the reference implementation,
 * distribution 2.8) on a loopback address, with a configuration and storage of its own, and
 * what a release pushes to it: the image index built by `scripts/image.sh --push` and the chart
 * pushed by `helm push`.
 *
 * Docker Engine speaks plain HTTP to registries on 127.0.0.0/8 without configuration; helm needs
 * `--plain-http`; containerd needs a `hosts.toml` naming `http://127.0.0.1:PORT` as the server.
 * The node of `scripts/cluster.sh`, in a network namespace of its own, gets both, and the
 * registry on its own 127.0.0.1, from `LocalCluster.pullFrom`.
 *
 * @example
 * ```ts
 * const registry = await startTestRegistry(await debianToolGate("suite", "docker-registry"));
 * try {
 *   const { reference } = await pushImageIndex(registry, ["linux/amd64", "linux/arm64"]);
 *   // reference: 127.0.0.1:PORT/ipvs-node-controller:0.1.0@sha256:...
 *   const index = await registry.manifest("ipvs-node-controller", "0.1.0");
 * } finally {
 *   await registry.stop();
 * }
 * ```
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { repositoryScript } from "./built-binary.js";
import { freePort, terminate } from "./envtest.js";
import { eventually } from "./eventually.js";
import type { Helm } from "./helm.js";

/** Media types of manifests and indexes a client accepts, OCI's and Docker's. */
export const MANIFEST_MEDIA_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
] as const;

/** A manifest or index as the registry serves it. */
export interface RegistryManifest {
  readonly mediaType: string;
  /** The registry's `Docker-Content-Digest`, checked against the SHA-256 of the bytes served. */
  readonly digest: string;
  readonly body: {
    readonly mediaType?: string;
    readonly manifests?: readonly {
      readonly digest: string;
      readonly mediaType: string;
      readonly platform?: { readonly os: string; readonly architecture: string };
    }[];
    readonly config?: { readonly digest: string; readonly mediaType: string };
    readonly layers?: readonly { readonly digest: string; readonly mediaType: string }[];
  };
}

/** A running registry. */
export interface TestRegistry {
  /** `host:port`, the registry part of every reference pushed to it. */
  readonly address: string;
  /** Fetches `repository`'s manifest or index by tag or digest. */
  manifest(repository: string, reference: string): Promise<RegistryManifest>;
  /** Fetches a blob and checks it against its digest. */
  blob(repository: string, digest: string): Promise<Buffer>;
  /** Stops the registry and removes its storage. Safe to call more than once. */
  stop(): Promise<void>;
}

/** Options of {@link startTestRegistry}. */
export interface TestRegistryOptions {
  /** A loopback address to listen on; default `127.0.0.1`. */
  readonly host?: string;
}

const live = new Set<{ child: ResultPromise; dir: string }>();
let exitHookInstalled = false;

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/**
 * Starts `binary` (from `debianToolGate(..., "docker-registry")`) on a free port of a loopback
 * address and waits until its API answers.
 */
export async function startTestRegistry(
  binary: string,
  options: TestRegistryOptions = {},
): Promise<TestRegistry> {
  const host = options.host ?? "127.0.0.1";
  if (!/^127\./.test(host))
    throw new Error(`the test registry listens on loopback only, not ${host}`);
  const port = await freePort(host);
  const address = `${host}:${port}`;
  const dir = mkdtempSync(join(tmpdir(), `registry-${process.pid}-`));
  // JSON is YAML: the registry reads it as its configuration file.
  await writeFile(
    join(dir, "config.yml"),
    JSON.stringify({
      version: 0.1,
      log: { level: "warn", accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: join(dir, "storage") }, delete: { enabled: true } },
      http: { addr: address },
    }),
  );
  const child = execa(binary, ["serve", join(dir, "config.yml")], {
    reject: false,
    stdin: "ignore",
    stdout: { file: join(dir, "registry.log") },
    stderr: { file: join(dir, "registry.log") },
  });
  const registration = { child, dir };
  live.add(registration);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const { child, dir } of live) {
        child.kill("SIGKILL");
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await terminate(child);
    live.delete(registration);
    rmSync(dir, { recursive: true, force: true });
  };

  const base = `http://${address}/v2`;
  try {
    await eventually(`the registry answers on ${address}`, async () => {
      if (child.exitCode !== null) {
        const log = await readFile(join(dir, "registry.log"), "utf8").catch(() => "");
        throw new Error(`docker-registry exited (${child.exitCode}): ${log.trim()}`);
      }
      return (await fetch(`${base}/`).catch(() => undefined))?.status === 200;
    });
  } catch (error) {
    await stop();
    throw error;
  }

  const get = async (path: string, accept?: string) => {
    const response = await fetch(`${base}/${path}`, accept ? { headers: { accept } } : {});
    const bytes = Buffer.from(await response.arrayBuffer());
    if (response.status !== 200) {
      throw new Error(`GET ${base}/${path}: ${response.status} ${bytes.toString("utf8")}`);
    }
    return { response, bytes };
  };

  return {
    address,
    async manifest(repository, reference) {
      const { response, bytes } = await get(
        `${repository}/manifests/${reference}`,
        MANIFEST_MEDIA_TYPES.join(", "),
      );
      const digest = response.headers.get("docker-content-digest") ?? "";
      if (digest !== sha256(bytes)) {
        throw new Error(
          `${repository}@${reference}: served digest ${digest}, bytes ${sha256(bytes)}`,
        );
      }
      return {
        mediaType: response.headers.get("content-type") ?? "",
        digest,
        body: JSON.parse(bytes.toString("utf8")) as RegistryManifest["body"],
      };
    },
    async blob(repository, digest) {
      const { bytes } = await get(`${repository}/blobs/${digest}`);
      if (sha256(bytes) !== digest) throw new Error(`blob ${digest} has digest ${sha256(bytes)}`);
      return bytes;
    },
    stop,
  };
}

/** The architectures a release ships: one image each, in one image index. */
export const RELEASE_PLATFORMS = ["linux/amd64", "linux/arm64"] as const;

/** What {@link pushImageIndex} pushed. */
export interface PushedImageIndex {
  /** `ADDRESS/ipvs-node-controller:VERSION@sha256:...`: the index, pinned by its digest. */
  readonly reference: string;
  /** `ADDRESS/ipvs-node-controller`, for a chart's `image.repository`. */
  readonly repository: string;
  readonly tag: string;
  /** `sha256:...` of the index, for a chart's `image.digest`. */
  readonly digest: string;
}

/**
 * Builds the image for `platforms` with `scripts/image.sh` (warm builds take seconds; another
 * architecture needs emulation, which the script enables itself) and pushes one image index to
 * `registry`. Throws with the script's last lines when it fails.
 */
export async function pushImageIndex(
  registry: Pick<TestRegistry, "address">,
  platforms: readonly string[],
): Promise<PushedImageIndex> {
  const repository = `${registry.address}/ipvs-node-controller`;
  const result = await execa(
    "bash",
    [repositoryScript("image.sh"), "--platform", platforms.join(","), "--push", repository],
    { reject: false, stdin: "ignore" },
  );
  const reference = result.stdout.trim().split("\n").at(-1) ?? "";
  const match = /^(.+):([^:@/]+)@(sha256:[0-9a-f]{64})$/.exec(reference);
  if (result.exitCode !== 0 || match?.[1] !== repository) {
    const stderr = result.stderr.trim().split("\n").slice(-30).join("\n");
    throw new Error(`scripts/image.sh --push failed (exit ${result.exitCode}): ${stderr}`);
  }
  return { reference, repository, tag: match[2] as string, digest: match[3] as string };
}

/** What {@link pushChart} pushed. */
export interface PushedChart {
  /** `oci://ADDRESS/charts/NAME`, for `helm install` with `--version`. */
  readonly url: string;
  readonly version: string;
  /** `sha256:...` of the chart's manifest, as `helm push` reported it. */
  readonly digest: string;
}

/** `helm package` of `chartDir`, then `helm push` to `oci://ADDRESS/charts` over plain HTTP. */
export async function pushChart(
  helm: Helm,
  registry: Pick<TestRegistry, "address">,
  chartDir: string,
): Promise<PushedChart> {
  const out = mkdtempSync(join(tmpdir(), "chart-"));
  try {
    const packaged = await helm.run(["package", chartDir, "--destination", out]);
    const archive = /saved it to: (\S+\.tgz)/.exec(packaged.stdout)?.[1];
    if (!archive) throw new Error(`helm package printed no archive: ${packaged.stdout}`);
    const pushed = await helm.run([
      "push",
      archive,
      `oci://${registry.address}/charts`,
      "--plain-http",
    ]);
    // Helm prints where it pushed and the manifest's digest (on stderr in Helm 3, stdout in 4).
    const said = `${pushed.stdout}\n${pushed.stderr}`;
    const pushedTo = /Pushed: (\S+):(\S+)/.exec(said);
    const digest = /Digest: (sha256:[0-9a-f]{64})/.exec(said)?.[1];
    if (!pushedTo || !digest) throw new Error(`helm push said: ${said}`);
    return { url: `oci://${pushedTo[1]}`, version: pushedTo[2] as string, digest };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
