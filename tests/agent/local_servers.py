"""Real little servers on 127.0.0.1 for the prober, status and HTTP-client tests: HTTP (plain or
TLS), bare TCP, and a gRPC health service. Each is an async context manager yielding its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class HttpBehaviour:
    """What the HTTP server answers; `raw` (bytes) replaces the whole response when set."""

    status: int = 200
    body: bytes = b"ok"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    raw: bytes | None = None
    requests: list[Request] = field(default_factory=list)


async def _handle(behaviour: HttpBehaviour, reader: Any, writer: Any) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    behaviour.requests.append(Request(method, path, headers))
    if behaviour.delay:
        await asyncio.sleep(behaviour.delay)
    if behaviour.raw is not None:
        writer.write(behaviour.raw)
    else:
        extra = "".join(f"{name}: {value}\r\n" for name, value in behaviour.headers)
        writer.write(
            f"HTTP/1.1 {behaviour.status} X\r\nContent-Length: {len(behaviour.body)}\r\n"
            f"{extra}Connection: close\r\n\r\n".encode()
            + behaviour.body
        )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def http_server(
    behaviour: HttpBehaviour, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    server = await asyncio.start_server(
        lambda r, w: _handle(behaviour, r, w), "127.0.0.1", 0, ssl=tls
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=2)


def self_signed_context(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.local")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "app.crt", directory / "app.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


@contextlib.asynccontextmanager
async def tcp_server() -> AsyncIterator[int]:
    async def accept(reader: Any, writer: Any) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def grpc_health_server(statuses: dict[str, int], *, delay: float = 0.0) -> AsyncIterator[int]:
    """grpc.health.v1.Health/Check answering statuses[service] (NOT_FOUND when missing)."""

    async def check(
        request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        if delay:
            await asyncio.sleep(delay)
        if request.service not in statuses:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=statuses[request.service])

    server = grpc.aio.server()
    handler: Callable[..., Any] = grpc.unary_unary_rpc_method_handler(
        check,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=0.1)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose TCP handshakes never complete: a backlog-0 listener whose accept queue is
    already full, so the kernel drops further SYNs and a connect only ends by timing out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
