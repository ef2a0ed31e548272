"""After an in-place upgrade the pod's env still names the old control plane; the agent takes
its revision from the pod's annotations (downward API) and goes to that revision's address."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidemesh.agent.config import AgentFlags, follow_revision, load_settings

OLD = "istiod-1-0.istio-system.svc:15012"


@pytest.mark.parametrize(
    ("address", "revision", "expected"),
    [
        (OLD, "1-1", "istiod-1-1.istio-system.svc:15012"),
        (OLD, "default", "istiod.istio-system.svc:15012"),
        ("istiod.istio-system.svc:15012", "canary", "istiod-canary.istio-system.svc:15012"),
        (OLD, "", OLD),  # no annotation: the env stands
        (OLD, "Bad_Rev", OLD),  # not a DNS label: ignored, never spliced into a host name
        (OLD, "x.evil.example", OLD),
        ("mesh.example.com:15012", "1-1", "mesh.example.com:15012"),  # the user's own address
        ("istiod-1-0.istio-system.svc:443", "1-1", "istiod-1-0.istio-system.svc:443"),
        ("istiodx.istio-system.svc:15012", "1-1", "istiodx.istio-system.svc:15012"),
    ],
)
def test_follow_revision(address: str, revision: str, expected: str) -> None:
    assert follow_revision(address, revision) == expected


def _settings(tmp_path: Path, annotations: str) -> tuple[str, str]:
    podinfo = tmp_path / "pod"
    podinfo.mkdir(exist_ok=True)
    (podinfo / "annotations").write_text(annotations)
    env = {
        "POD_NAME": "web-1", "POD_NAMESPACE": "shop", "SERVICE_ACCOUNT": "web",
        "CA_ADDR": OLD, "SIDEMESH_PODINFO_DIR": str(podinfo),
    }  # fmt: skip
    settings = load_settings(env, AgentFlags())
    return settings.control_plane.ca_address, settings.control_plane.discovery_address


def test_agent_goes_where_the_annotation_points(tmp_path: Path) -> None:
    moved = _settings(tmp_path, 'istio.io/rev="1-1"\n')
    assert moved == ("istiod-1-1.istio-system.svc:15012",) * 2
    assert _settings(tmp_path, 'istio.io/rev="1-0"\n') == (OLD, OLD)
