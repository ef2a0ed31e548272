"""Access logs and traces with real Envoys: the control plane runs with a MeshConfig (JSON
access logs, a Zipkin and an OpenTelemetry provider) and a mesh-wide Telemetry in the root
namespace turning them on; the collectors are small receivers this test runs on the node
(Zipkin v2 JSON over HTTP, OTLP/HTTP protobuf), registered as services in istio-system.

Here: what the server side (inbound) writes, the access log line and the span of every
request it serves; the client side's (outbound) are in test_client_telemetry.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mesh_kit import BACKEND, MeshKit, backend_url, write_yaml
from sidecar_kubelet import HTTP_PORT
from sidecar_netns import in_netns, tcp_exchange
from telemetry_kit import (
    Collector,
    access_log_lines,
    active_listener,
    mesh_telemetry,
    otlp_spans,
    telemetry_mesh,
    wait_with_logs,
    zipkin_spans,
)

ISTIO_JSON_FIELDS = {
    "authority", "bytes_received", "bytes_sent", "connection_termination_details",
    "downstream_local_address", "downstream_remote_address", "duration", "method", "path",
    "protocol", "request_id", "requested_server_name", "response_code",
    "response_code_details", "response_flags", "route_name", "start_time", "upstream_cluster",
    "upstream_host", "upstream_local_address", "upstream_service_time",
    "upstream_transport_failure_reason", "user_agent", "x_forwarded_for",
}  # fmt: skip


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[MeshKit, Collector, Collector]]:
    """The mesh, the Zipkin and the OTLP collector."""
    with telemetry_mesh() as mesh:
        yield mesh


def test_a_json_access_log_line_per_request_with_istio_fields(mesh: Any) -> None:
    kit, _, _ = mesh
    client, backend = kit.pods["client"], kit.pods["backend"]
    count = 4
    assert client.app_get(backend_url("/logged"), count=count)["ok"] == count
    wait_with_logs(
        kit,
        lambda: len(access_log_lines(backend, "/logged")) == count,
        f"{count} access log lines on the backend's sidecar",
    )
    for entry in access_log_lines(backend, "/logged"):
        assert set(entry) == ISTIO_JSON_FIELDS
        assert (entry["method"], entry["response_code"], entry["response_flags"]) == (
            "GET",
            200,
            "-",
        )
        assert entry["upstream_cluster"] == "inbound|8080||"
        assert entry["requested_server_name"] == f"outbound_.80_._.{BACKEND.hostname}"


def test_zipkin_receives_a_span_per_request_with_istio_tags(mesh: Any) -> None:
    kit, zipkin, _ = mesh
    client = kit.pods["client"]
    trace_id = "463ac35c9f6413ad48485a3953bb6124"
    headers = (f"X-B3-TraceId: {trace_id}\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\n"
               "X-B3-Sampled: 1\r\n")  # fmt: skip
    in_netns(client.netns, lambda: _raw_get(BACKEND.vip, "/traced-b3", headers))

    def spans() -> list[dict[str, Any]]:
        return [s for s in zipkin_spans(zipkin)  # the client's span: test_client_telemetry
                if s.get("tags", {}).get("http.url", "").endswith("/traced-b3")
                and s.get("kind") == "SERVER"]  # fmt: skip

    wait_with_logs(kit, lambda: len(spans()) == 1, "the backend's span at Zipkin")
    [span] = spans()
    assert span["traceId"] == trace_id  # the caller's b3 context continued
    assert span["kind"] == "SERVER"
    tags = span["tags"]
    assert tags["http.status_code"] == "200"
    assert tags["istio.canonical_service"] == "backend"
    assert tags["istio.namespace"] == "demo"
    assert tags["node_id"].startswith("sidecar~")


def _raw_get(host: str, path: str, headers: str, port: int = 80) -> bytes:
    request = (f"GET {path} HTTP/1.1\r\nHost: backend\r\n{headers}"
               "Connection: close\r\n\r\n").encode()  # fmt: skip
    received = tcp_exchange(host, port, request)
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return received


def test_otlp_receives_spans_continuing_a_w3c_traceparent(mesh: Any) -> None:
    kit, _, otlp = mesh
    backend = kit.pods["backend"]
    write_yaml(kit.registry_dir / "telemetry.yaml", [mesh_telemetry("otel")])
    wait_with_logs(
        kit,
        lambda: "OpenTelemetryConfig" in active_listener(backend, "virtualInbound"),
        "the backend's inbound listener traces to the OpenTelemetry provider",
    )
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = f"traceparent: 00-{trace_id}-b7ad6b7169203331-01\r\n"
    # From outside the mesh (the node), on a new connection: the client's sidecar would reuse
    # a connection still bound to the listener's previous (Zipkin) configuration.
    in_netns(kit.node, lambda: _raw_get(backend.ip, "/traced-w3c", headers, HTTP_PORT))

    def spans() -> list[Any]:
        return [span for _, span in otlp_spans(otlp) if span.trace_id.hex() == trace_id]

    wait_with_logs(kit, lambda: len(spans()) == 1, "the backend's span at OTLP")
    [span] = spans()
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert attributes["istio.canonical_service"] == "backend"
    assert attributes["http.status_code"] == "200"
