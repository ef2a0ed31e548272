"""Envoy dies (SIGKILL): the agent exits with an error, as Istio's does, so the kubelet
restarts the istio-proxy container and counts it; the restarted sidecar is ready again and the
app's traffic flows again with its identity. (This kit plays the kubelet; the local runtime's
RESTARTS column and events are checked in tests/local/test_local_recovery.py.)"""

from __future__ import annotations

import os
import signal

from mesh_kit import MeshKit, backend_url, client_and_backend
from sidecar_netns import can_connect, wait_until

from sidemesh.api import names


def test_killed_envoy_ends_the_agent_and_a_restarted_proxy_serves_again(kit: MeshKit) -> None:
    client, _ = client_and_backend(kit)
    assert client.app_get(backend_url("/before"))["ok"] == 1
    first_agent = client.agent
    assert first_agent is not None
    killed = client.envoy_pid()
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: not first_agent.alive(), timeout=30, what="the agent to exit after Envoy died"
    )
    assert first_agent.popen.returncode == 1, first_agent.output()
    assert "Envoy exited unexpectedly" in first_agent.output()
    assert not can_connect(kit.node, client.ip, names.PORT_HEALTH)  # readiness fails now

    client.start_agent()  # the kubelet restarts the container
    client.wait_ready()
    result = wait_until(
        lambda: (r := client.app_get(backend_url("/after"), timeout=2))["ok"] == 1 and r,
        timeout=30, what="traffic through the restarted sidecar",
    )  # fmt: skip
    assert result["replies"][0]["xfcc"].endswith(f";URI={client.spiffe_id}")
    restarted = client.envoy_pid()
    assert restarted is not None and restarted != killed
