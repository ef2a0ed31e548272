"""The Sidecar resource with real sidecars in network namespaces (capture, agent, Envoy, mTLS).

The backend pod runs, besides the usual app on 0.0.0.0:8080, an app listening **only on
127.0.0.1:7070**. Its Sidecar's ingress listener says port 8080 goes to 127.0.0.1:7070, so
the mesh reaches that app (over mTLS: the namespace is STRICT) and no longer the other one.
The client's Sidecar has one egress listener: port 8000, `bind: 127.0.0.1`, `captureMode:
NONE`, so the client's proxy listens on 127.0.0.1:8000 for the app to call explicitly, and sees
the backend on port 8000 only (its tcp-echo port's listener and cluster are gone)."""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from mesh_kit import MeshKit, ServiceDef, real_host_kit, start_pods
from sidecar_kubelet import HTTP_PORT, NAMESPACE, TCP_PORT
from sidecar_netns import can_connect, http_request, in_netns, unprivileged, wait_until
from sidecar_pod import APP_GID, APP_UID, Pod

LOOPBACK_PORT = 7070
EGRESS_PORT = 8000
BACKEND = ServiceDef(
    name="backend", vip="10.96.0.10", app="backend",
    ports=(("http", EGRESS_PORT, HTTP_PORT), ("tcp-echo", 9000, TCP_PORT)),
)  # fmt: skip
HOSTNAME = f"backend.{NAMESPACE}.svc.cluster.local"
URL = f"http://{HOSTNAME}:{EGRESS_PORT}/via-vip"
# Answers only on loopback; tells who answered and the caller identity its proxy passed on.
LOOPBACK_APP = """
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pod": "loopback-only", "path": self.path,
                           "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def sidecars() -> list[dict[str, Any]]:
    def sidecar(name: str, app: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"workloadSelector": {"labels": {"app": app}}, **spec}}  # fmt: skip

    return [
        sidecar("backend", "backend", ingress=[{
            "port": {"number": HTTP_PORT, "protocol": "HTTP", "name": "http"},
            "defaultEndpoint": f"127.0.0.1:{LOOPBACK_PORT}"}]),
        sidecar("client", "client", egress=[{
            "port": {"number": EGRESS_PORT, "protocol": "HTTP", "name": "http"},
            "bind": "127.0.0.1", "captureMode": "NONE", "hosts": ["./*"]}]),
    ]  # fmt: skip


def _write(kit: MeshKit, name: str, documents: list[dict[str, Any]]) -> None:
    path = kit.registry_dir / name
    temporary = path.with_name(f".{name}.tmp")
    temporary.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    os.replace(temporary, path)


def dynamic(pod: Pod, kind: str) -> set[str]:
    """Names of the dynamic listeners or clusters Envoy runs now."""
    resource = "dynamic_listeners" if kind == "listeners" else "dynamic_active_clusters"
    reply = pod.admin(f"/config_dump?resource={resource}")
    assert reply.status == 200, reply.body
    found = set()
    for entry in json.loads(reply.body).get("configs") or []:
        state = entry.get("active_state") or entry
        found.add((state.get("listener") or state.get("cluster") or {}).get("name", ""))
    return found - {""}


def explicit_get(pod: Pod, host: str) -> dict[str, Any] | None:
    """What an app that calls its proxy explicitly gets: 127.0.0.1:EGRESS_PORT, Host named."""

    def request() -> dict[str, Any] | None:
        connection = http.client.HTTPConnection("127.0.0.1", EGRESS_PORT, timeout=5)
        try:
            connection.request("GET", "/explicit", headers={"Host": host, "Connection": "close"})
            response = connection.getresponse()
            body = response.read()
            return json.loads(body) if response.status == 200 else None
        except OSError:
            return None
        finally:
            connection.close()

    result: dict[str, Any] | None = in_netns(pod.netns, request, timeout=15)
    return result


@pytest.fixture(scope="module")
def kit() -> Iterator[MeshKit]:
    with real_host_kit() as mesh:
        mesh.add_service(BACKEND)
        client = mesh.add_pod("client-0", app="client", service_account="client")
        backend = mesh.add_pod("backend-0", app="backend", service_account="backend")
        mesh.start_control_plane()
        start_pods(backend, client)
        argv = [*unprivileged(APP_UID, APP_GID), sys.executable, "-c", LOOPBACK_APP,
                str(LOOPBACK_PORT)]  # fmt: skip
        mesh.spawn("backend-loopback-app", backend.netns, argv)
        wait_until(lambda: can_connect(backend.netns, "127.0.0.1", LOOPBACK_PORT), timeout=30,
                   what="the loopback-only app listening")  # fmt: skip
        yield mesh


@pytest.fixture(scope="module")
def before(kit: MeshKit) -> dict[str, set[str]]:
    """The client's config and the backend's answers before any Sidecar, then the Sidecars
    and a STRICT namespace applied, and their effect awaited."""
    client, backend = kit.pods["client-0"], kit.pods["backend-0"]
    result = client.app_get(URL)
    assert result["ok"] == 1 and result["replies"][0]["pod"] == "backend-0", result
    assert explicit_get(client, HOSTNAME) is None  # nothing listens there yet
    seen = {"listeners": dynamic(client, "listeners"), "clusters": dynamic(client, "clusters")}
    kit.set_peer_authentication("STRICT")
    _write(kit, "sidecars.yaml", sidecars())
    wait_until(lambda: f"127.0.0.1_{EGRESS_PORT}" in dynamic(client, "listeners"), timeout=30,
               what="the client's bound egress listener")  # fmt: skip
    forwarded = f"inbound|{HTTP_PORT}||::127.0.0.1:{LOOPBACK_PORT}"
    wait_until(lambda: forwarded in backend.admin("/clusters").body, timeout=30,
               what="the backend's ingress port forwarded to the loopback app")  # fmt: skip
    wait_until(lambda: f"inbound|{HTTP_PORT}||-plaintext" not in backend.admin("/config_dump").body,
               timeout=30, what="the backend's ingress port STRICT")  # fmt: skip
    return seen


def test_an_app_on_loopback_only_is_reached_through_the_ingress_listener_over_mtls(
    kit: MeshKit, before: dict[str, set[str]]
) -> None:
    client, backend = kit.pods["client-0"], kit.pods["backend-0"]
    result = client.app_get(URL)
    assert (result["ok"], result["failed"]) == (1, 0), result
    reply = result["replies"][0]
    assert reply["pod"] == "loopback-only" and reply["path"] == "/via-vip"
    assert reply["xfcc"].endswith(f";URI={client.spiffe_id}")  # it came over mTLS
    # STRICT: a caller without a sidecar gets nothing on the ingress port.
    with pytest.raises((OSError, http.client.HTTPException)):
        http_request(kit.node, backend.ip, HTTP_PORT, "/plaintext", timeout=3)


def test_capture_mode_none_listener_is_called_explicitly(
    kit: MeshKit, before: dict[str, set[str]]
) -> None:
    client = kit.pods["client-0"]
    for host in (HOSTNAME, "backend", f"backend:{EGRESS_PORT}", f"{BACKEND.vip}:{EGRESS_PORT}"):
        reply = explicit_get(client, host)
        assert reply is not None, host
        assert reply["pod"] == "loopback-only" and reply["path"] == "/explicit"
        assert reply["xfcc"].endswith(f";URI={client.spiffe_id}")
    assert explicit_get(client, "unknown.example") is None  # no such host on the listener


def test_egress_port_scoping_shrinks_the_clients_config(
    kit: MeshKit, before: dict[str, set[str]]
) -> None:
    client = kit.pods["client-0"]
    listeners, clusters = dynamic(client, "listeners"), dynamic(client, "clusters")
    tcp_listener, tcp_cluster = f"{BACKEND.vip}_9000", f"outbound|9000||{HOSTNAME}"
    assert tcp_listener in before["listeners"] and tcp_cluster in before["clusters"]
    assert tcp_listener not in listeners and tcp_cluster not in clusters
    assert f"{BACKEND.vip}_{EGRESS_PORT}" in listeners  # the port the Sidecar names stays
    assert len(clusters) < len(before["clusters"])
