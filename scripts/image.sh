#!/usr/bin/env bash
# Builds the ipvs-node-controller image from deploy/Dockerfile, for this machine's architecture or
# the ones asked for, and prints the reference of each image built, one a line, on stdout:
# ipvs-node-controller:<version of the controller package> for this machine's architecture,
# ipvs-node-controller:<version>-<arch> for another (Docker's image store holds one architecture
# per tag). With --push, the last line is the image index pushed. Everything else goes to stderr.
#
#   - Docker Engine: the one that answers is used. If none does (root only), Debian's docker.io
#     is installed where dockerd is missing, and dockerd is started with the vfs storage driver and
#     without iptables rules or a bridge: it leaves the host's firewall alone, and the tests run
#     their containers with --network none or in another container's network namespace.
#   - BuildKit: `docker buildx` where it exists; otherwise a Docker client older than 23, which
#     has BuildKit built in (Debian 12's docker.io); otherwise Debian's docker-buildx is installed.
#   - The base image named by the Dockerfile (debian:<suite>-slim) is used for this machine's
#     architecture when present or pullable. Otherwise, and always for another architecture, an
#     equivalent one is built from Debian packages with `debootstrap --variant=minbase` and kept
#     as ipvs-node-controller-base:<suite>[-<arch>] for the next builds (--rebuild-base makes a
#     new one, e.g. for security updates).
#   - Another architecture runs under QEMU's user-mode emulation (scripts/emulation.sh: Debian's
#     qemu-user-static through binfmt_misc), enabled for the build and disabled again afterwards
#     if it was not enabled before: the base's second debootstrap stage and the runtime stage's
#     package installation run emulated. The build stage always runs on this machine's own
#     architecture, and its output is copied into each architecture's image.
#   - --push REGISTRY/NAME pushes each architecture's image as REGISTRY/NAME:<version>-<arch>,
#     then one image index REGISTRY/NAME:<version> listing them, and prints it with its digest:
#     REGISTRY/NAME:<version>@sha256:... Log in first (`docker login REGISTRY`) where the registry
#     wants it; a registry on a loopback address may speak plain HTTP.
#
# Usage: image.sh [--rebuild-base] [--platform linux/ARCH[,linux/ARCH]] [--push REGISTRY/NAME]
#   ARCH: amd64 or arm64. Default: this machine's architecture.
# Safe to run again: a warm build reuses every layer whose inputs did not change.
set -euo pipefail
shopt -s inherit_errexit # errors inside $(...) stop the script too
cd "$(dirname "$0")/.."

readonly SCRIPT_NAME=image
# shellcheck source=lib/common.sh
source scripts/lib/common.sh
usage() {
  printf 'usage: %s [--rebuild-base] [--platform linux/ARCH[,linux/ARCH]] [--push REGISTRY/NAME]\n' \
    "$0" >&2
  exit 2
}

rebuild_base=false
platform_list=""
push_to=""
while (($# > 0)); do
  case "$1" in
    --rebuild-base) rebuild_base=true ;;
    --platform | --push)
      (($# >= 2)) || usage
      if [[ "$1" == --platform ]]; then platform_list="$2"; else push_to="$2"; fi
      shift
      ;;
    --platform=*) platform_list="${1#*=}" ;;
    --push=*) push_to="${1#*=}" ;;
    *) usage ;;
  esac
  shift
