"""Access logs and traces with real Envoys: a mesh whose control plane runs with a MeshConfig
(JSON access logs, a Zipkin and an OpenTelemetry provider) and a mesh-wide Telemetry in the
root namespace turning them on; the collectors are small receivers run on the node (Zipkin v2
JSON over HTTP, OTLP/HTTP protobuf), registered as services in istio-system."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from mesh_kit import BACKEND, NODE_IP, MeshKit, missing_requirement, start_pods, write_yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
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


def collector_service(name: str, vip: str, port: int) -> list[dict[str, Any]]:
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


def mesh_telemetry(provider: str) -> dict[str, Any]:
    """The mesh-wide Telemetry: Envoy access logs, every request traced to `provider`."""
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "mesh-default", "namespace": "istio-system"},
            "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}],
                     "tracing": [{"providers": [{"name": provider}],
                                  "randomSamplingPercentage": 100}]}}  # fmt: skip


@contextmanager
def telemetry_mesh() -> Iterator[tuple[MeshKit, Collector, Collector]]:
    """The mesh (`client` and `backend`), the Zipkin and the OTLP collector."""
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
        write_yaml(kit.registry_dir / "collectors.yaml",
                        collector_service("zipkin", "10.96.0.50", ZIPKIN_PORT)
                        + collector_service("otel", "10.96.0.51", OTLP_PORT))  # fmt: skip
        write_yaml(kit.registry_dir / "telemetry.yaml", [mesh_telemetry("zipkin")])
        kit.start_control_plane()
        start_pods(kit.pods["backend"], kit.pods["client"])
        try:
            yield kit, zipkin, otlp
        finally:
            zipkin.stop()
            otlp.stop()


def wait_with_logs(kit: MeshKit, check: Callable[[], object], what: str) -> None:
    """wait_until, with every process's log tail when it fails."""
    try:
        wait_until(check, timeout=WAIT, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kit.logs()}") from None


def access_log_lines(pod: Pod, path: str) -> list[dict[str, Any]]:
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


def active_listener(pod: Pod, name: str) -> str:
    """One active listener of a pod's Envoy, as JSON text ("" when absent)."""
    dump = json.loads(pod.admin("/config_dump").body)
    for config in dump["configs"]:
        for listener in config.get("dynamic_listeners", []):
            if listener.get("name") == name:
                return json.dumps(listener.get("active_state", {}))
    return ""


def zipkin_spans(collector: Collector) -> list[dict[str, Any]]:
    return [span for path, body in list(collector.bodies) if path == "/api/v2/spans"
            for span in json.loads(body)]  # fmt: skip


def otlp_spans(collector: Collector) -> list[tuple[dict[str, str], Any]]:
    """(resource attributes, span) of every span the OTLP collector received."""
    found = []
    for path, body in list(collector.bodies):
        if path != "/v1/traces":
            continue
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
            # the OTLP proto here is an old one (instrumentation_library_spans)
            scopes = (resource.scope_spans if hasattr(resource, "scope_spans")
                      else resource.instrumentation_library_spans)  # fmt: skip
            for scope in scopes:
                found += [(attributes, span) for span in scope.spans]
    return found
