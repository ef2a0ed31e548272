#!/usr/bin/env bash
# Installs everything and runs the whole test suite with the static checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests benchmarks
mypy
pytest "$@"
