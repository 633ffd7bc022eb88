# Shared by the repository's scripts. Source it after `set -euo pipefail` and after setting
# SCRIPT_NAME.

# Progress and errors go to stderr, prefixed with the script's name; stdout carries the result.
log() { printf '%s: %s\n' "${SCRIPT_NAME}" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Installs Debian packages (root only). Explicit checks rather than errexit: callers write
# `command -v x || apt_install x`, where bash ignores errexit. apt waits for the package database
# while another apt or dpkg holds it.
apt_install() {
  [[ "$(id -u)" == 0 ]] || die "installing $* needs root; run as root or install it first"
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  local wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${wait[@]}" update -qq >&2 || die "apt-get update failed"
  apt-get "${wait[@]}" install -y -qq --no-install-recommends "$@" >/dev/null ||
    die "installing $* failed"
}

# Sets check_only=true for `--check`, false for no argument; anything else is a usage error.
parse_check_flag() {
  check_only=false
  case "${1:-}" in
    "") ;;
    --check) check_only=true ;;
    *)
      printf 'usage: %s [--check]\n' "$0" >&2
      exit 2
      ;;
  esac
}

# Serialises builds into cache directory $1: test files start in parallel and may all ask for a
# binary; one builds, the others wait (file descriptor 9 holds the lock until the script exits).
lock_cache() {
  mkdir -p "$1"
  exec 9>"$1/.build.lock"
  flock 9
}

# Creates WORK_DIR, removed when the script exits, and prepares Go for a reproducible build that
# never fetches another toolchain (a go.mod that needs a newer one should fail loudly).
start_go_build() {
  command -v go >/dev/null 2>&1 || die "go is not on PATH; $1"
  WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/${SCRIPT_NAME}.XXXXXX")"
  readonly WORK_DIR
  trap 'rm -rf "${WORK_DIR}"' EXIT
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
  BUILD_STARTED_AT="${SECONDS}"
}

# Moves every file of directory $1 into cache directory $2. A new entry is published in one rename
# of a staging directory, so an interrupted build never leaves a half-filled one; an existing entry
# is completed file by file, each rename atomic (same file system), so a reader sees a binary whole
# or not at all. $3 is the cache root the staging directory lives in.
publish_into() {
  local source="$1" target="$2" root="$3" staging file name
  if [[ -d "${target}" ]]; then
    for file in "${source}"/*; do
      name="$(basename "${file}")"
      cp "${file}" "${target}/.incoming.${name}"
      chmod 755 "${target}/.incoming.${name}"
      mv -f "${target}/.incoming.${name}" "${target}/${name}"
    done
    return
  fi
  staging="$(mktemp -d "${root}/.incoming.XXXXXX")"
  mv "${source}/"* "${staging}/"
  chmod 755 "${staging}"
  mv "${staging}" "${target}"
}
