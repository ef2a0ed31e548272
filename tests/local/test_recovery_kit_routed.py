"""`recovery_kit`'s notion of a started app (pure): every sidecar has, for each outbound cluster
of the app's Services, as many healthy members as the Service has ready pods."""

from __future__ import annotations

from local_testkit import empty_state
from recovery_kit import NAMESPACE, all_routed, healthy_members, ready_endpoints

from sidemesh.local.model import PodRecord, ServiceRecord

FRONTEND = "outbound|80||frontend.demo.svc.cluster.local"
BACKEND = "outbound|80||backend.demo.svc.cluster.local"


def service(name: str, *, namespace: str = NAMESPACE) -> ServiceRecord:
    manifest = {"spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}}
    return ServiceRecord(namespace=namespace, name=name, uid=f"uid-{name}", created=0.0,
                         manifest=manifest, cluster_ip="10.96.0.20")  # fmt: skip


def pod(name: str, app: str, *, ready: bool, namespace: str = NAMESPACE) -> PodRecord:
    manifest = {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": app}]}}
    return PodRecord(namespace=namespace, name=name, uid=f"uid-{name}", created=0.0,
                     manifest=manifest, phase="Running", pod_ip=f"10.244.0.{len(name)}",
                     ready=ready)  # fmt: skip


def test_ready_endpoints_count_ready_pods_of_the_apps_services_only() -> None:
    state = empty_state()
    for svc in (service("frontend"), service("backend"), service("other", namespace="x")):
        state.services[f"{svc.namespace}/{svc.name}"] = svc
    for record in (
        pod("frontend-a", "frontend", ready=False),
        pod("backend-a", "backend", ready=True),
        pod("backend-b", "backend", ready=True),
        pod("other-a", "other", ready=True, namespace="x"),
    ):
        state.pods[f"{record.namespace}/{record.name}"] = record
    assert ready_endpoints(state) == {FRONTEND: 0, BACKEND: 2}


def test_healthy_members_reads_envoys_plain_stats() -> None:
    text = (
        f"cluster.{FRONTEND}.membership_healthy: 1\n"
        f"cluster.{BACKEND}.membership_healthy: 2\n"
        f"cluster.{BACKEND}.membership_total: 2\n"
        "server.state: 0\n"
    )
    assert healthy_members(text) == {FRONTEND: 1, BACKEND: 2}


def test_routed_only_when_every_sidecar_has_every_ready_endpoint() -> None:
    wanted = {FRONTEND: 1, BACKEND: 2}
    converged = {FRONTEND: 1, BACKEND: 2}
    assert all_routed([converged, converged], wanted)
    # The control plane has not read the frontend's readiness yet: 503 "no healthy upstream".
    assert not all_routed([converged, {FRONTEND: 0, BACKEND: 2}], wanted)
    assert not all_routed([converged, {BACKEND: 2}], wanted)
    assert not all_routed([converged, {}], wanted)  # a sidecar that could not be asked
    assert not all_routed([{FRONTEND: 1, BACKEND: 1}], wanted)
