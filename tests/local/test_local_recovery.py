"""Recovery on the local runtime (root, network namespaces): a restarted control plane gets
every sidecar back, with no request lost meanwhile; a crashing Envoy shows in the pod's
RESTARTS and events. The scenario is `recovery_kit` (also `benchmarks/recovery.py`)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_kit import needs_root
from recovery_kit import NAMESPACE, REVISION, RecoveryMesh

from sidemesh.api import names
from sidemesh.demo import script
from sidemesh.local import network
from sidemesh.local.model import PodRecord

pytestmark = needs_root

GIVE_UP_SECONDS = 60.0  # a bound for giving up, not a speed being asserted


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecoveryMesh]:
    mesh = RecoveryMesh(tmp_path_factory.mktemp("sm-recovery") / "state", wait_seconds=180.0)
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.close()


def envoy_pid(pod: PodRecord) -> int | None:
    for pid in network.netns_pids(pod.netns or ""):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "envoy":
                return pid
    return None


def proxy_restarts(pod: PodRecord) -> int:
    statuses = [*pod.init_statuses, *pod.statuses]
    return sum(s.restart_count for s in statuses if s.name == names.CONTAINER_PROXY)


def test_a_started_mesh_answers_at_once(mesh: RecoveryMesh) -> None:
    """First in the module, so right after `start()`: every pod 2/2 and every sidecar SYNCED is
    not enough (the control plane may not have read the last pod's readiness yet, and the
    client's sidecar would answer 503 "no healthy upstream"); `start()` also waits for every
    sidecar to know every ready endpoint, so the restart test counts only what the restart
    loses."""
    status, body = mesh.request_from_client()
    assert status == 200, body


def test_sidecars_dial_the_control_plane_by_its_service_name(mesh: RecoveryMesh) -> None:
    """A restarted istiod pod has a new address; the Service name (and its VIP) stays."""
    pod = mesh.session.pod_named(NAMESPACE, "frontend")
    containers = [*(pod.spec.get("initContainers") or []), *pod.spec["containers"]]
    (proxy,) = [c for c in containers if c["name"] == names.CONTAINER_PROXY]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["CA_ADDR"] == f"istiod-{REVISION}.{names.CONTROL_PLANE_NAMESPACE}.svc:15012"


def test_every_sidecar_syncs_again_after_a_control_plane_restart(mesh: RecoveryMesh) -> None:
    traffic = mesh.start_traffic()
    try:
        traffic.wait_for_requests(10, timeout=GIVE_UP_SECONDS)
        before = traffic.ok
        mesh.restart_control_plane(GIVE_UP_SECONDS)  # raises unless all 4 are SYNCED again
        traffic.wait_for_requests(before + 10, timeout=GIVE_UP_SECONDS)
    finally:
        traffic.stop()
    assert traffic.failures == []


def test_a_killed_envoy_shows_in_restarts_and_events(mesh: RecoveryMesh) -> None:
    pod = mesh.session.pod_named(NAMESPACE, "frontend")
    assert proxy_restarts(pod) == 0
    killed = envoy_pid(pod)
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    mesh.session.wait_for(
        "istio-proxy restarted and the pod 2/2 again",
        lambda s: any(
            p.name == pod.name and proxy_restarts(p) == 1 and script.fully_ready(p)
            for p in script.live_pods(s, NAMESPACE)
        ),
        lambda s: str(script.pod_summary(script.live_pods(s, NAMESPACE))),
    )
    rows = mesh.local("get", "pods", "-n", NAMESPACE).splitlines()
    (row,) = [line.split() for line in rows if line.startswith(pod.name)]
    assert row[1:4] == ["2/2", "Running", "1"], rows  # NAME READY STATUS RESTARTS (x ago) AGE
    events = mesh.local("get", "events", "-n", NAMESPACE)
    assert any(
        "Restarting" in line and f"pod/{pod.name}" in line and names.CONTAINER_PROXY in line
        for line in events.splitlines()
    ), events
    mesh.wait_synced(GIVE_UP_SECONDS)
