#!/usr/bin/env bash
# Runs every check of ipvs-node-controller on a fresh machine: setup, the test API server's
# binaries, lint, typecheck, and all tests (unit, property, kernel in network namespaces, against
# a real kube-apiserver, and on a real node of scripts/cluster.sh). Kernel tests need root; with
# CI=true nothing may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# --node: the local cluster's kubelet, kube-controller-manager and kube-scheduler as well.
ENVTEST_ASSETS="$(bash scripts/envtest-build.sh --node | tail -n 1)"
export ENVTEST_ASSETS
bash scripts/helm-build.sh >/dev/null # helm for the chart tests, built before they start
pnpm run --silent lint
pnpm run --silent typecheck
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
status=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' "$report" || true
exit "$status"
