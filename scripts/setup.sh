#!/usr/bin/env bash
# Prepares a fresh Debian or Ubuntu machine for ipvs-node-controller and builds it:
#   - the kernel tools the backends drive and the tests use: nftables, iptables (legacy + nft), iproute2,
#     conntrack (deletes the conntrack entries of UDP flows that a change made stale)
#   - openssl (the test API server's service-account key)
#   - ipset (the tests emulate the rules kube-proxy's IPVS mode writes with it)
#   - pnpm at the version package.json pins, the workspace's dependencies, and the build.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION="$(node -p 'require("./package.json").packageManager.split("@")[1]')"
log() { printf 'setup: %s\n' "$*" >&2; }

node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    console.error(`setup: Node.js >= 20.19 is required, this is ${process.versions.node}`);
    process.exit(1);
  }'

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
{ command -v iptables-legacy-restore && command -v iptables-nft-restore; } >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ipset >/dev/null 2>&1 || missing+=(ipset)
if ((${#missing[@]} > 0)); then
  if [[ "$(id -u)" != 0 ]]; then
    log "missing Debian packages: ${missing[*]}; run as root or install them first"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "$(pnpm --version 2>/dev/null || true)" != "${PNPM_VERSION}" ]]; then
  log "installing pnpm ${PNPM_VERSION}"
  npm install --global --silent "pnpm@${PNPM_VERSION}" >/dev/null
fi

log "installing dependencies"
pnpm install --frozen-lockfile --reporter=silent
log "building"
pnpm run --silent build
log "ready: node_modules/.bin/ipvs-node-controller"
