#!/usr/bin/env bash
# Sets up ipvs-node-controller and runs its demo: the IPVS externalTrafficPolicy: Local hole
# reproduced in throwaway network namespaces, then fixed by `ipvs-node-controller sync --once`.
#
#   bash scripts/demo.sh [--backend nft|iptables]
#
# Needs root (network namespaces); removes everything it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node test-support/dist/demo.js --cli "$PWD/node_modules/.bin/ipvs-node-controller" "$@"
