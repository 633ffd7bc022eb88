/**
 * A release as operators receive it, through a real OCI registry: Debian's docker-registry
 * (distribution, the reference registry) started on 127.0.0.1 with storage of its own, and
 * stopped, by this suite. `scripts/image.sh --platform linux/amd64,linux/arm64 --push` pushes one
 * image index; `helm package` and `helm push` push the chart. The index must list one image per
 * architecture, each with its architecture's config; what the registry serves must match its
 * digests; the arm64 image pulled from it must run (under emulation); and the chart must install
 * from `oci://` against a real kube-apiserver with the image pinned to the index's digest, its
 * ServiceMonitor and PrometheusRule accepted by the Prometheus Operator's own CRDs.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  acquireEmulation,
  createHelm,
  debianToolGate,
  type Helm,
  helmTestsEnabled,
  type PushedChart,
  type PushedImageIndex,
  prometheusOperatorCrds,
  pushChart,
  pushImageIndex,
  RELEASE_PLATFORMS,
  startTestApiServer,
  startTestRegistry,
  type TestApiServer,
  type TestRegistry,
} from "@ipvs-node-controller/test-support";
import type { V1DaemonSet } from "@kubernetes/client-node";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { docker, imageTestsEnabled } from "./docker.js";

const CHART_DIR = fileURLToPath(
  new URL("../../../../deploy/helm/ipvs-node-controller", import.meta.url),
);
const NAMESPACE = "kube-system";
const RELEASE = "ipvs-node-controller";

const registryBinary = await debianToolGate("release.test.ts", "docker-registry");
const helmBinary = registryBinary ? await helmTestsEnabled("release.test.ts") : undefined;
const enabled =
  helmBinary !== undefined && (await imageTestsEnabled("release.test.ts", { envtest: true }));

describe.skipIf(!enabled)("a release through a real OCI registry", () => {
  let releaseEmulation: (() => Promise<void>) | undefined;
  let registry: TestRegistry;
  let helm: Helm;
  let api: TestApiServer;
  let image: PushedImageIndex;
  let chart: PushedChart;
  const pulled: string[] = [];

  beforeAll(async () => {
    releaseEmulation = await acquireEmulation("arm64");
    registry = await startTestRegistry(registryBinary as string);
    const started = performance.now();
    image = await pushImageIndex(registry, RELEASE_PLATFORMS);
    helm = await createHelm(helmBinary as string);
    chart = await pushChart(helm, registry, CHART_DIR);
    console.log(
      `pushed ${image.reference} and ${chart.url}:${chart.version}@${chart.digest} in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    api = await startTestApiServer();
  }, 3_600_000);

  afterAll(async () => {
    if (pulled.length > 0) await execa("docker", ["rmi", ...pulled], { reject: false });
    await api?.stop();
    await helm?.dispose();
    await registry?.stop();
    await releaseEmulation?.();
  }, 120_000);

  it("listens on loopback only", () => {
    expect(registry.address).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it("serves one index listing an image of each architecture, built from this tree", async () => {
    const repository = "ipvs-node-controller";
    const index = await registry.manifest(repository, image.tag);
    expect(index.digest).toBe(image.digest);
    expect(index.mediaType).toBe("application/vnd.docker.distribution.manifest.list.v2+json");
    const platforms = (index.body.manifests ?? []).map(
      (entry) => `${entry.platform?.os}/${entry.platform?.architecture}`,
    );
    expect(platforms.sort()).toEqual([...RELEASE_PLATFORMS].sort());
    for (const entry of index.body.manifests ?? []) {
      const arch = entry.platform?.architecture as string;
      // The image by its digest (checked against the bytes served), and its config.
      const manifest = await registry.manifest(repository, entry.digest);
      expect(manifest.digest).toBe(entry.digest);
      const configDigest = manifest.body.config?.digest as string;
      const config = JSON.parse((await registry.blob(repository, configDigest)).toString()) as {
        os: string;
        architecture: string;
        config: { Entrypoint: string[] };
      };
      expect({ os: config.os, architecture: config.architecture }).toEqual({
        os: "linux",
        architecture: arch,
      });
      expect(config.config.Entrypoint).toEqual(["ipvs-node-controller"]);
      // The same image as the one built here: Docker names an image by its config's digest.
      const local =
        arch === "amd64"
          ? `ipvs-node-controller:${image.tag}`
          : `ipvs-node-controller:${image.tag}-${arch}`;
      expect(await docker(["image", "inspect", "--format={{.Id}}", local])).toBe(configDigest);
      // Each architecture's tag names the same image.
      expect((await registry.manifest(repository, `${image.tag}-${arch}`)).digest).toBe(
        entry.digest,
      );
    }
  }, 120_000);

  it("gives a machine of each architecture its own image when pulled by the index's digest", async () => {
    for (const platform of RELEASE_PLATFORMS) {
      await docker(["pull", "--quiet", "--platform", platform, image.reference]);
      pulled.push(image.reference);
      expect(
        await docker(["image", "inspect", "--format={{.Os}}/{{.Architecture}}", image.reference]),
      ).toBe(platform);
      const version = await docker(["run", "--rm", "--network=none", image.reference, "--version"]);
      expect(version.trim()).toBe(image.tag);
      await docker(["rmi", image.reference]);
    }
  }, 600_000);

  it("serves the chart of this tree, under the digest helm push reported", async () => {
    const manifest = await registry.manifest("charts/ipvs-node-controller", chart.version);
    expect(manifest.digest).toBe(chart.digest);
    expect(manifest.body.config?.mediaType).toBe("application/vnd.cncf.helm.config.v1+json");
    expect(manifest.body.layers?.map((layer) => layer.mediaType)).toEqual([
      "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    ]);
    const shown = await helm.run([
      "show",
      "chart",
      chart.url,
      "--version",
      chart.version,
      "--plain-http",
    ]);
    const local = parseYaml(await readFile(`${CHART_DIR}/Chart.yaml`, "utf8")) as object;
    expect(parseYaml(shown.stdout)).toEqual(local);
    const values = await helm.run([
      "show",
      "values",
      chart.url,
      "--version",
      chart.version,
      "--plain-http",
    ]);
    expect(values.stdout.trim()).toBe((await readFile(`${CHART_DIR}/values.yaml`, "utf8")).trim());
  }, 120_000);

  it("installs from oci:// with the image pinned to the index, and its monitoring objects", async () => {
    for (const crd of await prometheusOperatorCrds()) {
      await api.kubectl(["apply", "--server-side", "-f", crd]);
    }
    await api.kubectl([
      "wait",
      "--for=condition=Established",
      "crd/servicemonitors.monitoring.coreos.com",
      "crd/prometheusrules.monitoring.coreos.com",
    ]);
    const result = await helm.run(
      [
        "install",
        RELEASE,
        chart.url,
        "--version",
        chart.version,
        "--plain-http",
        "--namespace",
        NAMESPACE,
        "--values",
        "-",
      ],
      {
        kubeconfig: api.kubeconfigPath,
        input: JSON.stringify({
          image: { repository: image.repository, digest: image.digest },
          metrics: {
            bindAddress: "0.0.0.0:10266",
            serviceMonitor: { enabled: true },
            prometheusRule: { enabled: true },
          },
        }),
      },
    );
    expect(result.stdout).toMatch(/STATUS: deployed/);
    const daemonSet = JSON.parse(
      (await api.kubectl(["get", "daemonset", RELEASE, "-n", NAMESPACE, "-o", "json"])).stdout,
    ) as V1DaemonSet;
    expect(daemonSet.spec?.template.spec?.containers[0]?.image).toBe(image.reference);
    for (const kind of ["servicemonitor", "prometheusrule", "service"]) {
      const got = await api.kubectl(["get", kind, RELEASE, "-n", NAMESPACE, "-o", "name"]);
      expect(got.stdout.trim()).toMatch(new RegExp(`/${RELEASE}$`));
    }
    // The CRDs' schemas were applied: a rule the operator's schema refuses is refused.
    const refused = await api.kubectl(["apply", "--dry-run=server", "-f", "-"], {
      reject: false,
      input: JSON.stringify({
        apiVersion: "monitoring.coreos.com/v1",
        kind: "PrometheusRule",
        metadata: { name: "broken", namespace: NAMESPACE },
        spec: { groups: [{ name: "g", rules: [{ alert: "A" }] }] },
      }),
    });
    expect(refused.exitCode).not.toBe(0);
    await helm.run(["uninstall", RELEASE, "--namespace", NAMESPACE], {
      kubeconfig: api.kubeconfigPath,
    });
  }, 300_000);
});
