/**
 * The CustomResourceDefinitions of the Prometheus Operator's ServiceMonitor and PrometheusRule,
 * so that a test API server validates the chart's monitoring objects against their real schema.
 * They ship in the operator's Go module (example/prometheus-operator-crd), which the Go module
 * proxy serves and Go's module cache keeps.
 *
 * @example
 * ```ts
 * for (const file of await prometheusOperatorCrds()) await api.kubectl(["apply", "--server-side", "-f", file]);
 * ```
 */
import { join } from "node:path";
import { execa } from "execa";

/** The release whose CRDs are used: monitoring.coreos.com/v1. */
export const PROMETHEUS_OPERATOR_MODULE =
  "github.com/prometheus-operator/prometheus-operator@v0.85.0";

/** Paths of the ServiceMonitor and PrometheusRule CRDs, downloaded with `go mod download`. */
export async function prometheusOperatorCrds(): Promise<string[]> {
  const download = await execa("go", ["mod", "download", "-json", PROMETHEUS_OPERATOR_MODULE], {
    reject: false,
    stdin: "ignore",
    env: { GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local" },
  });
  if (download.exitCode !== 0) {
    throw new Error(`go mod download ${PROMETHEUS_OPERATOR_MODULE} failed: ${download.stderr}`);
  }
  const { Dir: dir } = JSON.parse(download.stdout) as { Dir: string };
  return ["servicemonitors", "prometheusrules"].map((kind) =>
    join(dir, "example", "prometheus-operator-crd", `monitoring.coreos.com_${kind}.yaml`),
  );
}
