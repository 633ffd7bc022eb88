#!/usr/bin/env bash
# Builds the binaries that the API-server tests run against: kube-apiserver, kubectl and
# kube-proxy from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3; with --node also what a
# node of its own needs (scripts/cluster.sh): kubelet, kube-controller-manager and
# kube-scheduler. None ships on npm or in Debian, so they are compiled from the Go module proxy
# once and cached by version outside the repository:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ipvs-node-controller/envtest/k8s-<ver>-etcd-<ver>/
#
# Only the binaries missing from that directory are built: a cache entry made before kube-proxy
# was added gets kube-proxy and keeps the rest.
#
# The directory is printed on the last line of stdout; progress goes to stderr.
#
# Usage: envtest-build.sh [--node] [--check]
#   --node    the node's binaries as well (kubelet, kube-controller-manager, kube-scheduler).
#   --check   build nothing: print the directory if all binaries are there, else exit 3.
#
# Environment:
#   ENVTEST_ASSETS    a directory that already holds kube-apiserver, etcd, kubectl and kube-proxy
#                     (and with --node the node's binaries); the script only checks them and
#                     prints it (nothing is built).
#   ENVTEST_K8S_VERSION   k8s.io/kubernetes version (default v1.37.2)
#   ENVTEST_ETCD_VERSION  go.etcd.io/etcd/server/v3 version (default v3.6.16)
set -euo pipefail

readonly K8S_VERSION="${ENVTEST_K8S_VERSION:-v1.37.2}"
readonly ETCD_VERSION="${ENVTEST_ETCD_VERSION:-v3.6.16}"
readonly EXIT_NOT_BUILT=3

readonly SCRIPT_NAME=envtest-build
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

BINARIES=(kube-apiserver etcd kubectl kube-proxy)
check_only=false
node_flag=""
for arg in "$@"; do
  case "${arg}" in
    --check) check_only=true ;;
    --node)
      BINARIES+=(kubelet kube-controller-manager kube-scheduler)
      node_flag=" --node"
      ;;
    *)
      printf 'usage: %s [--node] [--check]\n' "$0" >&2
      exit 2
      ;;
  esac
done
readonly BINARIES check_only node_flag

# Succeeds when every binary is present and executable in directory $1.
has_binaries() {
  local dir="$1" bin
  for bin in "${BINARIES[@]}"; do
    [[ -x "${dir}/${bin}" ]] || return 1
  done
}

# Prints the names of the binaries missing from directory $1, one per line.
missing_binaries() {
  local dir="$1" bin
  for bin in "${BINARIES[@]}"; do
    [[ -x "${dir}/${bin}" ]] || printf '%s\n' "${bin}"
  done
}

if [[ -n "${ENVTEST_ASSETS:-}" ]]; then
  for bin in "${BINARIES[@]}"; do
    [[ -x "${ENVTEST_ASSETS}/${bin}" ]] || die "ENVTEST_ASSETS=${ENVTEST_ASSETS} has no executable ${bin}"
  done
  printf '%s\n' "${ENVTEST_ASSETS}"
  exit 0
fi

[[ "${K8S_VERSION}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
  die "ENVTEST_K8S_VERSION must look like v1.MINOR.PATCH, got '${K8S_VERSION}'"
readonly K8S_MINOR="${BASH_REMATCH[1]}"
readonly K8S_PATCH="${BASH_REMATCH[2]}"
# Each k8s.io/kubernetes v1.X.Y release tags its staging modules (k8s.io/api, ...) as v0.X.Y.
readonly STAGING_VERSION="v0.${K8S_MINOR}.${K8S_PATCH}"
[[ "${ETCD_VERSION}" =~ ^v3\.[0-9]+\.[0-9]+$ ]] ||
  die "ENVTEST_ETCD_VERSION must look like v3.MINOR.PATCH, got '${ETCD_VERSION}'"

readonly CACHE_ROOT="${XDG_CACHE_HOME:-${HOME}/.cache}/ipvs-node-controller/envtest"
readonly ASSETS_DIR="${CACHE_ROOT}/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"

if has_binaries "${ASSETS_DIR}"; then
  printf '%s\n' "${ASSETS_DIR}"
  exit 0
fi
if [[ "${check_only}" == true ]]; then
  log "not built yet: $(missing_binaries "${ASSETS_DIR}" | paste -sd ' ') in ${ASSETS_DIR}" \
    "(run scripts/envtest-build.sh${node_flag} without --check)"
  exit "${EXIT_NOT_BUILT}"
fi

lock_cache "${CACHE_ROOT}"
if has_binaries "${ASSETS_DIR}"; then
  printf '%s\n' "${ASSETS_DIR}"
  exit 0
fi
start_go_build "install Go or set ENVTEST_ASSETS"

# The k8s.io/kubernetes commands to build: those missing from the cache entry.
kubernetes_targets=()
build_etcd_too=false
while IFS= read -r bin; do
  case "${bin}" in
    etcd) build_etcd_too=true ;;
    *) kubernetes_targets+=("${bin}") ;;
  esac
