"""What `sidemesh discovery --kube` logs on a real API server: its first steps (server version,
webhook certificate, Lease, caBundle) from the first line on, and not every API request."""

from __future__ import annotations

from e2e_kit import ControlPlane, wait_for

FIRST_STEPS = (
    " INFO sidemesh.discovery Kubernetes API server version 1.",
    " INFO sidemesh.kube.certs webhook serving certificate written to ",
    " INFO sidemesh.kube.leader istiod-e2e-1-e2e-",  # ... acquired lease istiod-e2e-1-leader
    " INFO sidemesh.kube.cabundle caBundle of istio-sidecar-injector-e2e-1 set",
)


def test_discovery_logs_its_first_steps_and_not_each_request(control_plane: ControlPlane) -> None:
    def logged() -> str | None:
        text = control_plane.log()
        return text if all(step in text for step in FIRST_STEPS) else None

    text = wait_for("discovery's first steps in its log", logged)
    assert "acquired lease istiod-e2e-1-leader" in text
    # The HTTP client's per-request lines are DEBUG now, so absent at the default level.
    assert "HTTP Request:" not in text
    assert " INFO httpx" not in text
