"""TLS on :15012 with an *optional*, verified client certificate, in front of the gRPC server.

Why not grpcio's own TLS: its server credentials either require a client certificate or never
ask for one. istiod asks and verifies one if given (Go's `VerifyClientCertIfGiven`), because the
same port serves certificate requests from workloads that have no certificate yet (they send a
token) and xDS streams from Envoys that present their workload certificate. So TLS ends here,
in Python's `ssl` (CERT_OPTIONAL, trusting only the mesh root, ALPN h2), and each connection is
relayed as is (HTTP/2, plaintext) to the gRPC server's loopback-only port. The relay's local
address is the connection's name on the gRPC side (`context.peer()`), and `identities(peer)`
answers which SPIFFE identities its client certificate proved. An entry exists only while its
relay connection is open, and is removed before that connection closes.

The cost is one more copy of every byte through the event loop, on this port only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sidemesh.security.identity import SpiffeId

log = logging.getLogger("sidemesh.xds.tls_front")

HANDSHAKE_TIMEOUT = 10.0
CHUNK = 256 * 1024


def spiffe_identities(certificate: Mapping[str, Any] | None) -> tuple[SpiffeId, ...]:
    """The SPIFFE URIs of a verified peer certificate (`SSLObject.getpeercert()`)."""
    found = []
    for kind, value in (certificate or {}).get("subjectAltName", ()):
        if kind == "URI":
            with contextlib.suppress(ValueError):
                found.append(SpiffeId.parse(str(value)))
    return tuple(found)


class TlsFront:
    def __init__(self, *, context: Callable[[], ssl.SSLContext]) -> None:
        self._context = context  # called per connection: the current serving certificate
        self._backend = ("127.0.0.1", 0)
        self._identities: dict[str, tuple[SpiffeId, ...]] = {}
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.handshake_failures = 0

    def identities(self, peer: str) -> Sequence[SpiffeId] | None:
        return self._identities.get(peer)

    async def start(self, host: str, port: int, *, backend: tuple[str, int]) -> int:
        """Serve on host:port, relaying to the gRPC server at `backend` (IPv4 loopback)."""
        self._backend = backend
        self._server = await asyncio.start_server(self._accepted, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): end like a closed connection (3.11 logs a cancelled handler as an error)
        finally:
            self._relays.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await writer.start_tls(self._context(), ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError) as exc:  # a foreign or expired cert, a scan
            self.handshake_failures += 1
            log.info("TLS handshake with %s failed: %s", peer, exc)
            return
        ssl_object = writer.get_extra_info("ssl_object")
        identities = spiffe_identities(ssl_object.getpeercert() if ssl_object else None)
        try:
            backend_reader, backend_writer = await asyncio.open_connection(
                *self._backend, limit=CHUNK
            )
        except OSError as exc:
            log.warning("cannot reach the gRPC server behind :15012: %s", exc)
            return
        local_host, local_port = backend_writer.get_extra_info("sockname")[:2]
        name = f"ipv4:{local_host}:{local_port}"
        self._identities[name] = identities
        try:
            pumps = [asyncio.create_task(_pump(reader, backend_writer)),
                     asyncio.create_task(_pump(backend_reader, writer))]  # fmt: skip
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            del self._identities[name]  # before the port can be reused by anyone else
            backend_writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
