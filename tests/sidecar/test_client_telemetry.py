"""Client-side telemetry with real Envoys: the client's sidecar writes its own access log line
and starts the trace that the backend's sidecar continues, a Telemetry with `match.mode:
CLIENT` changes the client side only, OpenTelemetry spans carry Istio's `service.name`, and TCP
series name the destination workload.

One mesh (control plane with a MeshConfig, `client` and `backend`), the Zipkin and OTLP/HTTP
receivers of `test_sidecar_telemetry_export` on the node. Every wait is for an observable
event (a log line, a span, an exact counter); scenarios use paths no other one uses."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from mesh_kit import BACKEND, MeshKit, backend_url, missing_requirement, start_pods
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from sidecar_netns import http_request, in_netns, wait_until
from sidecar_pod import Pod
from test_sidecar_telemetry_export import (
    MESH_CONFIG,
    OTLP_PORT,
    ZIPKIN_PORT,
    Collector,
    _access_log_lines,
    _collector_service,
    _write,
)

from sidemesh.agent.telemetry import samples
from sidemesh.api import names

WAIT = 60.0
OUTBOUND_HTTP = f"{BACKEND.vip}_80"


def _telemetry(provider: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    mesh_wide = {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                 "metadata": {"name": "mesh-default", "namespace": "istio-system"},
                 "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}],
                          "tracing": [{"providers": [{"name": provider}],
                                       "randomSamplingPercentage": 100}]}}  # fmt: skip
    return [mesh_wide, *extra]


CLIENT_WITHOUT_REQUEST_COUNT = {
    "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
    "metadata": {"name": "client-metrics", "namespace": "demo"},
    "spec": {"selector": {"matchLabels": {"app": "client"}},
             "metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"},
                                         "disabled": True}]}]},
}  # fmt: skip


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[MeshKit, Collector, Collector]]:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(f"whole-sidecar test needs a real host: {reason}")
    with MeshKit() as kit:
        mesh_config = kit.workdir / "mesh.yaml"
        mesh_config.write_text(yaml.safe_dump(MESH_CONFIG))
        spawn: Callable[..., Any] = kit.spawn

        def spawn_with_mesh_config(name: str, netns: str, argv: list[str], **kw: Any) -> Any:
            if name == "discovery":
                argv = [*argv, "--mesh-config", str(mesh_config)]
            return spawn(name, netns, argv, **kw)

        kit.spawn = spawn_with_mesh_config  # type: ignore[method-assign]
        zipkin, otlp = Collector(ZIPKIN_PORT), Collector(OTLP_PORT)
        zipkin.start(kit.node)
        otlp.start(kit.node)
        kit.add_service(BACKEND)
        kit.add_pod("client", app="client", service_account="client")
        kit.add_pod("backend", app="backend", service_account="backend")
        kit.registry_dir.mkdir(exist_ok=True)
        _write(kit.registry_dir / "collectors.yaml",
               _collector_service("zipkin", "10.96.0.50", ZIPKIN_PORT)
               + _collector_service("otel", "10.96.0.51", OTLP_PORT))  # fmt: skip
        _write(kit.registry_dir / "telemetry.yaml", _telemetry("zipkin"))
        kit.start_control_plane()
        start_pods(kit.pods["backend"], kit.pods["client"])
        try:
            yield kit, zipkin, otlp
        finally:
            zipkin.stop()
            otlp.stop()


def _wait(kit: MeshKit, check: Callable[[], object], what: str) -> None:
    try:
        wait_until(check, timeout=WAIT, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kit.logs()}") from None


def _listener(pod: Pod, name: str) -> str:
    """One active listener of a pod's Envoy, as JSON text ("" when absent)."""
    dump = json.loads(pod.admin("/config_dump").body)
    for config in dump["configs"]:
        for listener in config.get("dynamic_listeners", []):
            if listener.get("name") == name:
                return json.dumps(listener.get("active_state", {}))
    return ""


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
    _wait(kit, lambda: len(_access_log_lines(client, "/client-logged")) == count,
          f"{count} access log lines on the client's sidecar")  # fmt: skip
    for entry in _access_log_lines(client, "/client-logged"):
        assert entry["upstream_cluster"] == f"outbound|80||{BACKEND.hostname}"
        assert (entry["method"], entry["response_code"]) == ("GET", 200)
        assert entry["upstream_host"].endswith(":8080")  # the backend pod, not the VIP
    # the server side logs the same requests on its own
    _wait(kit, lambda: len(_access_log_lines(backend, "/client-logged")) == count,
          f"{count} access log lines on the backend's sidecar")  # fmt: skip


