/**
 * The Helm chart deploy/helm/ipvs-node-controller: `helm lint`, the effect of every value, the
 * values it refuses, equality of its renderings with the kustomize overlays (modulo Helm's own
 * labels), the same least-privilege checks as the kustomize manifests, and, against a real
 * kube-apiserver, a server-side dry run plus a real install, upgrade and uninstall.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  createHelm,
  envtestTestsEnabled,
  type Helm,
  helmTestsEnabled,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import type { V1DaemonSet, V1ServiceAccount } from "@kubernetes/client-node";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import {
  controllerContainer,
  expectHardenedDaemonSet,
  expectLeastPrivilegeDaemonSet,
  expectReadOnlyRbac,
  expectVariant,
  findObject,
  type KubeObject,
  NAME,
  NAMESPACE,
  parseManifest,
  type Variant,
} from "./manifest-checks.js";

const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const DEPLOY_DIR = `${REPO_ROOT}deploy`;
const CHART_DIR = `${DEPLOY_DIR}/helm/ipvs-node-controller`;
const RENDERED_MANIFEST = `${DEPLOY_DIR}/ipvs-node-controller.yaml`;
/** The release name the documentation installs with. */
const RELEASE = NAME;

const chart = parseYaml(await readFile(`${CHART_DIR}/Chart.yaml`, "utf8")) as {
  name: string;
  version: string;
  appVersion: string;
};

const helmBinary = await helmTestsEnabled("helm.test.ts: the Helm chart's tests");
// kubectl (for `kubectl kustomize`) and the API server come from the envtest build.
const assetsDir = helmBinary
  ? await envtestTestsEnabled("helm.test.ts: comparisons with kustomize and API-server tests")
  : undefined;

/**
 * The labels Helm's conventions add to every object's metadata. They are the only difference
 * from the kustomize manifests: the selector and the pods' labels stay identical, so that an
 * installation can move between the two without recreating the DaemonSet.
 */
const HELM_LABELS = [
  "helm.sh/chart",
  "app.kubernetes.io/instance",
  "app.kubernetes.io/version",
  "app.kubernetes.io/managed-by",
] as const;

function expectedHelmLabels(release: string, version = chart.appVersion): Record<string, string> {
  return {
    "helm.sh/chart": `${chart.name}-${chart.version}`,
    "app.kubernetes.io/instance": release,
    "app.kubernetes.io/version": version,
    "app.kubernetes.io/managed-by": "Helm",
  };
}

/** Asserts Helm's labels on `object` and returns a copy without them. */
function withoutHelmLabels(object: KubeObject, release = RELEASE): KubeObject {
  const what = `${object.kind}/${object.metadata?.name}`;
  const labels = object.metadata?.labels ?? {};
  const helmLabels = Object.fromEntries(
    Object.entries(labels).filter(([key]) => (HELM_LABELS as readonly string[]).includes(key)),
  );
  expect(helmLabels, `Helm's labels on ${what}`).toStrictEqual(expectedHelmLabels(release));
  const copy = structuredClone(object);
  for (const key of HELM_LABELS) delete copy.metadata?.labels?.[key];
  return copy;
}

