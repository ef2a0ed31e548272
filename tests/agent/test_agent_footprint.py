"""The long-running agent loads only what the sidecar runs: no gRPC, protobuf or crypto (a
short-lived child asks the CA), no CLI, pydantic or YAML (the settings arrive resolved)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("grpc", "google.protobuf", "cryptography", "click", "pydantic", "yaml", "uvicorn",
         "envoy.service", "sidemesh.api.config", "sidemesh.agent.config")  # fmt: skip


def test_the_agent_process_imports_nothing_heavy() -> None:
    probe = (
        "import sys; import sidemesh.agent.__main__, sidemesh.agent.run; "
        f"heavy = [m for m in sys.modules if m.startswith({HEAVY!r})]; "
        "print(' '.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
