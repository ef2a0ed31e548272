"""Every refusal reaches kubectl with its reason, and every warning as a `Warning:` line, on the
real API server (the table is shared with the local runtime's admission test)."""

from __future__ import annotations

import orjson
import pytest
from e2e_kit import Cluster, ControlPlane, is_injected, label_for_injection
from refusal_cases import CASES, Case


@pytest.fixture
def injected_namespace(cluster: Cluster, control_plane: ControlPlane, namespace: str) -> str:
    label_for_injection(cluster, namespace, f"istio.io/rev={control_plane.revision}")
    return namespace


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_kubectl_shows_the_reason(cluster: Cluster, injected_namespace: str, case: Case) -> None:
    created = cluster.kubectl(
        "create", "-n", injected_namespace, "-f", "-",
        input=orjson.dumps(case.pod()).decode(), check=False,
    )  # fmt: skip
    warnings = [line for line in created.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings == [f"Warning: {w}" for w in case.warnings], created.stderr
    if case.refusal is not None:
        assert created.returncode != 0
        assert "without explanation" not in created.stderr
        assert case.kubectl_error() in created.stderr.splitlines(), created.stderr
        assert cluster.try_get_json("pod", case.name, "-n", injected_namespace) is None
    else:
        assert created.returncode == 0, created.stderr
        assert is_injected(cluster.get_json("pod", case.name, "-n", injected_namespace))
