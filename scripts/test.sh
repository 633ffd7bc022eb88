#!/usr/bin/env bash
# Runs every check of ipvs-node-controller on a fresh machine: setup, the test API server's
# binaries, lint, typecheck, and all tests (unit, property, kernel in network namespaces, and
# against a real kube-apiserver). Kernel tests need root; with CI=true nothing may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ENVTEST_ASSETS="$(bash scripts/envtest-build.sh | tail -n 1)"
export ENVTEST_ASSETS
bash scripts/helm-build.sh >/dev/null # helm for the chart tests, built before they start
pnpm run --silent lint
pnpm run --silent typecheck
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
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
