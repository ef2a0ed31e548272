#!/usr/bin/env bash
# Installs sidemesh and runs the main job on the embedded default: the bundled example
# manifests injected with `sidemesh kube-inject`, printed to standard output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >&2
export PATH="$PWD/.venv/bin:$PATH"
for f in examples/*.yaml; do
  echo "# --- sidemesh kube-inject -f $f" 
  sidemesh kube-inject -f "$f"
done
