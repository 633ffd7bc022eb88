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

readonly SCRIPT_NAME=helm-build
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
parse_check_flag "$@"

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

lock_cache "${CACHE_ROOT}"
if [[ -x "${HELM_BIN}" ]]; then
  printf '%s\n' "${HELM_BIN}"
  exit 0
fi
start_go_build "install Go or set HELM_BINARY"

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

publish_into "${WORK_DIR}/out" "${HELM_DIR}" "${CACHE_ROOT}"

log "built in $((SECONDS - BUILD_STARTED_AT)) s"
printf '%s\n' "${HELM_BIN}"
