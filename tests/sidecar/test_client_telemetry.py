"""Client-side telemetry with real Envoys: the client's sidecar writes its own access log line
and starts the trace that the backend's sidecar continues, a Telemetry with `match.mode:
CLIENT` changes the client side only, OpenTelemetry spans carry Istio's `service.name`, and TCP
series name the destination workload.

One mesh (control plane with a MeshConfig, `client` and `backend`), the Zipkin and OTLP/HTTP
receivers of `telemetry_kit` on the node. Every wait is for an observable
event (a log line, a span, an exact counter); scenarios use paths no other one uses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mesh_kit import BACKEND, MeshKit, backend_url, write_yaml
from sidecar_netns import http_request, in_netns, tcp_exchange, wait_until
from sidecar_pod import Pod
from telemetry_kit import (
    WAIT,
    Collector,
    access_log_lines,
    active_listener,
    mesh_telemetry,
    otlp_spans,
    telemetry_mesh,
    wait_with_logs,
    zipkin_spans,
)

from sidemesh.agent.telemetry import samples
from sidemesh.api import names

OUTBOUND_HTTP = f"{BACKEND.vip}_80"


def _telemetry(provider: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [mesh_telemetry(provider), *extra]


CLIENT_WITHOUT_REQUEST_COUNT = {
    "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
    "metadata": {"name": "client-metrics", "namespace": "demo"},
    "spec": {"selector": {"matchLabels": {"app": "client"}},
             "metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"},
                                         "disabled": True}]}]},
}  # fmt: skip


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[MeshKit, Collector, Collector]]:
    with telemetry_mesh() as mesh:
        yield mesh


def _total(pod: Pod, name: str, **labels: str) -> float:
    reply = http_request(pod.netns, pod.ip, names.PORT_AGENT_STATUS, "/stats/prometheus")
    assert reply.status == 200, reply.body
    return sum(value for found, value in samples(reply.body, name)
               if all(found.get(k) == v for k, v in labels.items()))  # fmt: skip


def test_the_client_sidecar_writes_a_json_access_log_line_per_request(mesh: Any) -> None:
    kit, _, _ = mesh
    client, backend = kit.pods["client"], kit.pods["backend"]
    count = 3
    assert client.app_get(backend_url("/client-logged"), count=count)["ok"] == count
    wait_with_logs(kit, lambda: len(access_log_lines(client, "/client-logged")) == count,
                   f"{count} access log lines on the client's sidecar")  # fmt: skip
    for entry in access_log_lines(client, "/client-logged"):
        assert entry["upstream_cluster"] == f"outbound|80||{BACKEND.hostname}"
        assert (entry["method"], entry["response_code"]) == ("GET", 200)
        assert entry["upstream_host"].endswith(":8080")  # the backend pod, not the VIP
    # the server side logs the same requests on its own
    wait_with_logs(kit, lambda: len(access_log_lines(backend, "/client-logged")) == count,
                   f"{count} access log lines on the backend's sidecar")  # fmt: skip


def _zipkin_spans(collector: Collector, path: str) -> list[dict[str, Any]]:
    return [span for span in zipkin_spans(collector)
            if span.get("tags", {}).get("http.url", "").endswith(path)]  # fmt: skip


def test_the_client_starts_the_trace_and_the_server_continues_it(mesh: Any) -> None:
    kit, zipkin, _ = mesh
    client = kit.pods["client"]
    # no trace headers from the app: the client's sidecar samples (100%) and starts the trace
    assert client.app_get(backend_url("/client-traced"))["ok"] == 1
    wait_with_logs(kit, lambda: len(_zipkin_spans(zipkin, "/client-traced")) == 2,
                   "the client's and the backend's spans at Zipkin")  # fmt: skip
    spans = {span["kind"]: span for span in _zipkin_spans(zipkin, "/client-traced")}
    client_span, server_span = spans["CLIENT"], spans["SERVER"]
    assert client_span["traceId"] == server_span["traceId"]
    assert server_span["parentId"] == client_span["id"]
    assert "parentId" not in client_span  # the client's span is the root
    assert client_span["tags"]["istio.canonical_service"] == "client"
    assert server_span["tags"]["istio.canonical_service"] == "backend"


def test_a_client_mode_override_disables_the_metric_on_the_client_only(mesh: Any) -> None:
    kit, _, _ = mesh
    client, backend = kit.pods["client"], kit.pods["backend"]
    write_yaml(kit.registry_dir / "telemetry.yaml",
                    _telemetry("zipkin", CLIENT_WITHOUT_REQUEST_COUNT))  # fmt: skip
    wait_with_logs(kit, lambda: '"requests_total"' not in active_listener(client, OUTBOUND_HTTP),
                   "the client's outbound listener without requests_total")  # fmt: skip
    assert '"requests_total"' in active_listener(backend, "virtualInbound")
    client_before = _total(client, "istio_requests_total", reporter="source")
    backend_before = _total(backend, "istio_requests_total", reporter="destination")
    count = 4
    assert client.app_get(backend_url("/client-quiet"), count=count)["ok"] == count
    # The client's access log line is written right after its stats logger ran (same request,
    # same access log pass): once the lines are there, the client has had its chance to count.
    wait_with_logs(kit, lambda: len(access_log_lines(client, "/client-quiet")) == count,
                   f"{count} access log lines on the client's sidecar")  # fmt: skip
    wait_with_logs(kit, lambda: _total(backend, "istio_requests_total", reporter="destination")
                   == backend_before + count, "the backend counts every request")  # fmt: skip
    assert _total(client, "istio_requests_total", reporter="source") == client_before
    # the other metrics of the client side are still there
    assert _total(client, "istio_request_duration_milliseconds_count", reporter="source") >= 0


def _otlp_spans(collector: Collector, path: str) -> list[tuple[dict[str, str], Any]]:
    """(resource attributes, span) of every OTLP span whose URL ends with `path`."""
    return [(attributes, span) for attributes, span in otlp_spans(collector)
            if {a.key: a.value.string_value for a in span.attributes}
            .get("http.url", "").endswith(path)]  # fmt: skip


def test_opentelemetry_spans_carry_istio_service_names(mesh: Any) -> None:
    kit, _, otlp = mesh
    client, backend = kit.pods["client"], kit.pods["backend"]
    write_yaml(kit.registry_dir / "telemetry.yaml", _telemetry("otel"))
    for pod, name in ((client, OUTBOUND_HTTP), (backend, "virtualInbound")):
        wait_with_logs(
            kit,
            lambda pod=pod, name=name: "OpenTelemetryConfig" in active_listener(pod, name),
            f"{pod.name}'s {name} traces to the OpenTelemetry provider",
        )
    # A request may still ride a connection the backend accepted under its previous (Zipkin)
    # listener: it drains (closes) such connections as they finish a request, so requests go
    # on, each on a path of its own, until one's two spans are at OTLP.
    paths: list[str] = []

    def traced_at_otlp() -> str | None:
        paths.append(f"/otel-named-{len(paths)}")
        assert client.app_get(backend_url(paths[-1]))["ok"] == 1
        return next((p for p in paths if len(_otlp_spans(otlp, p)) == 2), None)

    try:
        path = wait_until(traced_at_otlp, timeout=WAIT, every=0.5,
                          what="the client's and the backend's spans at OTLP")  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kit.logs()}") from None
    services = {attributes["service.name"]: span
                for attributes, span in _otlp_spans(otlp, path)}  # fmt: skip
    assert set(services) == {"client.demo", "backend.demo"}
    assert services["client.demo"].trace_id == services["backend.demo"].trace_id
    assert services["backend.demo"].parent_span_id == services["client.demo"].span_id


def test_tcp_series_name_the_destination_workload(mesh: Any) -> None:
    kit, _, _ = mesh
    client = kit.pods["client"]
    request = b"GET /tcp-peer HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"
    reply = in_netns(client.netns, lambda: tcp_exchange(BACKEND.vip, 9000, request))
    assert reply.startswith(b"HTTP/1.1 200")
    labels = {"reporter": "source", "request_protocol": "tcp",
              "destination_workload": "backend", "destination_workload_namespace": "demo",
              "destination_app": "backend", "destination_canonical_service": "backend",
              "connection_security_policy": "mutual_tls"}  # fmt: skip
    wait_with_logs(
        kit,
        lambda: _total(client, "istio_tcp_connections_closed_total", **labels) == 1,
        "the client's TCP series names the backend workload",
    )
    assert _total(client, "istio_tcp_received_bytes_total", **labels) == len(request)
