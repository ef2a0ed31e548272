#!/usr/bin/env bash
# Shared set-up for scripts/run.sh and scripts/test.sh: system tools (as root, Debian) and a
# project virtualenv in .venv with sidemesh installed. Idempotent and quiet when nothing changes.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v iptables-restore >/dev/null 2>&1 || need_apt+=(iptables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)  # unpacks the e2e tier's API server
# the dashboard tests: a real Prometheus (its service is never started; tests run the binary)
# and a headless Chromium driven over the DevTools protocol
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
    apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need_apt[@]}" >/dev/null; }
  else
    echo "bootstrap: ${need_apt[*]} missing (install as root for the traffic-capture tests)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.sidemesh-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[proxy,kube,test]"
  touch "$stamp"
fi
