"""A real Envoy accepts (ACKs) every listener and cluster the Sidecar resource's ingress and
egress listeners produce — loopback, pod-address and unix-socket endpoints, a connection pool,
a bind address match, a refused (dropping) port, bound inbound and outbound listeners — and
an app that calls a `captureMode: NONE` egress listener explicitly reaches the service."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from envoy_ack_kit import acked
from test_envoy_acks import ca, mixed_snapshot  # noqa: F401  (ca: the fixture)
from xds_testkit import Envoy, free_port

from sidemesh.api import networking
from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, ServicePort

API = "api.demo.svc.cluster.local"


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """A plain HTTP server on loopback standing in for the `api` service's one endpoint."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nfrom-api")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def sidecar_snapshot(egress_port: int, inbound_port: int, backend_port: int) -> MeshSnapshot:
    api = Service("demo", "api", "10.96.0.20", (ServicePort(egress_port, "http", "HTTP"),))
    base = mixed_snapshot()
    endpoint = Endpoint("127.0.0.1", backend_port, egress_port, True, "api", "demo")
    endpoints = {**base.endpoints, API: (endpoint,)}
    resource = networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {
            "workloadSelector": {"labels": {"app": "web"}},
            "ingress": [
                {"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                 "defaultEndpoint": "127.0.0.1:8888",
                 "connectionPool": {"tcp": {"maxConnections": 5, "connectTimeout": "1s"},
                                    "http": {"idleTimeout": "30s", "maxRetries": 2}}},
                {"port": {"number": 5000, "protocol": "TCP", "name": "tcp"},
                 "defaultEndpoint": "0.0.0.0:5001", "bind": "10.0.0.5"},
                {"port": {"number": inbound_port, "protocol": "GRPC", "name": "grpc"},
                 "defaultEndpoint": "unix:///tmp/sidemesh-test-app.sock",
                 "captureMode": "NONE", "bind": "127.0.0.1"},
                {"port": {"number": 9443, "protocol": "HTTPS", "name": "https"},
                 "tls": {"mode": "SIMPLE", "serverCertificate": "/etc/c.pem",
                         "privateKey": "/etc/k.pem"}},
            ],
            "egress": [
                {"port": {"number": egress_port, "protocol": "HTTP", "name": "http"},
                 "bind": "127.0.0.1", "captureMode": "NONE", "hosts": ["./*"]},
                {"port": {"number": 9090, "protocol": "GRPC", "name": "grpc"},
                 "bind": "10.1.2.3", "hosts": ["./*"]},
                {"hosts": ["*/*"]},
            ],
        },
    })  # fmt: skip
    return replace(base, services=tuple(sorted((*base.services, api))), endpoints=endpoints,
                   sidecars=(resource,))  # fmt: skip


def _get(port: int, host: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.status, reply.read()


async def test_envoy_acks_the_sidecar_listeners_and_the_bound_egress_listener_routes(
    ca: CertificateAuthority,  # noqa: F811
    backend: int,
) -> None:
    egress_port, inbound_port = free_port(), free_port()

    async def check(envoy: Envoy) -> None:
        listeners = await envoy.admin_async("/listeners")
        assert f"127.0.0.1_{egress_port}" in listeners, listeners
        assert f"inbound_127.0.0.1_{inbound_port}" in listeners, listeners
        assert "10.1.2.3_9090" in listeners  # captured connections to 10.1.2.3:9090
        clusters = await envoy.admin_async("/clusters")
        assert "inbound|9080||::127.0.0.1:8888" in clusters
        assert "inbound|5000||::10.0.0.5:5001" in clusters
        assert "inbound|9443||" not in clusters  # refused: its chain drops, nothing to reach
        # The app calls the proxy explicitly (no capture here at all), naming the host.
        status, body = await asyncio.to_thread(_get, egress_port, "api.demo")
        assert (status, body) == (200, b"from-api")
        status, body = await asyncio.to_thread(_get, egress_port, f"{API}:{egress_port}")
        assert (status, body) == (200, b"from-api")

    await acked(ca, sidecar_snapshot(egress_port, inbound_port, backend), check)
