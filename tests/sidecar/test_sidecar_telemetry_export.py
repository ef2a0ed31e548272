"""Access logs and traces with real Envoys: the control plane runs with a MeshConfig (JSON
access logs, a Zipkin and an OpenTelemetry provider) and a mesh-wide Telemetry in the root
namespace turning them on; the collectors are small receivers this test runs on the node
(Zipkin v2 JSON over HTTP, OTLP/HTTP protobuf), registered as services in istio-system.

Here: what the server side (inbound) writes, the access log line and the span of every
request it serves; the client side's (outbound) are in test_client_telemetry.py."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from mesh_kit import BACKEND, NODE_IP, MeshKit, backend_url, missing_requirement, start_pods
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from sidecar_kubelet import HTTP_PORT
from sidecar_netns import in_netns, wait_until
from sidecar_pod import Pod

WAIT = 60.0
ZIPKIN_PORT, OTLP_PORT = 9411, 4318
MESH_CONFIG = {
    "accessLogEncoding": "JSON",
    "extensionProviders": [
        {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local",
                                      "port": ZIPKIN_PORT}},
        {"name": "otel", "opentelemetry": {"service": "otel.istio-system.svc.cluster.local",
                                           "port": OTLP_PORT, "http": {"path": "/v1/traces"}}},
    ],
}  # fmt: skip
ISTIO_JSON_FIELDS = {
    "authority", "bytes_received", "bytes_sent", "connection_termination_details",
    "downstream_local_address", "downstream_remote_address", "duration", "method", "path",
    "protocol", "request_id", "requested_server_name", "response_code",
    "response_code_details", "response_flags", "route_name", "start_time", "upstream_cluster",
    "upstream_host", "upstream_local_address", "upstream_service_time",
    "upstream_transport_failure_reason", "user_agent", "x_forwarded_for",
}  # fmt: skip


class Collector:
    """An HTTP receiver on the node: every POST body, by path."""

    def __init__(self, port: int) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        lock = threading.Lock()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    bodies.append((self.path, body))
                self.send_response(202 if "spans" in self.path else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.port = port

    def start(self, netns: str) -> None:
        def listen() -> socket.socket:  # a socket of the node's network namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((NODE_IP, self.port))
            sock.listen(64)
            return sock

        self.server.socket.close()
        self.server.socket = in_netns(netns, listen)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _collector_service(name: str, vip: str, port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": "istio-system"},
         "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-slice", "namespace": "istio-system",
                      "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}]},
    ]  # fmt: skip


def _telemetry(provider: str) -> dict[str, Any]:
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "mesh-default", "namespace": "istio-system"},
            "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}],
                     "tracing": [{"providers": [{"name": provider}],
                                  "randomSamplingPercentage": 100}]}}  # fmt: skip


def _write(path: Path, documents: list[dict[str, Any]]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    os.replace(temporary, path)


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[MeshKit, Collector, Collector]]:
    """The mesh, the Zipkin and the OTLP collector."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(f"whole-sidecar test needs a real host: {reason}")
    with MeshKit() as kit:
        mesh_config = kit.workdir / "mesh.yaml"
        mesh_config.write_text(yaml.safe_dump(MESH_CONFIG))
        spawn: Callable[..., Any] = kit.spawn

        def spawn_with_mesh_config(name: str, netns: str, argv: list[str], **kw: Any) -> Any:
            if name == "discovery":  # the kit's control plane, with our MeshConfig
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
        _write(kit.registry_dir / "telemetry.yaml", [_telemetry("zipkin")])
        kit.start_control_plane()
        start_pods(kit.pods["backend"], kit.pods["client"])
        try:
            yield kit, zipkin, otlp
        finally:
            zipkin.stop()
            otlp.stop()


def _wait(kit: MeshKit, check: Callable[[], object], what: str) -> None:
    """wait_until, with every process's log tail when it fails."""
    try:
        wait_until(check, timeout=WAIT, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kit.logs()}") from None


def _access_log_lines(pod: Pod, path: str) -> list[dict[str, Any]]:
    """The JSON access log lines Envoy wrote to stdout (forwarded into the agent's log)."""
    found = []
    for line in pod.agent_log().splitlines():
        start = line.find("{")
        if "sidemesh.agent.envoy.output" not in line or start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("path") == path:
            found.append(entry)
    return found


