#!/usr/bin/env bash
# Builds the `helm` binary that the chart's tests run (lint, template, and the rendering that is
# dry-run against the test API server). Helm is neither on npm nor in Debian at a current
# version, so it is compiled from the Go module proxy once and cached by version outside the
# repository:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ipvs-node-controller/helm/<version>/helm
#
# The binary's path is printed on the last line of stdout; progress goes to stderr.
#
# Usage: helm-build.sh [--check]
#   --check   build nothing: print the path if the binary is there, else exit 3.
#
# Environment:
#   HELM_BINARY         an existing helm binary; the script only checks it and prints it.
#   HELM_BUILD_VERSION  helm.sh/helm release to build (default v4.3.2; a v3.x.y builds Helm 3).
set -euo pipefail

readonly HELM_VERSION="${HELM_BUILD_VERSION:-v4.3.2}"
readonly EXIT_NOT_BUILT=3

check_only=false
case "${1:-}" in
  "") ;;
  --check) check_only=true ;;
  *)
    printf 'usage: %s [--check]\n' "$0" >&2
    exit 2
    ;;
esac

log() { printf 'helm-build: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

if [[ -n "${HELM_BINARY:-}" ]]; then
  [[ -x "${HELM_BINARY}" ]] || die "HELM_BINARY=${HELM_BINARY} is not an executable file"
  printf '%s\n' "${HELM_BINARY}"
  exit 0
fi

[[ "${HELM_VERSION}" =~ ^v([34])\.[0-9]+\.[0-9]+$ ]] ||
  die "HELM_BUILD_VERSION must look like v3.MINOR.PATCH or v4.MINOR.PATCH, got '${HELM_VERSION}'"
# Each major version of Helm is its own Go module: helm.sh/helm/v3, helm.sh/helm/v4.
readonly MODULE="helm.sh/helm/v${BASH_REMATCH[1]}"

readonly CACHE_ROOT="${XDG_CACHE_HOME:-${HOME}/.cache}/ipvs-node-controller/helm"
readonly HELM_DIR="${CACHE_ROOT}/${HELM_VERSION}"
readonly HELM_BIN="${HELM_DIR}/helm"

if [[ -x "${HELM_BIN}" ]]; then
  printf '%s\n' "${HELM_BIN}"
  exit 0
fi
if [[ "${check_only}" == true ]]; then
  log "not built yet: ${HELM_BIN} (run scripts/helm-build.sh without --check)"
  exit "${EXIT_NOT_BUILT}"
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go or set HELM_BINARY"

mkdir -p "${CACHE_ROOT}"
# Test files start in parallel and may all ask for the binary: one builds, the others wait.
exec 9>"${CACHE_ROOT}/.build.lock"
flock 9
if [[ -x "${HELM_BIN}" ]]; then
  printf '%s\n' "${HELM_BIN}"
  exit 0
fi

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/helm-build.XXXXXX")"
readonly WORK_DIR
trap 'rm -rf "${WORK_DIR}"' EXIT

# Never fetch another Go toolchain: a go.mod that needs a newer one should fail loudly.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
readonly STARTED_AT="${SECONDS}"

# A throwaway module that requires Helm: Helm's go.mod has no replace directives, so its
# dependencies resolve exactly as in its own build.
cd "${WORK_DIR}"
go mod init helm-build.invalid/helm >/dev/null 2>&1
log "resolving ${MODULE}/cmd/helm@${HELM_VERSION}"
go get "${MODULE}/cmd/helm@${HELM_VERSION}" >&2

# What Helm's Makefile stamps for a tagged release, so that `helm version` reports it (an
# unstamped build calls itself "v4.3" or "v3.22").
ldflags="-s -w"
ldflags+=" -X ${MODULE}/internal/version.version=${HELM_VERSION}"
ldflags+=" -X ${MODULE}/internal/version.metadata="
ldflags+=" -X ${MODULE}/internal/version.gitTreeState=clean"
log "building helm ${HELM_VERSION}"
go build -trimpath -ldflags "${ldflags}" -o "${WORK_DIR}/out/helm" "${MODULE}/cmd/helm"

reported="$("${WORK_DIR}/out/helm" version --template '{{ .Version }}')"
[[ "${reported}" == "${HELM_VERSION}" ]] ||
  die "the built helm reports version '${reported}', expected '${HELM_VERSION}'"

# Publish the finished binary in one rename, so an interrupted build never leaves a broken
# cache entry.
staging_dir="$(mktemp -d "${CACHE_ROOT}/.incoming.XXXXXX")"
mv "${WORK_DIR}/out/helm" "${staging_dir}/helm"
chmod 755 "${staging_dir}"
rm -rf "${HELM_DIR}"
mv "${staging_dir}" "${HELM_DIR}"

log "built in $((SECONDS - STARTED_AT)) s"
printf '%s\n' "${HELM_BIN}"