const objectKey = (o: KubeObject): string =>
  `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;

/** Objects in a stable order, so that a difference shows as one readable diff. */
function byKey(objects: readonly KubeObject[]): KubeObject[] {
  const keys = objects.map(objectKey);
  expect(new Set(keys).size, `no duplicate objects in ${keys.join(", ")}`).toBe(keys.length);
  return [...objects].sort((a, b) => objectKey(a).localeCompare(objectKey(b)));
}

/** Asserts that the chart's rendering is the kustomize one plus Helm's labels, nothing else. */
function expectSameObjects(fromHelm: readonly KubeObject[], fromKustomize: readonly KubeObject[]) {
  expect(fromHelm.length).toBeGreaterThan(0);
  expect(byKey(fromHelm.map((o) => withoutHelmLabels(o)))).toStrictEqual(byKey(fromKustomize));
}

/** Each overlay and the values that make the chart render the same objects. */
const OVERLAY_VALUES = [
  { overlay: "nft", values: {}, variant: { backend: "nft" } },
  { overlay: "iptables", values: { backend: "iptables" }, variant: { backend: "iptables" } },
  {
    overlay: "dual-stack",
    values: { netStack: "ipv4,ipv6" },
    variant: { backend: "nft", netStack: "ipv4,ipv6" },
  },
] as const satisfies readonly { overlay: string; values: object; variant: Variant }[];

// Each helm run takes a fraction of a second, but the whole suite shares two cores.
describe.skipIf(!helmBinary)("the Helm chart", { timeout: 30_000 }, () => {
  let helm: Helm;

  beforeAll(async () => {
    helm = await createHelm(helmBinary as string);
    expect(helm.version).toMatch(/^v[34]\.\d+\.\d+$/);
  });

  afterAll(async () => {
    await helm?.dispose();
  });

  interface RenderOptions {
    release?: string;
    namespace?: string;
  }

  /** `helm template` with `values` passed as a values file, like an operator's. */
  const renderText = async (values: object = {}, options: RenderOptions = {}) =>
    (
      await helm.run(
        [
          "template",
          options.release ?? RELEASE,
          CHART_DIR,
          "--namespace",
          options.namespace ?? NAMESPACE,
          "--values",
          "-",
        ],
        { input: JSON.stringify(values) },
      )
    ).stdout;

  const render = async (values: object = {}, options: RenderOptions = {}) =>
    parseManifest(await renderText(values, options));

  /** The error helm reports for values the chart refuses. */
  const refusal = async (values: object): Promise<string> => {
    const result = await helm.run(
      ["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--values", "-"],
      { input: JSON.stringify(values), reject: false },
    );
    expect(result.exitCode, `rendered although it should not:\n${result.stdout}`).not.toBe(0);
    return result.stderr;
  };

  const daemonSetOf = (objects: readonly KubeObject[], name = NAME) =>
    findObject<V1DaemonSet>(objects, "DaemonSet", name);

  describe("lint and Chart.yaml", () => {
    it.each(OVERLAY_VALUES)(
      "helm lint --strict passes with the values of the $overlay overlay",
      async ({ values }) => {
        const result = await helm.run(["lint", "--strict", CHART_DIR, "--values", "-"], {
          input: JSON.stringify(values),
        });
        expect(result.stdout).toContain("1 chart(s) linted, 0 chart(s) failed");
      },
    );

    it("helm lint fails on values the schema refuses (the check can fail)", async () => {
      const result = await helm.run(["lint", "--strict", CHART_DIR, "--set", "backend=ipvs"], {
        reject: false,
      });
      expect(result.exitCode).not.toBe(0);
      expect(`${result.stdout}\n${result.stderr}`).toMatch(/backend/);
    });

    it("the chart's appVersion is the controller's version and the manifest's image tag", async () => {
      const controllerPackage = JSON.parse(
        await readFile(fileURLToPath(new URL("../../package.json", import.meta.url)), "utf8"),
      ) as { version: string };
      expect(chart.appVersion).toBe(controllerPackage.version);
      const manifest = parseManifest(await readFile(RENDERED_MANIFEST, "utf8"));
      expect(controllerContainer(daemonSetOf(manifest)).image).toBe(
        `ipvs-node-controller:${chart.appVersion}`,
      );
    });
  });

  describe("default values", () => {
    it("render deploy/ipvs-node-controller.yaml, object for object, plus Helm's labels", async () => {
      const fromHelm = await render();
      const committed = parseManifest(await readFile(RENDERED_MANIFEST, "utf8"));
      expectSameObjects(fromHelm, committed);
    });

    it("keep the selector and the pods' labels free of Helm's labels", async () => {
      const daemonSet = daemonSetOf(await render());
      expect(daemonSet.spec?.selector.matchLabels).toStrictEqual({
        "app.kubernetes.io/name": NAME,
      });
      expect(daemonSet.spec?.template.metadata?.labels).toStrictEqual({
        "app.kubernetes.io/name": NAME,
      });
    });

    it("pass the same least-privilege and securityContext checks as the kustomize manifests", async () => {
      const objects = await render();
      expectHardenedDaemonSet(daemonSetOf(objects));
      expectVariant(daemonSetOf(objects), { backend: "nft" });
      expectReadOnlyRbac(objects);
      expect(objects.map((o) => o.kind).sort()).toEqual([
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "ServiceAccount",
      ]);
    });

    it("name objects after the chart, not the release: a second release clashes", async () => {
      const objects = await render({}, { release: "other" });
      for (const object of objects) {
        expect(object.metadata?.name).toBe(NAME);
        expect(object.metadata?.labels?.["app.kubernetes.io/instance"]).toBe("other");
      }
    });

    it("put namespaced objects in the release's namespace", async () => {
      const objects = await render({}, { namespace: "node-infra" });
      expect(findObject<KubeObject>(objects, "ServiceAccount").metadata?.namespace).toBe(
        "node-infra",
      );
      expect(daemonSetOf(objects).metadata?.namespace).toBe("node-infra");
      expectReadOnlyRbac(objects, NAME, "node-infra");
      for (const kind of ["ClusterRole", "ClusterRoleBinding"]) {
        expect(findObject<KubeObject>(objects, kind).metadata?.namespace).toBeUndefined();
      }
    });
  });

  describe.skipIf(!assetsDir)("against the kustomize overlays", () => {
    const kustomize = async (overlay: string) =>
      parseManifest(
        (
          await execa(`${assetsDir}/kubectl`, ["kustomize", `${DEPLOY_DIR}/overlays/${overlay}`], {
            stdin: "ignore",
          })
        ).stdout,
      );

    it.each(OVERLAY_VALUES)(
      "the values of the $overlay overlay render its objects, plus Helm's labels",
      async ({ overlay, values, variant }) => {
        const fromHelm = await render(values);
        expectSameObjects(fromHelm, await kustomize(overlay));
        expectHardenedDaemonSet(daemonSetOf(fromHelm));
        expectVariant(daemonSetOf(fromHelm), variant);
        expectReadOnlyRbac(fromHelm);
      },
    );

    it("a change only the chart makes is caught by the comparison (the check can fail)", async () => {
      const fromHelm = await render({ logLevel: "debug" });
      const fromKustomize = await kustomize("nft");
      let failure: unknown;
      try {
        expectSameObjects(fromHelm, fromKustomize);
      } catch (error) {
        failure = error;
      }
      expect(failure, "the comparison found no difference").toBeInstanceOf(Error);
      expect(JSON.stringify((failure as { actual?: unknown }).actual)).toContain(
        "--log-level=debug",
      );
    });
  });

  describe("each value has its effect", () => {
    interface Case {
      name: string;
      values: object;
      check: (objects: KubeObject[], daemonSet: V1DaemonSet) => void;
      /** DaemonSet name, if the values rename it. */
      objectName?: string;
    }
    const container = (daemonSet: V1DaemonSet) => controllerContainer(daemonSet);
    const podSpec = (daemonSet: V1DaemonSet) => daemonSet.spec?.template.spec;
    const digest = `sha256:${"ab".repeat(32)}`;

    const cases: Case[] = [
      {
        name: "backend: iptables mounts the xtables lock, adds NET_RAW and passes --backend",
        values: { backend: "iptables" },
        check: (_, daemonSet) => {
          expectVariant(daemonSet, { backend: "iptables" });
          expect(container(daemonSet).args?.[1]).toBe("--backend=iptables");
          expect(container(daemonSet).volumeMounts).toContainEqual({
            name: "xtables-lock",
            mountPath: "/run/xtables.lock",
          });
          expect(podSpec(daemonSet)?.volumes).toContainEqual({
            name: "xtables-lock",
            hostPath: { path: "/run/xtables.lock", type: "FileOrCreate" },
          });
        },
      },
      {
        name: "netStack: ipv6 sets NET_STACK",
        values: { netStack: "ipv6" },
        check: (_, daemonSet) => expectVariant(daemonSet, { backend: "nft", netStack: "ipv6" }),
      },
      {
        name: "backend and netStack combine (iptables on a dual-stack cluster)",
        values: { backend: "iptables", netStack: "ipv4,ipv6" },
        check: (_, daemonSet) =>
          expectVariant(daemonSet, { backend: "iptables", netStack: "ipv4,ipv6" }),
      },
      {
        name: "logLevel sets --log-level",
        values: { logLevel: "debug" },
        check: (_, daemonSet) => {
          expect(container(daemonSet).args).toContain("--log-level=debug");
          expect(container(daemonSet).args).not.toContain("--log-level=info");
        },
      },
      {
        name: "extraArgs are appended in order",
        values: { extraArgs: ["--detect-local-mode=ClusterCIDR", "--cluster-cidr=10.244.0.0/16"] },
        check: (_, daemonSet) =>
          expect(container(daemonSet).args?.slice(-2)).toStrictEqual([
            "--detect-local-mode=ClusterCIDR",
            "--cluster-cidr=10.244.0.0/16",
          ]),
      },
      {
        name: "extraEnv is appended; nodeOptions replaces NODE_OPTIONS",
        values: {
          extraEnv: [{ name: "TZ", value: "UTC" }],
          nodeOptions: "--max-semi-space-size=4",
        },
        check: (_, daemonSet) => {
          const env = container(daemonSet).env ?? [];
          expect(env.at(-1)).toStrictEqual({ name: "TZ", value: "UTC" });
          expect(env.filter((v) => v.name === "NODE_OPTIONS")).toStrictEqual([
            { name: "NODE_OPTIONS", value: "--max-semi-space-size=4" },
          ]);
        },
      },
      {
        name: "an empty nodeOptions leaves NODE_OPTIONS unset",
        values: { nodeOptions: "" },
        check: (_, daemonSet) =>
          expect(container(daemonSet).env?.map((v) => v.name)).toStrictEqual(["NODE_NAME"]),
      },
      {
        name: "image: repository, tag and pullPolicy; the version label follows the tag",
        values: {
          image: { repository: "registry.example/net/ipvs-node-controller", tag: "0.2.0" },
        },
        check: (objects, daemonSet) => {
          expect(container(daemonSet).image).toBe(
            "registry.example/net/ipvs-node-controller:0.2.0",
          );
          expect(container(daemonSet).imagePullPolicy).toBeUndefined();
          for (const object of objects) {
            expect(object.metadata?.labels?.["app.kubernetes.io/version"]).toBe("0.2.0");
          }
        },
      },
      {
        name: "image.digest pins the image and image.pullPolicy is passed on",
        values: { image: { repository: "ipvs-node-controller", digest, pullPolicy: "Always" } },
        check: (_, daemonSet) => {
          expect(container(daemonSet).image).toBe(`ipvs-node-controller:0.1.0@${digest}`);
          expect(container(daemonSet).imagePullPolicy).toBe("Always");
        },
      },
      {
        name: "imagePullSecrets",
        values: { imagePullSecrets: [{ name: "registry-login" }] },
        check: (_, daemonSet) =>
          expect(podSpec(daemonSet)?.imagePullSecrets).toStrictEqual([{ name: "registry-login" }]),
      },
      {
        name: "resources replace the defaults",
        values: { resources: { requests: { cpu: "50m", memory: "200Mi" } } },
        check: (_, daemonSet) =>
          expect(container(daemonSet).resources).toStrictEqual({
            requests: { cpu: "50m", memory: "200Mi" },
            limits: { memory: "192Mi" },
          }),
      },
      {
        name: "resources: null removes every request and limit",
        values: { resources: null },
        check: (_, daemonSet) => expect(container(daemonSet).resources).toBeUndefined(),
      },
      {
        name: "tolerations replace the catch-all toleration",
        values: {
          tolerations: [
            { key: "dedicated", operator: "Equal", value: "edge", effect: "NoSchedule" },
          ],
        },
        check: (_, daemonSet) =>
          expect(podSpec(daemonSet)?.tolerations).toStrictEqual([
            { key: "dedicated", operator: "Equal", value: "edge", effect: "NoSchedule" },
          ]),
      },
      {
        name: "tolerations: [] tolerates nothing",
        values: { tolerations: [] },
        check: (_, daemonSet) => expect(podSpec(daemonSet)?.tolerations).toBeUndefined(),
      },
      {
        name: "priorityClassName, or none when empty",
        values: { priorityClassName: "" },
        check: (_, daemonSet) => expect(podSpec(daemonSet)?.priorityClassName).toBeUndefined(),
      },
      {
        name: "priorityClassName names another class",
        values: { priorityClassName: "node-infra" },
        check: (_, daemonSet) => expect(podSpec(daemonSet)?.priorityClassName).toBe("node-infra"),
      },
      {
        name: "nodeSelector and affinity",
        values: {
          nodeSelector: { "kubernetes.io/os": "linux", "node.example/proxy-mode": "ipvs" },
          affinity: {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: {
                nodeSelectorTerms: [
                  { matchExpressions: [{ key: "type", operator: "NotIn", values: ["virtual"] }] },
                ],
              },
            },
          },
        },
        check: (_, daemonSet) => {
          expect(podSpec(daemonSet)?.nodeSelector).toStrictEqual({
            "kubernetes.io/os": "linux",
            "node.example/proxy-mode": "ipvs",
          });
          expect(
            podSpec(daemonSet)?.affinity?.nodeAffinity
              ?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms,
          ).toHaveLength(1);
        },
      },
      {
        name: "healthProbe: an IPv6 host in brackets, the port on flag, container port and probes",
        values: { healthProbe: { host: "::", port: 10300 } },
        check: (_, daemonSet) => {
          expect(container(daemonSet).args).toContain("--health-probe-bind-address=[::]:10300");
          expect(container(daemonSet).ports).toStrictEqual([
            { name: "health", containerPort: 10300, protocol: "TCP" },
          ]);
        },
      },
      {
        name: "metrics.bindAddress, 0 disabling metrics",
        values: { metrics: { bindAddress: "0" } },
        check: (_, daemonSet) =>
          expect(container(daemonSet).args).toContain("--metrics-bind-address=0"),
      },
      {
        name: "metrics.serviceMonitor: a ServiceMonitor, the headless Service it selects, and the metrics port",
        values: {
          metrics: {
            bindAddress: "0.0.0.0:10300",
            serviceMonitor: { enabled: true, interval: "15s", labels: { release: "monitoring" } },
          },
        },
        check: (objects, daemonSet) => {
          expect(container(daemonSet).ports).toContainEqual({
            name: "metrics",
            containerPort: 10300,
            protocol: "TCP",
          });
          const service = findObject<KubeObject & { spec: object }>(objects, "Service");
          expect(service.spec).toStrictEqual({
            clusterIP: "None",
            selector: { "app.kubernetes.io/name": NAME },
            ports: [{ name: "metrics", port: 10300, targetPort: "metrics", protocol: "TCP" }],
          });
          const monitor = findObject<KubeObject & { spec: object }>(objects, "ServiceMonitor");
          expect(monitor.metadata?.labels?.release).toBe("monitoring");
          expect(monitor.spec).toStrictEqual({
            selector: { matchLabels: { "app.kubernetes.io/name": NAME } },
            endpoints: [
              {
                port: "metrics",
                interval: "15s",
                relabelings: [
                  { sourceLabels: ["__meta_kubernetes_pod_node_name"], targetLabel: "node" },
                ],
              },
            ],
          });
        },
      },
      {
        name: "metrics.prometheusRule: the alerts of files/alerts.yaml, with alertLabels on each",
        values: {
          metrics: {
            prometheusRule: {
              enabled: true,
              labels: { release: "monitoring" },
              alertLabels: { team: "network" },
            },
          },
        },
        check: (objects) => {
          const rule = findObject<
            KubeObject & { spec: { groups: { rules: { alert: string; labels: object }[] }[] } }
          >(objects, "PrometheusRule");
          expect(rule.metadata?.labels?.release).toBe("monitoring");
          const alerts = rule.spec.groups.flatMap((group) => group.rules);
          expect(alerts.map((alert) => alert.alert)).toStrictEqual([
            "IpvsNodeControllerSyncFailing",
            "IpvsNodeControllerNotProgramming",
            "IpvsNodeControllerWatchFailing",
            "IpvsNodeControllerRulesDrifting",
            "IpvsNodeControllerServicesSkipped",
          ]);
          for (const alert of alerts) expect(alert.labels).toMatchObject({ team: "network" });
          expect(objects.map((o) => o.kind)).not.toContain("ServiceMonitor");
        },
      },
      {
        name: "updateStrategy",
        values: { updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } } },
        check: (_, daemonSet) =>
          expect(daemonSet.spec?.updateStrategy).toStrictEqual({
            type: "RollingUpdate",
            rollingUpdate: { maxUnavailable: 1 },
          }),
      },
      {
        name: "commonLabels go on every object's metadata, not on the selector or the pods",
        values: { commonLabels: { team: "network" } },
        check: (objects, daemonSet) => {
          for (const object of objects) expect(object.metadata?.labels?.team).toBe("network");
          expect(daemonSet.spec?.selector.matchLabels).toStrictEqual({
            "app.kubernetes.io/name": NAME,
          });
          expect(daemonSet.spec?.template.metadata?.labels?.team).toBeUndefined();
        },
      },
      {
        name: "podLabels and podAnnotations go on the pods only",
        values: {
          podLabels: { team: "network" },
          podAnnotations: { "prometheus.io/scrape": "false" },
        },
        check: (objects, daemonSet) => {
          expect(daemonSet.spec?.template.metadata?.labels).toStrictEqual({
            "app.kubernetes.io/name": NAME,
            team: "network",
          });
          expect(daemonSet.spec?.template.metadata?.annotations).toStrictEqual({
            "prometheus.io/scrape": "false",
          });
          expect(daemonSet.spec?.selector.matchLabels).toStrictEqual({
            "app.kubernetes.io/name": NAME,
          });
          for (const object of objects) expect(object.metadata?.labels?.team).toBeUndefined();
        },
      },
      {
        name: "serviceAccount.annotations",
        values: { serviceAccount: { annotations: { "example.com/owner": "network" } } },
        check: (objects) =>
          expect(
            findObject<V1ServiceAccount>(objects, "ServiceAccount").metadata?.annotations,
          ).toStrictEqual({ "example.com/owner": "network" }),
      },
      {
        name: "fullnameOverride renames every object and every reference",
        values: { fullnameOverride: "lb-hairpin" },
        objectName: "lb-hairpin",
        check: (objects, daemonSet) => {
          expect(objects.map((o) => o.metadata?.name)).toStrictEqual(
            objects.map(() => "lb-hairpin"),
          );
          expectReadOnlyRbac(objects, "lb-hairpin");
          expect(podSpec(daemonSet)?.serviceAccountName).toBe("lb-hairpin");
          // The selector keeps the application's name.
          expect(daemonSet.spec?.selector.matchLabels).toStrictEqual({
            "app.kubernetes.io/name": NAME,
          });
        },
      },
    ];

    it.each(cases)("$name", async ({ values, check, objectName }) => {
      const objects = await render(values);
      const daemonSet = daemonSetOf(objects, objectName);
      check(objects, daemonSet);
      // Whatever the values, the pod stays as unprivileged as the kustomize manifests'.
      expectLeastPrivilegeDaemonSet(daemonSet, objectName);
      expectReadOnlyRbac(objects, objectName);
    });

    it("the default rendering differs from every case (each case tests something)", async () => {
      const defaults = JSON.stringify(byKey(await render()));
      for (const { name, values } of cases) {
        expect(JSON.stringify(byKey(await render(values))), name).not.toBe(defaults);
      }
    }, 120_000);
  });

  describe("values it refuses", () => {
    it.each([
      { values: { backend: "ipvs" }, error: /backend/ },
      { values: { netStack: "ipv4+ipv6" }, error: /netStack/ },
      { values: { logLevel: "verbose" }, error: /logLevel/ },
      { values: { healthProbe: { host: "0.0.0.0", port: 70000 } }, error: /port/ },
      { values: { metrics: { bindAddress: "localhost" } }, error: /bindAddress/ },
      { values: { image: { repository: "x", digest: "latest" } }, error: /digest/ },
      // The securityContext is not a value: attempts to widen it are refused, not ignored.
      { values: { securityContext: { privileged: true } }, error: /securityContext/ },
      { values: { tolerance: [] }, error: /tolerance/ },
      {
        values: { extraArgs: ["--backend=iptables"] },
        error: /--backend is set by the value backend/,
      },
      { values: { extraArgs: ["--log-level", "debug"] }, error: /--log-level is set by the value/ },
      { values: { extraArgs: ["--net-stack=ipv6"] }, error: /--net-stack is set by the value/ },
      { values: { extraEnv: [{ name: "NET_STACK", value: "ipv6" }] }, error: /NET_STACK/ },
      // Prometheus could not reach metrics on the node's loopback, nor disabled ones.
      {
        values: { metrics: { bindAddress: "127.0.0.1:10266", serviceMonitor: { enabled: true } } },
        error: /127\.0\.0\.1:10266 is the node's loopback/,
      },
      {
        values: { metrics: { bindAddress: "0", serviceMonitor: { enabled: true } } },
        error: /metrics are disabled/,
      },
      { values: { metrics: { serviceMonitor: { enable: true } } }, error: /enable/ },
    ])("$values", async ({ values, error }) => {
      expect(await refusal(values)).toMatch(error);
    });
  });

  describe.skipIf(!assetsDir)("against a real kube-apiserver", () => {
    let api: TestApiServer;

    beforeAll(async () => {
      api = await startTestApiServer({ assetsDir: assetsDir as string });
    }, 180_000);

    afterAll(async () => {
      await api?.stop();
    }, 30_000);

    const dryRun = (manifest: string) =>
      api.kubectl(["apply", "--dry-run=server", "-f", "-"], { input: manifest, reject: false });

    const NON_DEFAULT_VALUES = {
      backend: "iptables",
      netStack: "ipv4,ipv6",
      logLevel: "debug",
      extraArgs: ["--only-local-traffic-policy"],
      extraEnv: [{ name: "TZ", value: "UTC" }],
      image: { repository: "registry.example/ipvs-node-controller", tag: "0.2.0" },
      imagePullSecrets: [{ name: "registry-login" }],
      healthProbe: { host: "::", port: 10300 },
      resources: { requests: { cpu: "20m", memory: "160Mi" }, limits: { memory: "320Mi" } },
      tolerations: [{ key: "dedicated", operator: "Exists", effect: "NoSchedule" }],
      priorityClassName: "system-cluster-critical",
      nodeSelector: { "kubernetes.io/os": "linux" },
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              { matchExpressions: [{ key: "type", operator: "NotIn", values: ["virtual"] }] },
            ],
          },
        },
      },
      commonLabels: { team: "network" },
      podLabels: { team: "network" },
      podAnnotations: { "example.com/note": "x" },
      serviceAccount: { annotations: { "example.com/owner": "network" } },
    };

    it.each([
      ...OVERLAY_VALUES.map(({ overlay, values }) => ({ name: `${overlay} values`, values })),
      { name: "non-default values", values: NON_DEFAULT_VALUES },
    ])("the rendering with $name passes a server-side dry run", async ({ values }) => {
      const result = await dryRun(await renderText(values));
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stdout).toContain(`daemonset.apps/${NAME} created (server dry run)`);
      expect(result.stdout).toContain(`serviceaccount/${NAME} created (server dry run)`);
      expect(result.stdout).toContain(`clusterrole.rbac.authorization.k8s.io/${NAME} created`);
      expect(result.stdout).toContain(
        `clusterrolebinding.rbac.authorization.k8s.io/${NAME} created`,
      );
    });

    it("a rendering the server rejects fails the dry run (the check can fail)", async () => {
      // Only the API server's validation knows that a rollout needs maxUnavailable or maxSurge.
      const result = await dryRun(
        await renderText({
          updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0 } },
        }),
      );
      expect(result.exitCode).not.toBe(0);
      expect(result.stderr).toContain("maxUnavailable");
    });

    describe("helm install, upgrade and uninstall", () => {
      /**
       * Asserts that the DaemonSet in the cluster is the rendered one: every field the chart
       * set, with the same value, and lists of the same length; the server adds only defaults
       * (maxSurge, terminationMessagePath, fieldRef.apiVersion, ...).
       */
      const expectLiveDaemonSet = (live: V1DaemonSet, rendered: KubeObject[]) => {
        const expected = daemonSetOf(rendered);
        expectLeastPrivilegeDaemonSet(expected);
        expect(live).toMatchObject(expected);
      };

      const KIND_NAMES = [
        `serviceaccount/${NAME}`,
        `clusterrole/${NAME}`,
        `clusterrolebinding/${NAME}`,
        `daemonset/${NAME}`,
      ];

      const getDaemonSet = async () =>
        JSON.parse(
          (await api.kubectl(["get", "daemonset", NAME, "-n", NAMESPACE, "-o", "json"])).stdout,
        ) as V1DaemonSet;

      it("tells how to follow the rollout, and warns outside kube-system about the priority class", async () => {
        // Before the install: Helm 3 checks, even in a client-side dry run, that no object of
        // another release is in the way.
        const notes = async (namespace: string) =>
          (
            await helm.run(
              ["install", RELEASE, CHART_DIR, "--namespace", namespace, "--dry-run=client"],
              { kubeconfig: api.kubeconfigPath },
            )
          ).stdout;
        const inKubeSystem = await notes(NAMESPACE);
        expect(inKubeSystem).toContain(`kubectl -n ${NAMESPACE} rollout status daemonset/${NAME}`);
        expect(inKubeSystem).not.toContain("WARNING");
        expect(await notes("default")).toMatch(
          /WARNING: priority class system-node-critical is admitted only in kube-system/,
        );
      }, 60_000);

      it("installs the default objects, labelled as the release's", async () => {
        const result = await helm.run(["install", RELEASE, CHART_DIR, "--namespace", NAMESPACE], {
          kubeconfig: api.kubeconfigPath,
        });
        expect(result.stdout).toMatch(/STATUS: deployed/);
        const daemonSet = await getDaemonSet();
        expectLiveDaemonSet(daemonSet, await render());
        expectVariant(daemonSet, { backend: "nft" });
        expect(daemonSet.metadata?.labels).toMatchObject(expectedHelmLabels(RELEASE));
        expect(daemonSet.metadata?.annotations?.["meta.helm.sh/release-name"]).toBe(RELEASE);
        for (const kind of ["serviceaccount", "clusterrole", "clusterrolebinding"]) {
          const get = await api.kubectl(["get", kind, NAME, "-n", NAMESPACE, "-o", "name"]);
          expect(get.stdout.trim()).toMatch(new RegExp(`/${NAME}$`));
        }
      }, 60_000);

      it("gives the ServiceAccount read access to Services and Nodes and nothing else", async () => {
        const kubeconfig = await api.writeKubeconfig(
          await api.serviceAccountToken(NAMESPACE, NAME),
        );
        const canI = async (...args: string[]) =>
          (
            await api.kubectl(["auth", "can-i", ...args], { kubeconfig, reject: false })
          ).stdout.trim();
        for (const verb of ["get", "list", "watch"]) {
          expect(await canI(verb, "services", "--all-namespaces"), `${verb} services`).toBe("yes");
          expect(await canI(verb, "nodes"), `${verb} nodes`).toBe("yes");
        }
        for (const [verb, resource] of [
          ["create", "services"],
          ["patch", "services/status"],
          ["delete", "services"],
          ["patch", "nodes"],
          ["get", "secrets"],
          ["list", "configmaps"],
          ["list", "pods"],
          ["create", "leases.coordination.k8s.io"],
          ["create", "events"],
        ] as const) {
          expect(await canI(verb, resource, "--all-namespaces"), `${verb} ${resource}`).toBe("no");
        }
      }, 60_000);

      it("refuses a second release of the chart: the cluster-wide names clash", async () => {
        const result = await helm.run(["install", "second", CHART_DIR, "--namespace", "default"], {
          kubeconfig: api.kubeconfigPath,
          reject: false,
        });
        expect(result.exitCode).not.toBe(0);
        expect(result.stderr).toMatch(/exists and cannot be imported into the current release/);
        const daemonSets = await api.kubectl(["get", "daemonsets", "-A", "-o", "name"]);
        expect(daemonSets.stdout.trim().split("\n")).toStrictEqual([`daemonset.apps/${NAME}`]);
      }, 60_000);

      it("upgrades to the iptables backend in place", async () => {
        const before = await getDaemonSet();
        await helm.run(
          ["upgrade", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--set", "backend=iptables"],
          { kubeconfig: api.kubeconfigPath },
        );
        const after = await getDaemonSet();
        expect(after.metadata?.uid).toBe(before.metadata?.uid);
        expect(after.metadata?.generation).toBeGreaterThan(before.metadata?.generation ?? 0);
        expectLiveDaemonSet(after, await render({ backend: "iptables" }));
        expectVariant(after, { backend: "iptables" });
      }, 60_000);

      it("uninstalls every object", async () => {
        await helm.run(["uninstall", RELEASE, "--namespace", NAMESPACE], {
          kubeconfig: api.kubeconfigPath,
        });
        for (const kind of ["daemonset", "serviceaccount", "clusterrole", "clusterrolebinding"]) {
          const get = await api.kubectl(["get", kind, NAME, "-n", NAMESPACE], { reject: false });
          expect(get.exitCode, `${kind} still there`).not.toBe(0);
          expect(get.stderr).toContain("NotFound");
        }
      }, 60_000);

      it("takes over an installation of deploy/ipvs-node-controller.yaml without recreating it", async () => {
        await api.kubectl(["apply", "-f", RENDERED_MANIFEST]);
        const before = await getDaemonSet();
        // What Helm requires before it adopts objects it did not create (deploy/README.md).
        for (const object of KIND_NAMES) {
          await api.kubectl([
            "annotate",
            object,
            "-n",
            NAMESPACE,
            `meta.helm.sh/release-name=${RELEASE}`,
            `meta.helm.sh/release-namespace=${NAMESPACE}`,
          ]);
          await api.kubectl([
            "label",
            object,
            "-n",
            NAMESPACE,
            "app.kubernetes.io/managed-by=Helm",
          ]);
        }
        // Helm 4 applies server-side: the fields kubectl apply owned must be taken over.
        const takeOver = helm.version.startsWith("v3.") ? [] : ["--force-conflicts"];
        await helm.run(["install", RELEASE, CHART_DIR, "--namespace", NAMESPACE, ...takeOver], {
          kubeconfig: api.kubeconfigPath,
        });
        const after = await getDaemonSet();
        expect(after.metadata?.uid).toBe(before.metadata?.uid);
        // Only the labels changed, so the pods would not even restart.
        expect(after.spec?.template).toStrictEqual(before.spec?.template);
        expectLiveDaemonSet(after, await render());
        await helm.run(["uninstall", RELEASE, "--namespace", NAMESPACE], {
          kubeconfig: api.kubeconfigPath,
        });
      }, 60_000);
    });
  });
});
