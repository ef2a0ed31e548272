"""Envoy dies (SIGKILL): the agent starts a new one, the pod turns ready again and the app's
traffic flows again."""

from __future__ import annotations

import os
import signal

from mesh_kit import MeshKit, backend_url, client_and_backend
from sidecar_netns import http_request, wait_until

from sidemesh.api import names


def test_killed_envoy_is_restarted_and_traffic_resumes(kit: MeshKit) -> None:
    client, _ = client_and_backend(kit)
    assert client.app_get(backend_url("/before"))["ok"] == 1
    assert client.agent is not None
    killed = client.envoy_pid()
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    restarted = wait_until(
        lambda: (pid := client.envoy_pid()) != killed and pid,
        timeout=30, what="a new Envoy under the agent",
    )  # fmt: skip
    client.wait_ready()
    result = wait_until(
        lambda: (r := client.app_get(backend_url("/after"), timeout=2))["ok"] == 1 and r,
        timeout=30, what="traffic through the new Envoy",
    )  # fmt: skip
    assert result["replies"][0]["xfcc"].endswith(f";URI={client.spiffe_id}")

    assert client.agent.alive() and client.envoy_pid() == restarted
    metrics = http_request(kit.node, client.ip, names.PORT_AGENT_STATUS, "/stats/prometheus")
    assert "sidemesh_agent_envoy_restarts_total 1\n" in metrics.body
