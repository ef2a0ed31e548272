#!/usr/bin/env bash
# Installs everything and runs the whole test suite with the static checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# The end-to-end tier's real kube-apiserver and kube-controller-manager (envtest convention):
# unpacked from ../shared/k8s into .venv/k8s-assets (digests checked, only once) when no
# KUBEBUILDER_ASSETS is given. Without either the tier skips, except in CI where it fails.
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -f ../shared/k8s/unpack.sh ]; then
  KUBEBUILDER_ASSETS=$(bash ../shared/k8s/unpack.sh "$PWD/.venv/k8s-assets")
  export KUBEBUILDER_ASSETS
fi
ruff check src tests benchmarks
mypy
lint-imports
pytest "$@"
