#!/usr/bin/env bash
# Installs sidemesh and runs the main job: the sidecar-injection guide end to end on this host
# (`sidemesh demo`: a control plane, an app, namespace labels, restarts, READY 2/2, mutual TLS,
# a revision upgrade, then everything cleaned up). The demo needs root for network namespaces;
# without it, manual injection of the bundled examples is shown instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >&2
export PATH="$PWD/.venv/bin:$PATH"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v iptables-restore >/dev/null; then
  exec sidemesh demo "$@"
fi
echo "run.sh: the demo needs root and ip/iptables (network namespaces); showing manual injection" \
  "of examples/ instead (sidemesh kube-inject)." >&2
for f in examples/*.yaml; do
  echo "# --- sidemesh kube-inject -f $f"
  sidemesh kube-inject -f "$f"
done