def test_a_json_access_log_line_per_request_with_istio_fields(mesh: Any) -> None:
    kit, _, _ = mesh
    client, backend = kit.pods["client"], kit.pods["backend"]
    count = 4
    assert client.app_get(backend_url("/logged"), count=count)["ok"] == count
    _wait(kit, lambda: len(_access_log_lines(backend, "/logged")) == count,
          f"{count} access log lines on the backend's sidecar")
    for entry in _access_log_lines(backend, "/logged"):
        assert set(entry) == ISTIO_JSON_FIELDS
        assert (entry["method"], entry["response_code"], entry["response_flags"]) == (
            "GET", 200, "-"
        )
        assert entry["upstream_cluster"] == "inbound|8080||"
        assert entry["requested_server_name"] == f"outbound_.80_._.{BACKEND.hostname}"


def _zipkin_spans(collector: Collector) -> list[dict[str, Any]]:
    return [span for path, body in list(collector.bodies) if path == "/api/v2/spans"
            for span in json.loads(body)]  # fmt: skip


def test_zipkin_receives_a_span_per_request_with_istio_tags(mesh: Any) -> None:
    kit, zipkin, _ = mesh
    client = kit.pods["client"]
    trace_id = "463ac35c9f6413ad48485a3953bb6124"
    headers = (f"X-B3-TraceId: {trace_id}\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\n"
               "X-B3-Sampled: 1\r\n")  # fmt: skip
    in_netns(client.netns, lambda: _raw_get(BACKEND.vip, "/traced-b3", headers))

    def spans() -> list[dict[str, Any]]:
        return [s for s in _zipkin_spans(zipkin)  # the client's span: test_client_telemetry
                if s.get("tags", {}).get("http.url", "").endswith("/traced-b3")
                and s.get("kind") == "SERVER"]  # fmt: skip

    _wait(kit, lambda: len(spans()) == 1, "the backend's span at Zipkin")
    [span] = spans()
    assert span["traceId"] == trace_id  # the caller's b3 context continued
    assert span["kind"] == "SERVER"
    tags = span["tags"]
    assert tags["http.status_code"] == "200"
    assert tags["istio.canonical_service"] == "backend"
    assert tags["istio.namespace"] == "demo"
    assert tags["node_id"].startswith("sidecar~")


def _inbound_listener(pod: Pod) -> str:
    """The active `virtualInbound` of a pod's Envoy, as JSON text."""
    dump = json.loads(pod.admin("/config_dump").body)
    for config in dump["configs"]:
        for listener in config.get("dynamic_listeners", []):
            if listener.get("name") == "virtualInbound":
                return json.dumps(listener.get("active_state", {}))
    return ""


def _raw_get(host: str, path: str, headers: str, port: int = 80) -> bytes:
    request = (f"GET {path} HTTP/1.1\r\nHost: backend\r\n{headers}"
               "Connection: close\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return received


def test_otlp_receives_spans_continuing_a_w3c_traceparent(mesh: Any) -> None:
    kit, _, otlp = mesh
    backend = kit.pods["backend"]
    _write(kit.registry_dir / "telemetry.yaml", [_telemetry("otel")])
    _wait(kit, lambda: "OpenTelemetryConfig" in _inbound_listener(backend),
          "the backend's inbound listener traces to the OpenTelemetry provider")
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = f"traceparent: 00-{trace_id}-b7ad6b7169203331-01\r\n"
    # From outside the mesh (the node), on a new connection: the client's sidecar would reuse
    # a connection still bound to the listener's previous (Zipkin) configuration.
    in_netns(kit.node, lambda: _raw_get(backend.ip, "/traced-w3c", headers, HTTP_PORT))

    def spans() -> list[Any]:
        found = []
        for path, body in list(otlp.bodies):
            if path != "/v1/traces":
                continue
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                # the OTLP proto here is an old one (instrumentation_library_spans)
                scopes = (resource.scope_spans if hasattr(resource, "scope_spans")
                          else resource.instrumentation_library_spans)  # fmt: skip
                for scope in scopes:
                    found += [s for s in scope.spans if s.trace_id.hex() == trace_id]
        return found

    _wait(kit, lambda: len(spans()) == 1, "the backend's span at OTLP")
    [span] = spans()
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert attributes["istio.canonical_service"] == "backend"
    assert attributes["http.status_code"] == "200"