done < <(missing_binaries "${ASSETS_DIR}")

build_kubernetes() {
  local mod="${WORK_DIR}/kubernetes"
  mkdir -p "${mod}"
  cd "${mod}"
  go mod init envtest.invalid/kubernetes >/dev/null 2>&1

  log "downloading k8s.io/kubernetes@${K8S_VERSION}"
  local upstream_gomod
  upstream_gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "${upstream_gomod}" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION}"

  # k8s.io/kubernetes points its staging modules at ./staging/src/..., which a dependent module
  # cannot follow; point each of them at its published release instead.
  local staging_modules
  staging_modules="$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._/-]*\) => \./staging/.*#\1#p' "${upstream_gomod}")"
  [[ -n "${staging_modules}" ]] || die "found no staging modules in k8s.io/kubernetes' go.mod"
  local module edits=()
  while IFS= read -r module; do
    edits+=("-replace=${module}=${module}@${STAGING_VERSION}")
  done <<<"${staging_modules}"
  go mod edit "${edits[@]}" "-require=k8s.io/kubernetes@${K8S_VERSION}"

  local packages=() bin
  for bin in "${kubernetes_targets[@]}"; do
    packages+=("k8s.io/kubernetes/cmd/${bin}")
  done
  log "resolving dependencies of ${kubernetes_targets[*]}"
  go get "${packages[@]/%/@${K8S_VERSION}}" >&2

  # The same variables that Kubernetes' own build stamps (hack/lib/version.sh), so that
  # `kubectl version`, /version and `kube-proxy --version` report the real release.
  local build_date ldflags="-s -w" pkg
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
    ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${K8S_MINOR}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done

  log "building ${kubernetes_targets[*]} ${K8S_VERSION} (slow on a small machine)"
  go build -trimpath -ldflags "${ldflags}" -o "${WORK_DIR}/out/" "${packages[@]}"
}

build_etcd() {
  local mod="${WORK_DIR}/etcd"
  mkdir -p "${mod}"
  cd "${mod}"
  go mod init envtest.invalid/etcd >/dev/null 2>&1
  log "resolving go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  log "building etcd ${ETCD_VERSION}"
  go build -trimpath -ldflags "-s -w" -o "${WORK_DIR}/out/etcd" go.etcd.io/etcd/server/v3
}

mkdir -p "${WORK_DIR}/out"
if [[ "${build_etcd_too}" == true ]]; then build_etcd; fi
if ((${#kubernetes_targets[@]} > 0)); then build_kubernetes; fi

built=()
while IFS= read -r bin; do
  [[ -x "${WORK_DIR}/out/${bin}" ]] || die "the build produced no ${bin}"
  built+=("${bin}")
done < <(missing_binaries "${ASSETS_DIR}")

# An interrupted completion leaves an entry that has_binaries rejects and the next run completes.
publish_into "${WORK_DIR}/out" "${ASSETS_DIR}" "${CACHE_ROOT}"

log "built ${built[*]} in $((SECONDS - BUILD_STARTED_AT)) s"
printf '%s\n' "${ASSETS_DIR}"
