"""`sidemesh demo traffic --json` for real (root): the canary, the resilience features, the
ingress gateway and outbound REGISTRY_ONLY measured through real sidecars, one JSON object on
stdout, and nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidemesh.demo.runner import leftovers
from sidemesh.local.preflight import missing_requirements

MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason="the demo needs a real host: " + "; ".join(MISSING)
)
SIDEMESH = Path(sys.executable).parent / "sidemesh"


def test_the_walk_measures_every_outcome(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    result = subprocess.run(
        [str(SIDEMESH), "demo", "traffic", "--json", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    [line] = result.stdout.splitlines()  # the narration went to stderr
    outcomes = json.loads(line)
    assert outcomes["ok"] is True and outcomes["failed_step"] is None
    # 1000 requests at 90/10: bounds more than five standard deviations wide.
    assert 5.0 <= outcomes["split_v2_percent"] <= 15.0
    assert 40.0 <= outcomes["split_50_v2_percent"] <= 60.0
    # v3 fails exactly every other request; three retries on 5xx hide it.
    assert 0.3 <= outcomes["raw_success_rate"] <= 0.7
    assert outcomes["retry_success_rate"] >= 0.99
    # the 504 came before the app's 3 s answer (compared within the run)
    assert 0 < outcomes["timeout_ms"] < 3000
    assert outcomes["breaker_503s"] >= 1
    assert outcomes["ejected"] is True
    assert outcomes["gateway_ok"] is True  # from the host, through the ingress gateway
    # REGISTRY_ONLY (the revision's MeshConfig ConfigMap): the host no ServiceEntry declares is
    # refused by the client's sidecar (Envoy's block_all route answers 502), the entry's passes.
    assert outcomes["registry_only_refused"] is True
    assert outcomes["registry_only_unknown_status"] == 502
    assert outcomes["service_entry_status"] == 200
    assert outcomes["not_measured"] == {}
    assert "REGISTRY_ONLY: out of the mesh only to hosts it knows" in result.stderr
    assert "Step 3: canary: 90% v1, 10% v2" in result.stderr
    assert leftovers(state_dir) == []
