"""Client-side telemetry of a real gateway pod (#13): its agent serves, on the merged metrics
endpoint, `istio_requests_total{reporter="source"}` naming the gateway as the source workload,
and the backend's sidecar counts the same request (`reporter="destination"`) with the gateway
as the source: the peer metadata crossed the mesh hop over mTLS."""

from __future__ import annotations

from gateway_kit import request, start_gateway_and_backend
from mesh_kit import BACKEND, MeshKit
from sidecar_kubelet import NAMESPACE
from sidecar_netns import http_request, wait_until
from sidecar_pod import READY_TIMEOUT, Pod

from sidemesh.agent.telemetry import samples
from sidemesh.api import names


def _series(pod: Pod, **labels: str) -> list[tuple[dict[str, str], float]]:
    reply = http_request(pod.netns, pod.ip, names.PORT_AGENT_STATUS, "/stats/prometheus")
    assert reply.status == 200, reply.body
    return [(found, value) for found, value in samples(reply.body, "istio_requests_total")
            if all(found.get(k) == v for k, v in labels.items())]  # fmt: skip


def test_a_gateway_reports_its_requests_as_the_source(kit: MeshKit) -> None:
    backend, gateway, _ = start_gateway_and_backend(kit)

    def routed() -> bool:
        return request(kit.node, gateway.ip, 8080, "hello.example.com", "/counted").status == 200

    wait_until(routed, timeout=READY_TIMEOUT, what="200 through the gateway")
    source = wait_until(
        lambda: _series(gateway, reporter="source", response_code="200"),
        timeout=READY_TIMEOUT, what="the gateway's reporter=source series",
    )  # fmt: skip
    [(labels, _)] = source
    assert labels["source_workload"] == "ingress-0"  # a bare pod: its own name
    assert labels["source_workload_namespace"] == NAMESPACE
    assert (
        labels["source_principal"]
        == f"spiffe://cluster.local/ns/{NAMESPACE}/sa/istio-ingressgateway"
    )
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["source_app"] == "istio-ingressgateway"
    assert labels["destination_service"] == BACKEND.hostname
    assert labels["destination_app"] == "backend"  # learnt from the backend's response
    destination = wait_until(
        lambda: _series(backend, reporter="destination", response_code="200",
                        source_workload=labels["source_workload"]),
        timeout=READY_TIMEOUT, what="the backend's series naming the gateway",
    )  # fmt: skip
    assert destination
