"""The app prober against real local servers: HTTP, HTTPS, TCP, gRPC; success, failure, timeout."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import pytest
from local_servers import (
    HttpBehaviour,
    closed_port,
    grpc_health_server,
    http_server,
    self_signed_context,
    tcp_server,
    unanswered_port,
)

from sidemesh.agent.metrics import AgentMetrics
from sidemesh.agent.prober import Prober, run_probe
from sidemesh.agent.probes import AppProbe, GrpcProbe, HttpProbe, TcpProbe

HOST = "127.0.0.1"


@pytest.mark.parametrize(
    ("status", "success"),
    [(200, True), (204, True), (302, True), (399, True), (404, False), (500, False)],
)
async def test_http_status_decides(status: int, success: bool) -> None:
    behaviour = HttpBehaviour(status=status, body=b"" if status == 204 else b"ok")
    async with http_server(behaviour) as port:
        result = await run_probe(AppProbe(HttpProbe(port=port, path="/ready")), default_host=HOST)
    assert result.success is success
    assert result.detail == f"HTTP {status}"
    assert behaviour.requests[0].path == "/ready"


async def test_http_sends_the_probes_headers() -> None:
    behaviour = HttpBehaviour()
    probe = HttpProbe(port=0, path="/h?x=1", headers=(("Host", "app.example"), ("X-A", "b")))
    async with http_server(behaviour) as port:
        probe = HttpProbe(port=port, path=probe.path, headers=probe.headers)
        assert (await run_probe(AppProbe(probe), default_host=HOST)).success
    request = behaviour.requests[0]
    assert request.path == "/h?x=1"
    assert request.headers["host"] == "app.example"
    assert request.headers["x-a"] == "b"
    assert request.headers["user-agent"].startswith("kube-probe/")


async def test_https_does_not_verify_the_certificate(tmp_path: Path) -> None:
    behaviour = HttpBehaviour()
    async with http_server(behaviour, tls=self_signed_context(tmp_path)) as port:
        result = await run_probe(AppProbe(HttpProbe(port=port, scheme="HTTPS")), default_host=HOST)
    assert result.success, result.detail


async def test_http_against_https_server_fails(tmp_path: Path) -> None:
    async with http_server(HttpBehaviour(), tls=self_signed_context(tmp_path)) as port:
        result = await run_probe(AppProbe(HttpProbe(port=port)), default_host=HOST)
    assert not result.success


async def test_http_refused_connection_fails() -> None:
    result = await run_probe(AppProbe(HttpProbe(port=closed_port())), default_host=HOST)
    assert not result.success


async def test_http_timeout_is_honoured() -> None:
    async with http_server(HttpBehaviour(delay=5)) as port:
        started = time.monotonic()
        result = await run_probe(AppProbe(HttpProbe(port=port), timeout=0.3), default_host=HOST)
        elapsed = time.monotonic() - started
    assert not result.success
    assert "0.3s" in result.detail
    assert elapsed < 3  # bounded by the probe's timeout, not the server's delay


async def test_tcp() -> None:
    async with tcp_server() as port:
        assert (await run_probe(AppProbe(TcpProbe(port=port)), default_host=HOST)).success
    assert not (await run_probe(AppProbe(TcpProbe(port=closed_port())), default_host=HOST)).success


async def test_tcp_timeout_is_honoured() -> None:
    with unanswered_port() as port:
        started = time.monotonic()
        result = await run_probe(AppProbe(TcpProbe(port=port), timeout=0.3), default_host=HOST)
        elapsed = time.monotonic() - started
    assert not result.success
    assert "0.3s" in result.detail
    assert elapsed < 3


@pytest.mark.parametrize(
    ("service", "success"),
    [("", True), ("ok", True), ("down", False), ("unknown", False), ("missing", False)],
)
async def test_grpc_health(service: str, success: bool) -> None:
    async with grpc_health_server({"": 1, "ok": 1, "down": 2, "unknown": 0}) as port:
        result = await run_probe(AppProbe(GrpcProbe(port=port, service=service)), default_host=HOST)
    assert result.success is success, result.detail
    if service == "down":
        assert result.detail == "grpc health NOT_SERVING"


async def test_grpc_timeout_is_honoured() -> None:
    async with grpc_health_server({"": 1}, delay=5) as port:
        started = time.monotonic()
        result = await run_probe(AppProbe(GrpcProbe(port=port), timeout=0.3), default_host=HOST)
        elapsed = time.monotonic() - started
    assert not result.success
    assert "DEADLINE_EXCEEDED" in result.detail
    assert elapsed < 3


async def test_grpc_nothing_listening() -> None:
    result = await run_probe(AppProbe(GrpcProbe(port=closed_port())), default_host=HOST)
    assert not result.success


async def test_prober_counts_results() -> None:
    metrics = AgentMetrics()
    async with tcp_server() as port:
        prober = Prober(
            {"/app-health/web/livez": AppProbe(TcpProbe(port=port))},
            default_host=HOST,
            metrics=metrics,
        )
        assert prober.knows("/app-health/web/livez")
        assert not prober.knows("/app-health/web/readyz")
        assert (await prober.check("/app-health/web/livez")).success
    assert metrics.probe_results[("/app-health/web/livez", "success")] == 1


@pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.6 is a loopback address on Linux")
async def test_probes_of_the_pod_address_leave_from_the_passthrough_source() -> None:
    # Capture returns 127.0.0.6 on loopback untouched, so the probe reaches the app itself
    # instead of Envoy's inbound listener (which refuses plaintext under STRICT mTLS).
    peers: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await run_probe(AppProbe(HttpProbe(port=port)), default_host=HOST)).success
        assert (await run_probe(AppProbe(TcpProbe(port=port)), default_host=HOST)).success
        # A probe naming another host is not the pod probing itself: the kernel picks.
        named = AppProbe(HttpProbe(port=port, host=HOST))
        assert (await run_probe(named, default_host="127.0.0.2")).success
    finally:
        server.close()
        await server.wait_closed()
    assert peers == ["127.0.0.6", "127.0.0.6", "127.0.0.1"]