done
# REGISTRY/NAME: a registry host (with a port, maybe) and a repository, without tag or digest.
if [[ -n "${push_to}" ]] && [[ "${push_to}" != */* || "${push_to##*/}" == *[:@]* ]]; then
  die "--push wants REGISTRY/NAME without a tag or digest, got '${push_to}'"
fi

readonly dockerfile=deploy/Dockerfile
readonly dockerd_log=/var/log/dockerd.log
version="$(node -p 'require("./packages/controller/package.json").version')"
# The Dockerfile's default base, e.g. debian:trixie-slim, and its Debian suite.
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' "${dockerfile}")"
readonly default_base
suite="${default_base#debian:}"
suite="${suite%-slim}"
readonly suite
started=${SECONDS}

# Work to undo when the script ends, however it ends; the last registered runs first.
on_exit=()
run_on_exit() {
  local i
  for ((i = ${#on_exit[@]} - 1; i >= 0; i--)); do eval "${on_exit[i]}" || true; done
}
trap run_on_exit EXIT

as_root() {
  [[ "$(id -u)" == 0 ]] || die "$1 needs root; run as root or install it first"
}

docker_ready() { docker info >/dev/null 2>&1; }

ensure_docker() {
  docker_ready && return 0
  as_root "starting Docker Engine"
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io
  fi
  # A package manager that starts services may have started it already.
  docker_ready && return 0
  # One start at a time, should two builds begin together.
  mkdir -p /run/lock
  exec {lock}>/run/lock/ipvs-node-controller-dockerd.lock
  flock "${lock}"
  if ! docker_ready; then
    log "starting dockerd (vfs, no iptables, no bridge), log in ${dockerd_log}"
    # Without the lock's descriptor: the daemon must not hold the lock for its whole life.
    setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
      </dev/null >>"${dockerd_log}" 2>&1 {lock}>&- &
    local deadline=$((SECONDS + 60))
    until docker_ready; do
      ((SECONDS < deadline)) || die "dockerd did not answer within 60 s; see ${dockerd_log}"
      sleep 0.5
    done
  fi
  exec {lock}>&-
}

# Sets `build` to a command line that builds with BuildKit and loads the result into the engine.
select_builder() {
  if docker buildx version >/dev/null 2>&1; then
    build=(docker buildx build --load)
    return 0
  fi
  local client major
  while read -r client; do
    major="$("${client}" --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')"
    if [[ -n "${major}" ]] && ((major < 23)); then
      build=(env DOCKER_BUILDKIT=1 "${client}" build)
      return 0
    fi
  done < <(type -ap docker)
  if apt-cache show docker-buildx >/dev/null 2>&1; then
    apt_install docker-buildx
    docker buildx version >/dev/null 2>&1 && build=(docker buildx build --load) && return 0
  fi
  die "no BuildKit: install docker buildx (Debian: docker-buildx)"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Where ARCH's base is kept: the plain name for this machine's architecture.
base_of() {
  if [[ "$1" == "${native_arch}" ]]; then
    echo "ipvs-node-controller-base:${suite}"
  else
    echo "ipvs-node-controller-base:${suite}-$1"
  fi
}

# Where ARCH's image is kept: the plain name (the tag the manifests use) for this machine's.
reference_of() {
  if [[ "$1" == "${native_arch}" ]]; then
    echo "ipvs-node-controller:${version}"
  else
    echo "ipvs-node-controller:${version}-$1"
  fi
}

# Builds a root file system like debian:<suite>-slim for architecture $1 and keeps it as
# $(base_of $1). Another architecture's is unpacked here and configured under emulation.
build_base() {
  local arch="$1" name
  name="$(base_of "${arch}")"
  as_root "debootstrap"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  # Ubuntu lacks Debian's archive keys, which debootstrap checks the suite against.
  [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || apt_install debian-archive-keyring
  local rootfs
  rootfs="$(mktemp -d /var/tmp/ipvs-node-controller-base.XXXXXX)"
  # debootstrap mounts /proc and /sys inside the new root: never follow them when removing it.
  on_exit+=("remove_tree '${rootfs}'")
  # DEBIAN_MIRROR, if set, replaces debootstrap's default mirror.
  if [[ "${arch}" == "${native_arch}" ]]; then
    log "debootstrap --variant=minbase ${suite} (a few minutes)"
    debootstrap --variant=minbase "${suite}" "${rootfs}" ${DEBIAN_MIRROR:+"${DEBIAN_MIRROR}"} >&2
  else
    log "debootstrap --arch ${arch} --foreign --variant=minbase ${suite}, then its second stage emulated"
    debootstrap --arch "${arch}" --foreign --variant=minbase "${suite}" "${rootfs}" \
      ${DEBIAN_MIRROR:+"${DEBIAN_MIRROR}"} >&2
    chroot "${rootfs}" /debootstrap/debootstrap --second-stage >&2
  fi

  # As the official slim images: no documentation, manual pages or translations, now or later.
  cat >"${rootfs}/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "${rootfs}/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "${rootfs}/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "${rootfs}"/usr/share/{man,groff,info,lintian,linda}/*
  find "${rootfs}/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  cat >"${rootfs}/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'Acquire::Languages "none";\n' >"${rootfs}/etc/apt/apt.conf.d/docker-no-languages"
  printf 'Apt::AutoRemove::SuggestsImportant "false";\n' \
    >"${rootfs}/etc/apt/apt.conf.d/docker-autoremove-suggests"

  # The suite with its updates and security suites, from the mirror debootstrap used.
  local mirror
  mirror="$(awk '$1 == "deb" { print $2; exit }' "${rootfs}/etc/apt/sources.list")"
  [[ -n "${mirror}" ]] || die "no mirror in the new root's sources.list"
  cat >"${rootfs}/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -f "${rootfs}/etc/apt/sources.list"

  # Nothing of the build machine or of the bootstrap stays: the engine provides resolv.conf,
  # hostname and hosts to each container.
  rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/* "${rootfs}"/var/log/* \
    "${rootfs}"/var/cache/debconf/*-old "${rootfs}"/var/lib/dpkg/*-old \
    "${rootfs}/etc/resolv.conf" "${rootfs}/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"${rootfs}/etc/hosts"
  : >"${rootfs}/etc/machine-id"

  # An image of ARCH's platform from the tree: `docker import` would label it with the engine's.
  log "importing ${name} (linux/${arch})"
  local context
  context="$(mktemp -d /var/tmp/ipvs-node-controller-base-context.XXXXXX)"
  on_exit+=("rm -rf '${context}'")
  tar -C "${rootfs}" --numeric-owner -cf "${context}/rootfs.tar" .
  remove_tree "${rootfs}"
  "${build[@]}" --platform "linux/${arch}" --progress plain --tag "${name}" --file - "${context}" \
    >&2 <<EOF
FROM scratch
ADD rootfs.tar /
LABEL org.opencontainers.image.description="Debian ${suite}, debootstrap --variant=minbase, slimmed like ${default_base}"
CMD ["bash"]
EOF
  rm -rf "${context}"
}

# Removes a directory tree, first unmounting whatever is mounted inside it.
remove_tree() {
  [[ -d "$1" ]] || return 0
  findmnt -rn -o TARGET | grep -F "$1/" | sort -r | xargs -r -n 1 umount -l || true
  rm -rf --one-file-system "$1"
}

# Sets base_image to the base to build ARCH ($1) on.
resolve_base() {
  local arch="$1" name lock
  name="$(base_of "${arch}")"
  if [[ "${rebuild_base}" == false ]]; then
    if [[ "${arch}" == "${native_arch}" ]] && image_exists "${default_base}"; then
      base_image="${default_base}"
      return 0
    fi
    if image_exists "${name}"; then
      base_image="${name}"
      return 0
    fi
    if [[ "${arch}" == "${native_arch}" ]] &&
      timeout 120 docker pull --quiet "${default_base}" >&2; then
      base_image="${default_base}"
      return 0
    fi
  fi
  # One build of a base at a time: tests may start several builds together.
  mkdir -p /run/lock
  exec {lock}>"/run/lock/ipvs-node-controller-base-${arch}.lock"
  flock "${lock}"
  if [[ "${rebuild_base}" == true ]] || ! image_exists "${name}"; then
    if [[ "${arch}" == "${native_arch}" ]]; then
      log "${default_base} cannot be pulled here; building ${name} from Debian packages"
    fi
    build_base "${arch}"
  fi
  exec {lock}>&-
  base_image="${name}"
}

# Builds deploy/Dockerfile for ARCH ($1) on base $2, its build stage on this machine's base $3.
build_image() {
  local arch="$1" base="$2" build_base_image="$3" reference size build_started
  reference="$(reference_of "${arch}")"
  log "building ${reference} (linux/${arch}) on ${base} with: ${build[*]}"
  build_started=${SECONDS}
  # Host networking: RUN steps download packages, and the engine may have no bridge.
  "${build[@]}" \
    --platform "linux/${arch}" \
    --network host \
    --progress plain \
    --file "${dockerfile}" \
    --build-arg "BASE_IMAGE=${base}" \
    --build-arg "BUILD_BASE_IMAGE=${build_base_image}" \
    --build-arg "VERSION=${version}" \
    "${ca_args[@]}" \
    --tag "${reference}" \
    . >&2
  [[ "$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "${reference}")" == "linux/${arch}" ]] ||
    die "${reference} is not a linux/${arch} image"
  size="$(docker image inspect --format '{{.Size}}' "${reference}")"
  log "built ${reference} ($((size / 1024 / 1024)) MiB) in $((SECONDS - build_started)) s"
}

# Pushes each architecture's image and one index listing them; prints the index's reference.
push_index() {
  local index="${push_to}:${version}" arch target digest
  local insecure=() targets=()
  # A registry on a loopback address may speak plain HTTP, as the engine allows for 127.0.0.0/8.
  case "${push_to%%/*}" in
    127.* | localhost | localhost:* | "[::1]"*) insecure=(--insecure) ;;
  esac
  for arch in "${archs[@]}"; do
    target="${push_to}:${version}-${arch}"
    docker tag "$(reference_of "${arch}")" "${target}"
    log "pushing ${target}"
    docker push "${target}" >&2
    docker rmi "${target}" >/dev/null
    targets+=("${target}")
  done
  # A list left by an interrupted run would refuse the new one.
  docker manifest rm "${index}" >/dev/null 2>&1 || true
  docker manifest create "${insecure[@]}" "${index}" "${targets[@]}" >&2
  digest="$(docker manifest push --purge "${insecure[@]}" "${index}" | tail -n 1)"
  [[ "${digest}" =~ ^sha256:[0-9a-f]{64}$ ]] ||
    die "docker manifest push printed no digest: ${digest}"
  log "pushed ${index}@${digest}"
  echo "${index}@${digest}"
}

ensure_docker
select_builder
native_arch="$(docker version --format '{{.Server.Arch}}')"
readonly native_arch
archs=()
IFS=, read -r -a platforms <<<"${platform_list:-linux/${native_arch}}"
for platform in "${platforms[@]}"; do
  case "${platform}" in
    linux/amd64 | linux/arm64) ;;
    *) die "unsupported platform '${platform}' (linux/amd64, linux/arm64)" ;;
  esac
  [[ " ${archs[*]} " == *" ${platform#linux/} "* ]] || archs+=("${platform#linux/}")
done
for arch in "${archs[@]}"; do
  if [[ "${arch}" != "${native_arch}" ]]; then
    as_root "emulating linux/${arch}"
    bash scripts/emulation.sh acquire "$$" "${arch}"
    on_exit+=("bash scripts/emulation.sh release $$")
  fi
done

# Downloads during the build trust this machine's CA certificates as well (TLS-inspecting proxies).
ca_args=()
for bundle in "${NODE_EXTRA_CA_CERTS:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [[ -n "${bundle}" && -s "${bundle}" ]]; then
    ca_args=(--secret "id=ca-certificates,src=${bundle}")
    break
  fi
done

resolve_base "${native_arch}"
native_base="${base_image}"
for arch in "${archs[@]}"; do
  resolve_base "${arch}"
  build_image "${arch}" "${base_image}" "${native_base}"
done
log "$((SECONDS - started)) s in all"
for arch in "${archs[@]}"; do reference_of "${arch}"; done
if [[ -n "${push_to}" ]]; then push_index; fi
