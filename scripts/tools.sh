#!/usr/bin/env bash
# Finds a program the release tests use besides the build, and installs the Debian package that
# ships it where it is missing (root only), like the other scripts install what they need:
#
#   docker-registry   the reference OCI registry (distribution), package docker-registry
#   promtool          Prometheus' rule checker, package prometheus
#
# The program's path is printed on the last line of stdout; progress goes to stderr. The packages
# are installed without starting their services (a registry the tests start themselves listens on
# a loopback address of their choosing).
#
# Usage: tools.sh [--check] PROGRAM
#   --check   install nothing: print the path if the program is there, else exit 3.
set -euo pipefail
shopt -s inherit_errexit

readonly SCRIPT_NAME=tools
readonly EXIT_NOT_INSTALLED=3
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

check_only=false
if [[ "${1:-}" == --check ]]; then
  check_only=true
  shift
fi
(($# == 1)) || {
  printf 'usage: %s [--check] docker-registry|promtool\n' "$0" >&2
  exit 2
}
program="$1"
case "${program}" in
  docker-registry) package=docker-registry ;;
  promtool) package=prometheus ;;
  *) die "unknown program '${program}' (docker-registry, promtool)" ;;
esac

if ! command -v "${program}" >/dev/null 2>&1; then
  if [[ "${check_only}" == true ]]; then
    log "${program} is not installed (run scripts/tools.sh ${program} as root)"
    exit "${EXIT_NOT_INSTALLED}"
  fi
  # Debian starts a package's service unless a policy forbids it: forbid it for this install only,
  # unless the machine has a policy of its own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_install "${package}"
  command -v "${program}" >/dev/null 2>&1 || die "${package} is installed but ${program} is not on PATH"
fi
command -v "${program}"
