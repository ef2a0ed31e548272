"""A server-first TCP protocol (the server speaks before the client, as SMTP, MySQL or SSH do)
through both sidecars over mTLS, with real Envoys.

The server's inbound mTLS TCP chain connects to the app only once the client's TLS handshake
is done (`upstream_connect_mode: ON_DOWNSTREAM_TLS_HANDSHAKE`, so the connection's telemetry
knows the client's certificate from the first series on, see xds/telemetry.py). The handshake
needs no bytes from the client's app, so the app's greeting must still reach a client that
sends nothing first; and the connection's series name the client's workload."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest
from mesh_kit import MeshKit, ServiceDef, client_and_backend, real_host_kit
from sidecar_netns import in_netns, wait_until
from test_sidecar_telemetry import WAIT, series, total

BANNER_PORT, BANNER_TARGET = 7000, 7070
# The backend's pods, on a port of their own (the backend service keeps its usual ports).
BANNER = ServiceDef(name="banner", vip="10.96.0.30", app="backend",
                    ports=(("tcp-banner", BANNER_PORT, BANNER_TARGET),))  # fmt: skip
GREETING = b"220 banner ready\n"
# Greets every connection first, then echoes a line back.
SERVER = f"""
import socket, threading
listener = socket.create_server(("0.0.0.0", {BANNER_TARGET}), backlog=64)
def serve(connection):
    with connection:
        connection.sendall({GREETING!r})
        data = connection.recv(4096)
        if data:
            connection.sendall(b"echo " + data)
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""


@pytest.fixture(scope="module")
def kit() -> Iterator[MeshKit]:
    with real_host_kit() as mesh:
        mesh.add_service(BANNER)
        _, backend = client_and_backend(mesh)
        mesh.spawn("banner", backend.netns, [sys.executable, "-c", SERVER])
        yield mesh


def _greeted_then_echoed(host: str) -> tuple[bytes, bytes]:
    """Read the greeting without sending anything, then one line and its echo."""
    with socket.create_connection((host, BANNER_PORT), timeout=10) as connection:
        greeting = b""
        while not greeting.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            greeting += chunk
        connection.sendall(b"ping\n")
        echo = connection.recv(4096)
    return greeting, echo


def test_the_server_speaks_first_through_both_sidecars(kit: MeshKit) -> None:
    client, backend = kit.pods["client-0"], kit.pods["backend-0"]

    def exchanged() -> tuple[bytes, bytes] | None:
        try:
            found = in_netns(client.netns, lambda: _greeted_then_echoed(BANNER.vip))
        except OSError:
            return None
        return found if found[0] else None  # closed unanswered: the server is still starting

    greeting, echo = wait_until(exchanged, timeout=WAIT, what="the banner's greeting")
    assert (greeting, echo) == (GREETING, b"echo ping\n")
    labels = {"reporter": "destination", "destination_service": BANNER.hostname,
              "connection_security_policy": "mutual_tls"}  # fmt: skip
    wait_until(
        lambda: total(backend, "istio_tcp_connections_closed_total", **labels) >= 1,
        timeout=WAIT,
        what="the backend counted the connection",
    )
    for name in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"):
        found = {s["source_workload"] for s in series(backend, name, **labels)}
        assert found == {"client-0"}, (name, found)  # a bare pod: its name is the workload
