#!/usr/bin/env bash
# Runs programs of another CPU architecture on this machine through QEMU's user-mode emulation,
# registered with the kernel's binfmt_misc (Debian's qemu-user-static and binfmt-support), for as
# long as someone needs it, and leaves the machine as it was afterwards.
#
#   emulation.sh acquire HOLDER ARCH   # ARCH: a Debian architecture, e.g. arm64
#   emulation.sh release HOLDER
#   emulation.sh status                # what is registered, and who holds it
#
# HOLDER is the process id of whoever needs emulation (a build script, a test process), with a
# suffix of its own choosing where one process holds it more than once (PID-TAG). acquire
# mounts /proc/sys/fs/binfmt_misc and enables the architecture's emulator where they are not yet,
# and installs the two packages where they are missing (root only). release forgets the holder;
# once no live holder remains, what acquire changed is undone: an emulator it enabled is disabled
# and a binfmt_misc it mounted is unmounted. What was there before is left as it was. Holders that
# died without releasing are forgotten at the next acquire or release.
#
# The emulators are registered with the "fix binary" flag: the kernel opens the interpreter when
# it is enabled, so programs of the other architecture also run inside containers and chroots.
set -euo pipefail
shopt -s inherit_errexit

readonly SCRIPT_NAME=emulation
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
usage() {
  printf 'usage: %s acquire HOLDER ARCH | release HOLDER | status\n' "$0" >&2
  exit 2
}

readonly BINFMT=/proc/sys/fs/binfmt_misc
readonly STATE=/run/ipvs-node-controller/emulation

# The binfmt entry (named after QEMU's program) of a Debian architecture.
entry_of() {
  case "$1" in
    arm64) echo qemu-aarch64 ;;
    amd64) echo qemu-x86_64 ;;
    *) die "no emulator known for architecture '$1' (known: arm64, amd64)" ;;
  esac
}

mounted() { mountpoint -q "${BINFMT}"; }
enabled() { [[ -r "${BINFMT}/$1" ]] && [[ "$(head -n 1 "${BINFMT}/$1")" == enabled ]]; }

# Forgets holders whose process is gone.
prune() {
  local file name
  for file in "${STATE}"/holders/*; do
    [[ -e "${file}" ]] || continue
    name="$(basename "${file}")"
    kill -0 "${name%%-*}" 2>/dev/null || rm -f "${file}"
  done
}

install_packages() {
  local missing=()
  [[ -e /usr/share/binfmts/"$1" ]] || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

acquire() {
  local holder="$1" entry
  entry="$(entry_of "$2")"
  [[ "${holder}" =~ ^[0-9]+(-[A-Za-z0-9]+)?$ ]] || die "a holder is PID or PID-TAG, got '${holder}'"
  kill -0 "${holder%%-*}" 2>/dev/null || die "holder ${holder} is not a running process"
  prune
  if ! mounted; then
    log "mounting binfmt_misc on ${BINFMT}"
    mount -t binfmt_misc binfmt_misc "${BINFMT}"
    touch "${STATE}/mounted"
  fi
  if ! enabled "${entry}"; then
    install_packages "${entry}"
    log "enabling ${entry}"
    update-binfmts --enable "${entry}" >&2
    enabled "${entry}" || die "${entry} is not enabled after update-binfmts --enable"
    touch "${STATE}/enabled/${entry}"
  fi
  grep -qx 'flags: .*F.*' "${BINFMT}/${entry}" ||
    die "${entry} lacks the fix-binary flag (F): containers could not run its programs"
  touch "${STATE}/holders/${holder}"
}

release() {
  local holder="$1" file entry
  rm -f "${STATE}/holders/${holder}"
  prune
  if compgen -G "${STATE}/holders/*" >/dev/null; then return 0; fi
  for file in "${STATE}"/enabled/*; do
    [[ -e "${file}" ]] || continue
    entry="$(basename "${file}")"
    log "disabling ${entry}, which was not enabled before"
    if [[ -e "${BINFMT}/${entry}" ]]; then update-binfmts --disable "${entry}" >&2; fi
    rm -f "${file}"
  done
  if [[ -e "${STATE}/mounted" ]]; then
    log "unmounting ${BINFMT}, which was not mounted before"
    if mounted; then umount "${BINFMT}"; fi
    rm -f "${STATE}/mounted"
  fi
}

status() {
  if mounted; then
    grep -l '^enabled$' "${BINFMT}"/qemu-* 2>/dev/null | xargs -r -n 1 basename | sed 's/^/enabled /'
  else
    echo "binfmt_misc not mounted"
  fi
  find "${STATE}/holders" -type f -printf 'holder %f\n' 2>/dev/null || true
}

(($# >= 1)) || usage
command="$1"
shift
if [[ "${command}" != status ]]; then
  [[ "$(id -u)" == 0 ]] || die "${command} needs root"
  mkdir -p "${STATE}/holders" "${STATE}/enabled"
  # One change at a time: tests and builds may start together.
  exec 9>"${STATE}/.lock"
  flock 9
fi
case "${command}" in
  acquire)
    (($# == 2)) || usage
    acquire "$@"
    ;;
  release)
    (($# == 1)) || usage
    release "$@"
    ;;
  status)
    (($# == 0)) || usage
    status
    ;;
  *) usage ;;
esac
