#!/usr/bin/env bash
# Runs every check of ipvs-node-controller on a fresh machine: setup, the test API server's
# binaries, lint, typecheck, and all tests (unit, property, kernel in network namespaces, against
# a real kube-apiserver, and on a real node of scripts/cluster.sh). Kernel tests need root; with
# CI=true nothing may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The images take minutes to build cold, arm64 mostly under emulation: start them now, beside the
# builds below and the first test files (vitest runs one file at a time on two cores). The image
# suites build through scripts/image.sh as well and wait for, or reuse, what this one built.
prebuild_log="$(mktemp)"
bash scripts/image.sh --platform linux/amd64,linux/arm64 >"${prebuild_log}" 2>&1 &
prebuild=$!
report="$(mktemp)"
trap 'kill "${prebuild}" 2>/dev/null || true; rm -f "${report}" "${prebuild_log}"' EXIT
# --node: the local cluster's kubelet, kube-controller-manager and kube-scheduler as well.
ENVTEST_ASSETS="$(bash scripts/envtest-build.sh --node | tail -n 1)"
export ENVTEST_ASSETS
bash scripts/helm-build.sh >/dev/null # helm for the chart tests, built before they start
pnpm run --silent lint
pnpm run --silent typecheck
status=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?
# The summary; under CI=true a skipped test fails the run: a suite that could not run proves nothing.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  if (skipped > 0 && process.env.CI === "true") {
    for (const file of r.testResults) {
      for (const test of file.assertionResults) {
        if (test.status !== "passed" && test.status !== "failed") {
          console.log(`  ${test.status}: ${file.name.replace(`${process.cwd()}/`, "")} > ${test.fullName}`);
        }
      }
    }
    console.log("CI=true: no test may be skipped");
    process.exit(1);
  }
' "$report" || status=1
exit "$status"
