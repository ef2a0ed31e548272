"""SIGTERM to the agent (what kubelet sends when the pod is deleted) while a slow request is
in flight through the server's sidecar: the request completes, the agent exits 0 once
terminationDrainDuration is over, and takes Envoy with it."""

from __future__ import annotations

import json
import signal

from mesh_kit import MeshKit, backend_url, client_and_backend
from sidecar_netns import wait_until
from sidecar_pod import summary

from sidemesh.api import names

DRAIN_SECONDS = 3
SLACK_SECONDS = 15  # a bound on the wait, not a timing assertion
DRAINING = {
    names.ANNOTATION_PROXY_CONFIG: json.dumps({"terminationDrainDuration": f"{DRAIN_SECONDS}s"})
}


def test_sigterm_lets_the_in_flight_request_finish_and_exits_zero(kit: MeshKit) -> None:
    client, backend = client_and_backend(kit, backend_annotations=DRAINING)
    app, agent = backend.app, backend.agent
    assert app is not None and agent is not None
    envoy = backend.envoy_pid()
    assert envoy is not None

    slow = client.start_app_get(backend_url("/slow?seconds=1.5"), timeout=20)
    wait_until(lambda: "slow request started" in app.output(),
               timeout=30, what="the slow request reaching the backend app")  # fmt: skip
    agent.signal(signal.SIGTERM)

    result = summary(slow, timeout=60)
    assert (result["ok"], result["failed"]) == (1, 0), result["errors"]
    assert result["replies"][0]["path"] == "/slow"
    assert result["replies"][0]["xfcc"].endswith(f";URI={client.spiffe_id}")

    assert agent.wait(timeout=DRAIN_SECONDS + SLACK_SECONDS) == 0
    wait_until(lambda: not _alive(envoy), timeout=10, what="Envoy gone with its agent")
    assert "draining Envoy for 3.0s" in backend.agent_log()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
