"""Istio's standard metrics with real Envoys: a client and a backend pod (workloads `client`
and `backend`, each with its sidecar in its own network namespace) and the control plane.

Each scenario counts what a fixed number of requests (or one TCP connection of known bytes)
made, then waits, with a generous deadline, until both sidecars' merged endpoints
(`:15020/stats/prometheus`) show exactly that: counters are exact, so waiting for equality is
both the proof and the end of the wait. Series are told apart by labels no other scenario
shares (path-specific faults, the TCP port), so the scenarios share one mesh."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from mesh_kit import BACKEND, MeshKit, backend_url, real_host_kit, start_pods
from sidecar_netns import http_request, in_netns, tcp_exchange, wait_until
from sidecar_pod import Pod

from sidemesh.agent.telemetry import request_totals, samples
from sidemesh.api import names

WAIT = 60.0
CLIENT_PRINCIPAL = "spiffe://cluster.local/ns/demo/sa/client"
BACKEND_PRINCIPAL = "spiffe://cluster.local/ns/demo/sa/backend"


@pytest.fixture(scope="module")
def kit() -> Iterator[MeshKit]:
    with real_host_kit() as mesh:
        mesh.add_service(BACKEND)
        # Bare pods: the pod name is the workload name Istio reports.
        mesh.add_pod("client", app="client", service_account="client")
        backend = mesh.add_pod("backend", app="backend", service_account="backend")
        backend.manifest["metadata"]["labels"]["version"] = "v1"
        mesh.start_control_plane()
        start_pods(mesh.pods["backend"], mesh.pods["client"])
        yield mesh


def scrape(pod: Pod) -> str:
    reply = http_request(pod.netns, pod.ip, names.PORT_AGENT_STATUS, "/stats/prometheus")
    assert reply.status == 200, reply.body
    return reply.body


def total(pod: Pod, name: str, **labels: str) -> float:
    """The sum of a family's samples carrying `labels` on a pod's merged endpoint."""
    return sum(
        value
        for found, value in samples(scrape(pod), name)
        if all(found.get(k) == v for k, v in labels.items())
    )


def wait_for_total(pod: Pod, name: str, expected: float, **labels: str) -> None:
    wait_until(
        lambda: total(pod, name, **labels) == expected,
        timeout=WAIT,
        what=f"{pod.name}: {name}{labels} == {expected} (now {total(pod, name, **labels)})",
    )


def series(pod: Pod, name: str, **labels: str) -> list[Mapping[str, str]]:
    return [
        found
        for found, _ in samples(scrape(pod), name)
        if all(found.get(k) == v for k, v in labels.items())
    ]


def test_requests_counted_on_both_sides_with_peer_metadata(kit: MeshKit) -> None:
    client, backend = kit.pods["client"], kit.pods["backend"]
    count = 20
    result = client.app_get(backend_url("/counted"), count=count)
    assert result["ok"] == count, result
    both = {"source_workload": "client", "destination_workload": "backend",
            "response_code": "200", "connection_security_policy": "mutual_tls"}  # fmt: skip
    wait_for_total(client, "istio_requests_total", count, reporter="source", **both)
    wait_for_total(backend, "istio_requests_total", count, reporter="destination", **both)

    [source] = series(client, "istio_requests_total", reporter="source", **both)
    [destination] = series(backend, "istio_requests_total", reporter="destination", **both)
    expected = {
        "source_workload_namespace": "demo", "source_principal": CLIENT_PRINCIPAL,
        "source_app": "client", "source_version": "unknown",
        "source_canonical_service": "client", "source_canonical_revision": "latest",
        "destination_workload_namespace": "demo", "destination_principal": BACKEND_PRINCIPAL,
        "destination_app": "backend", "destination_version": "v1",
        "destination_canonical_service": "backend",
        # the label the injector set (before the test added `version`)
        "destination_canonical_revision": backend.labels["service.istio.io/canonical-revision"],
        "destination_service": BACKEND.hostname, "destination_service_name": "backend",
        "destination_service_namespace": "demo", "request_protocol": "http",
        "response_flags": "-", "grpc_response_status": "",
    }  # fmt: skip
    for reported in (source, destination):
        assert {k: reported.get(k) for k in expected} == expected, reported
    assert request_totals(scrape(client)).source >= count
    assert request_totals(scrape(backend)).destination >= count


def test_duration_and_size_histograms_follow_the_requests(kit: MeshKit) -> None:
    client, backend = kit.pods["client"], kit.pods["backend"]
    count = 5
    assert client.app_get(backend_url("/sized"), count=count)["ok"] == count
    before = {  # earlier scenarios' requests carry the same labels: compare the growth
        pod.name: total(pod, "istio_requests_total", response_code="200") for pod in (client,)
    }
    assert before["client"] >= count
    for pod in (client, backend):
        for family in ("istio_request_duration_milliseconds", "istio_request_bytes",
                       "istio_response_bytes"):  # fmt: skip
            # Envoy merges histograms on its stats flush (every 5 s): wait for the samples.
            wait_until(
                lambda pod=pod, family=family: total(pod, f"{family}_count", response_code="200")
                == total(pod, "istio_requests_total", response_code="200"),
                timeout=WAIT,
                what=f"{pod.name}: {family} samples for every request",
            )
            buckets = {labels["le"] for labels in series(pod, f"{family}_bucket")}
            assert {"0.5", "1", "5", "3600000", "+Inf"} <= buckets
    # A request or response is more than its body: headers are counted.
    assert total(client, "istio_request_bytes_sum", reporter="source") > 0
    assert total(backend, "istio_response_bytes_sum", reporter="destination") > 0


def _configure(kit: MeshKit, *objects: dict[str, Any]) -> None:
    path = kit.registry_dir / "traffic.yaml"
    temporary = path.with_name(".traffic.yaml.tmp")
    temporary.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
    os.replace(temporary, path)


def test_fault_shows_its_code_and_response_flags(kit: MeshKit) -> None:
    client = kit.pods["client"]
    _configure(kit, {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "backend", "namespace": "demo"},
        "spec": {"hosts": ["backend"], "http": [
            {"match": [{"uri": {"prefix": "/fault"}}],
             "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
             "route": [{"destination": {"host": "backend"}}]},
            {"route": [{"destination": {"host": "backend"}}]},
        ]},
    })  # fmt: skip
    wait_until(lambda: "http_status" in client.admin("/config_dump").body and
               client.app_get(backend_url("/fault-probe"))["failed"] == 1,
               timeout=WAIT, what="the client's Envoy injects the fault")  # fmt: skip
    before = total(client, "istio_requests_total", reporter="source", response_code="503")
    count = 7
    assert client.app_get(backend_url("/fault"), count=count)["failed"] == count
    wait_for_total(client, "istio_requests_total", before + count, reporter="source",
                   response_code="503", response_flags="FI",
                   destination_service=BACKEND.hostname)  # fmt: skip


def test_tcp_byte_and_connection_counters_match_the_bytes_sent(kit: MeshKit) -> None:
    client, backend = kit.pods["client"], kit.pods["backend"]
    # The backend app speaks HTTP on its TCP port too; the sidecars see opaque bytes.
    request = b"GET /tcp-bytes HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"
    reply = in_netns(client.netns, lambda: tcp_exchange(BACKEND.vip, 9000, request))
    assert reply.startswith(b"HTTP/1.1 200")
    tcp = {"request_protocol": "tcp", "destination_service": BACKEND.hostname,
           "connection_security_policy": "mutual_tls"}  # fmt: skip
    for pod, reporter in ((client, "source"), (backend, "destination")):
        wait_for_total(pod, "istio_tcp_connections_closed_total", 1, reporter=reporter, **tcp)
        assert total(pod, "istio_tcp_connections_opened_total", reporter=reporter, **tcp) == 1
        assert total(pod, "istio_tcp_received_bytes_total", reporter=reporter, **tcp) == len(
            request
        )
        assert total(pod, "istio_tcp_sent_bytes_total", reporter=reporter, **tcp) == len(reply)
    [source] = series(client, "istio_tcp_sent_bytes_total", reporter="source", **tcp)
    assert (source["source_workload"], source["destination_principal"]) == (
        "client", BACKEND_PRINCIPAL
    )
    [destination] = series(backend, "istio_tcp_sent_bytes_total", reporter="destination", **tcp)
    assert (destination["destination_workload"], destination["source_principal"]) == (
        "backend", CLIENT_PRINCIPAL
    )
    # The client's workload, from the subject of its certificate (api/telemetry/peer_certificate)
    # opened is counted when the upstream connects, closed when the connection ends: both
    # after the client's handshake, so both carry its workload
    for name in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"):
        [counted] = series(backend, name, reporter="destination", **tcp)
        assert (counted["source_workload"], counted["source_principal"]) == (
            "client", CLIENT_PRINCIPAL), (name, counted)  # fmt: skip
        [counted] = series(client, name, reporter="source", **tcp)
        assert counted["destination_principal"] == BACKEND_PRINCIPAL, (name, counted)
    source_side = {k: destination[k] for k in (
        "source_workload", "source_workload_namespace", "source_app", "source_version",
        "source_canonical_service", "source_canonical_revision")}  # fmt: skip
    assert source_side == {
        "source_workload": "client", "source_workload_namespace": "demo", "source_app": "client",
        "source_version": "unknown", "source_canonical_service": "client",
        "source_canonical_revision": "latest",
    }  # fmt: skip


def test_peer_headers_never_reach_the_app(kit: MeshKit) -> None:
    """The client sees the backend's answer without the backend's metadata headers."""
    client = kit.pods["client"]

    def raw_get() -> bytes:
        request = b"GET /headers HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"
        return tcp_exchange(BACKEND.vip, 80, request)

    reply = in_netns(client.netns, raw_get)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200"), head
    assert b"x-sidemesh-peer" not in head
