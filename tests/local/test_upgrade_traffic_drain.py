"""The proxy's last steps before it exits, with a real Envoy: drain, then quiesce — the
listeners stop accepting and the requests in flight (inbound and outbound) still get their
answers before `quiesce` returns with no connection open. This is what lets an in-place
sidecar restart cut no request (tests/local/test_upgrade_traffic_netns.py)."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidemesh.agent.envoy import EnvoySupervisor, find_envoy_binary

HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
LISTENER = """
  - name: {name}
    traffic_direction: {direction}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: app, timeout: 30s}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
BOOTSTRAP = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
{listeners}
  clusters:
  - name: app
    connect_timeout: 5s
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _App:
    """A backend that holds each request until released, and says when one arrived."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.release = threading.Event()
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                app.arrived.release()
                app.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def app() -> Iterator[_App]:
    app = _App()
    yield app
    app.release.set()
    app.server.shutdown()
    app.server.server_close()


async def _wait_listening(port: int, envoy: asyncio.Task[None]) -> None:
    for _ in range(600):
        assert not envoy.done(), "Envoy exited"
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"Envoy never listened on {port}")


async def test_quiesce_stops_listening_and_lets_requests_in_flight_finish(
    app: _App, tmp_path: Path
) -> None:
    admin, inbound, outbound = _free_port(), _free_port(), _free_port()
    listeners = "".join(
        LISTENER.format(name=name, direction=direction, port=port, hcm=HCM)
        for name, direction, port in (("inb", "INBOUND", inbound), ("outb", "OUTBOUND", outbound))
    )
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(BOOTSTRAP.format(admin=admin, listeners=listeners, app=app.port))
    supervisor = EnvoySupervisor(
        [str(find_envoy_binary()), "-c", str(bootstrap), "--disable-hot-restart",
         "--drain-strategy", "immediate", "--drain-time-s", "45", "--log-level", "warning"]
    )  # fmt: skip
    envoy = asyncio.create_task(supervisor.run())
    try:
        await _wait_listening(outbound, envoy)
        answers: dict[int, bytes] = {}

        def call(port: int) -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                answers[port] = response.read()

        callers = [threading.Thread(target=call, args=(port,)) for port in (inbound, outbound)]
        for caller in callers:
            caller.start()
        for _ in callers:  # both requests are at the app, in flight through Envoy
            assert await asyncio.to_thread(app.arrived.acquire, True, 30)
        admin_address = ("127.0.0.1", admin)
        await supervisor.drain(admin=admin_address, duration=0.1)
        quiesced = asyncio.create_task(supervisor.quiesce(admin=admin_address, limit=30))
        # the listeners are closed while the requests are still in flight...
        for port in (inbound, outbound):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                except ConnectionRefusedError:
                    break
                await asyncio.sleep(0.05)
        assert not quiesced.done()  # ... and quiesce waits for them
        app.release.set()
        assert await asyncio.wait_for(quiesced, 30) == 0
        for caller in callers:
            await asyncio.to_thread(caller.join, 30)
        assert answers == {inbound: b"ok", outbound: b"ok"}
    finally:
        app.release.set()
        await supervisor.stop()
        await asyncio.wait_for(envoy, 30)
