#!/usr/bin/env bash
# Regenerates deploy/ipvs-node-controller.yaml, the single-file install manifest, from the
# default overlay (deploy/overlays/nft) with the envtest kubectl's built-in kustomize.
#
# Usage: render-deploy.sh [--check]
#   --check   change nothing; exit 1 if the committed manifest differs from a fresh render.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
readonly manifest="${repo_root}/deploy/ipvs-node-controller.yaml"

readonly SCRIPT_NAME=render-deploy
# shellcheck source=lib/common.sh
source "${repo_root}/scripts/lib/common.sh"
parse_check_flag "$@"

assets_dir="$("${repo_root}/scripts/envtest-build.sh" | tail -n 1)"
rendered="$(mktemp)"
trap 'rm -f "${rendered}"' EXIT
"${assets_dir}/kubectl" kustomize "${repo_root}/deploy/overlays/nft" >"${rendered}"

if [[ "${check_only}" == true ]]; then
  if ! diff -u "${manifest}" "${rendered}"; then
    die "deploy/ipvs-node-controller.yaml is stale: run scripts/render-deploy.sh"
  fi
  exit 0
fi
cp "${rendered}" "${manifest}"
log "wrote deploy/ipvs-node-controller.yaml"
