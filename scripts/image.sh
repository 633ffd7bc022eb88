#!/usr/bin/env bash
# Builds the ipvs-node-controller image from deploy/Dockerfile for this machine's architecture and
# prints its reference, ipvs-node-controller:<version of the controller package>, on the last line
# of stdout. Everything else goes to stderr.
#
#   - Docker Engine: the one that answers is used. If none does (root only), Debian's docker.io
#     is installed where dockerd is missing, and dockerd is started with the vfs storage driver and
#     without iptables rules or a bridge: it leaves the host's firewall alone, and the tests run
#     their containers with --network none or in another container's network namespace.
#   - BuildKit: `docker buildx` where it exists; otherwise a Docker client older than 23, which
#     has BuildKit built in (Debian 12's docker.io); otherwise Debian's docker-buildx is installed.
#   - The base image named by the Dockerfile (debian:<suite>-slim) is used when present or
#     pullable. Otherwise an equivalent one is built from Debian packages with
#     `debootstrap --variant=minbase`, imported as ipvs-node-controller-base:<suite>, and kept
#     for the next builds (--rebuild-base makes a new one, e.g. for security updates).
#
# Usage: image.sh [--rebuild-base]
# Safe to run again: a warm build reuses every layer whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'image: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

rebuild_base=false
case "${1:-}" in
  "") ;;
  --rebuild-base) rebuild_base=true ;;
  *)
    printf 'usage: %s [--rebuild-base]\n' "$0" >&2
    exit 2
    ;;
esac

readonly dockerfile=deploy/Dockerfile
readonly dockerd_log=/var/log/dockerd.log
version="$(node -p 'require("./packages/controller/package.json").version')"
readonly reference="ipvs-node-controller:${version}"
# The Dockerfile's default base, e.g. debian:trixie-slim, and its Debian suite.
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' "${dockerfile}")"
readonly default_base
suite="${default_base#debian:}"
suite="${suite%-slim}"
readonly suite
readonly fallback_base="ipvs-node-controller-base:${suite}"
started=${SECONDS}

as_root() {
  [[ "$(id -u)" == 0 ]] || die "$1 needs root; run as root or install it first"
}

apt_install() {
  as_root "installing $*"
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
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

# Builds a root file system like debian:<suite>-slim and imports it as ${fallback_base}.
build_base() {
  as_root "debootstrap"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  # Ubuntu lacks Debian's archive keys, which debootstrap checks the suite against.
  [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || apt_install debian-archive-keyring
  local rootfs
  rootfs="$(mktemp -d /var/tmp/ipvs-node-controller-base.XXXXXX)"
  # shellcheck disable=SC2064 # the path is fixed now
  trap "rm -rf '${rootfs}'" EXIT
  log "debootstrap --variant=minbase ${suite} (a few minutes)"
  # DEBIAN_MIRROR, if set, replaces debootstrap's default mirror.
  debootstrap --variant=minbase "${suite}" "${rootfs}" ${DEBIAN_MIRROR:+"${DEBIAN_MIRROR}"} >&2

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

  log "importing ${fallback_base}"
  tar -C "${rootfs}" --numeric-owner -c . |
    docker import \
      --change 'CMD ["bash"]' \
      --change "LABEL org.opencontainers.image.description=\"Debian ${suite}, debootstrap --variant=minbase, slimmed like ${default_base}\"" \
      --message "debootstrap --variant=minbase ${suite}" \
      - "${fallback_base}" >&2
  rm -rf "${rootfs}"
  trap - EXIT
}

# Prints the base image to build on.
resolve_base() {
  if [[ "${rebuild_base}" == true ]]; then
    build_base
    echo "${fallback_base}"
    return 0
  fi
  if image_exists "${default_base}"; then
    echo "${default_base}"
  elif image_exists "${fallback_base}"; then
    echo "${fallback_base}"
  elif timeout 120 docker pull --quiet "${default_base}" >&2; then
    echo "${default_base}"
  else
    log "${default_base} cannot be pulled here; building ${fallback_base} from Debian packages"
    build_base
    echo "${fallback_base}"
  fi
}

ensure_docker
select_builder
base="$(resolve_base)"
# Downloads during the build trust this machine's CA certificates as well (TLS-inspecting proxies).
ca_args=()
for bundle in "${NODE_EXTRA_CA_CERTS:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [[ -n "${bundle}" && -s "${bundle}" ]]; then
    ca_args=(--secret "id=ca-certificates,src=${bundle}")
    break
  fi
done
log "building ${reference} on ${base} with: ${build[*]}"
build_started=${SECONDS}
# Host networking: RUN steps download packages, and the engine may have no bridge.
"${build[@]}" \
  --network host \
  --progress plain \
  --file "${dockerfile}" \
  --build-arg "BASE_IMAGE=${base}" \
  --build-arg "VERSION=${version}" \
  "${ca_args[@]}" \
  --tag "${reference}" \
  . >&2
size="$(docker image inspect --format '{{.Size}}' "${reference}")"
log "built ${reference} ($((size / 1024 / 1024)) MiB) in $((SECONDS - build_started)) s, $((SECONDS - started)) s in all"
echo "${reference}"