def _zipkin_spans(collector: Collector, path: str) -> list[dict[str, Any]]:
    return [span for url, body in list(collector.bodies) if url == "/api/v2/spans"
            for span in json.loads(body)
            if span.get("tags", {}).get("http.url", "").endswith(path)]  # fmt: skip


def test_the_client_starts_the_trace_and_the_server_continues_it(mesh: Any) -> None:
    kit, zipkin, _ = mesh
    client = kit.pods["client"]
    # no trace headers from the app: the client's sidecar samples (100%) and starts the trace
    assert client.app_get(backend_url("/client-traced"))["ok"] == 1
    _wait(kit, lambda: len(_zipkin_spans(zipkin, "/client-traced")) == 2,
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
    _write(kit.registry_dir / "telemetry.yaml",
           _telemetry("zipkin", CLIENT_WITHOUT_REQUEST_COUNT))  # fmt: skip
    _wait(kit, lambda: '"requests_total"' not in _listener(client, OUTBOUND_HTTP),
          "the client's outbound listener without requests_total")  # fmt: skip
    assert '"requests_total"' in _listener(backend, "virtualInbound")
    client_before = _total(client, "istio_requests_total", reporter="source")
    backend_before = _total(backend, "istio_requests_total", reporter="destination")
    count = 4
    assert client.app_get(backend_url("/client-quiet"), count=count)["ok"] == count
    # The client's access log line is written right after its stats logger ran (same request,
    # same access log pass): once the lines are there, the client has had its chance to count.
    _wait(kit, lambda: len(_access_log_lines(client, "/client-quiet")) == count,
          f"{count} access log lines on the client's sidecar")  # fmt: skip
    _wait(kit, lambda: _total(backend, "istio_requests_total", reporter="destination")
          == backend_before + count, "the backend counts every request")  # fmt: skip
    assert _total(client, "istio_requests_total", reporter="source") == client_before
    # the other metrics of the client side are still there
    assert _total(client, "istio_request_duration_milliseconds_count", reporter="source") >= 0


def _otlp_spans(collector: Collector, path: str) -> list[tuple[dict[str, str], Any]]:
    """(resource attributes, span) of every OTLP span whose URL ends with `path`."""
    found = []
    for url, body in list(collector.bodies):
        if url != "/v1/traces":
            continue
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
            scopes = (resource.scope_spans if hasattr(resource, "scope_spans")
                      else resource.instrumentation_library_spans)  # fmt: skip
            for scope in scopes:
                for span in scope.spans:
                    tags = {a.key: a.value.string_value for a in span.attributes}
                    if tags.get("http.url", "").endswith(path):
                        found.append((attributes, span))
    return found


def test_opentelemetry_spans_carry_istio_service_names(mesh: Any) -> None:
    kit, _, otlp = mesh
    client, backend = kit.pods["client"], kit.pods["backend"]
    _write(kit.registry_dir / "telemetry.yaml", _telemetry("otel"))
    for pod, name in ((client, OUTBOUND_HTTP), (backend, "virtualInbound")):
        _wait(kit, lambda pod=pod, name=name: "OpenTelemetryConfig" in _listener(pod, name),
              f"{pod.name}'s {name} traces to the OpenTelemetry provider")  # fmt: skip
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


def _tcp_exchange(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_tcp_series_name_the_destination_workload(mesh: Any) -> None:
    kit, _, _ = mesh
    client = kit.pods["client"]
    request = b"GET /tcp-peer HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"
    reply = in_netns(client.netns, lambda: _tcp_exchange(BACKEND.vip, 9000, request))
    assert reply.startswith(b"HTTP/1.1 200")
    labels = {"reporter": "source", "request_protocol": "tcp",
              "destination_workload": "backend", "destination_workload_namespace": "demo",
              "destination_app": "backend", "destination_canonical_service": "backend",
              "connection_security_policy": "mutual_tls"}  # fmt: skip
    _wait(kit, lambda: _total(client, "istio_tcp_connections_closed_total", **labels) == 1,
          "the client's TCP series names the backend workload")  # fmt: skip
    assert _total(client, "istio_tcp_received_bytes_total", **labels) == len(request)
