"""The SDS server Envoy reads its certificates from, on a Unix socket (gRPC, State-of-the-World).

Two secrets, named as Istio names them: `default` (the workload certificate chain and key,
inline) and `ROOTCA` (the mesh root as the validation context). Every stream gets the secrets
it asks for; when the certificate rotates, every open stream gets a new version at once, so
Envoy swaps certificates without a restart. The server may start before the first certificate
exists (Envoy then starts while it is requested): streams get their answer when it arrives.
ACKs are noted, NACKs logged with Envoy's error_detail; a NACKed version is not re-sent until
something changes.

gRPC here is HTTP/2 (the `h2` state machine) plus gRPC's 5-byte message framing, and the
messages are encoded by `sds_messages`: one local peer, one service, three methods. grpcio and
the protobuf descriptor pools cost the agent more memory than all the rest of it, and threads;
this costs an event-loop task per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from sidemesh.agent import sds_messages
from sidemesh.agent.bootstrap import ROOT_SECRET, WORKLOAD_SECRET
from sidemesh.agent.issuing_protocol import WorkloadCertificate
from sidemesh.agent.sds_messages import SECRET_TYPE, SecretRequest

__all__ = ["SECRET_TYPE", "SdsServer", "SecretDiscovery", "build_secret"]

log = logging.getLogger("sidemesh.agent.sds")

SERVICE: Final = "/envoy.service.secret.v3.SecretDiscoveryService/"
_OK: Final = 0
_INVALID_ARGUMENT: Final = 3
_UNIMPLEMENTED: Final = 12
_INTERNAL: Final = 13
_UNAVAILABLE: Final = 14
_PUSH: Final = object()  # queue marker: the certificate changed
_CLOSED: Final = object()  # queue marker: Envoy closed its side
_MAX_MESSAGE: Final = 4 * 1024 * 1024


def build_secret(name: str, certificate: WorkloadCertificate) -> bytes | None:
    """The Secret resource `name` (encoded), or None for a name this server does not serve."""
    if name == WORKLOAD_SECRET:
        return sds_messages.certificate_secret(
            name, chain_pem=certificate.chain_pem, key_pem=certificate.key_pem
        )
    if name == ROOT_SECRET:
        return sds_messages.validation_secret(name, trusted_ca_pem=certificate.root_pem)
    return None


def _names_to_answer(
    request: SecretRequest, *, names: list[str], last_nonce: str
) -> list[str] | None:
    """The secrets to send in reply to `request`, or None when it needs no reply.

    A first request (no nonce) or a changed subscription gets a response; an ACK of the latest
    response and anything answering an older response do not. A NACK is logged with Envoy's
    reason, even when it answers an older response, and is not answered with the same version.
    """
    if request.error_message is not None:
        log.error(
            "Envoy rejected secrets %s version %s: %s",
            request.resource_names,
            request.version_info or "(none accepted yet)",
            request.error_message,
        )
        return None
    if request.response_nonce and request.response_nonce != last_nonce:
        return None
    requested = list(request.resource_names)
    if request.response_nonce and requested == names:
        log.debug("Envoy acknowledged secrets %s version %s", names, request.version_info)
        return None
    return requested


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class GrpcStatusError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Requests:
    """A stream's queue as the service sees it: decoded requests, or a status to end with."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue

    def put_nowait(self, item: Any) -> None:
        self._queue.put_nowait(item)

    async def get(self) -> Any:
        item = await self._queue.get()
        if isinstance(item, GrpcStatusError):
            raise item
        return item


class SecretDiscovery:
    """The service: what to answer on each stream, and the pushes on rotation."""

    def __init__(self, certificate: WorkloadCertificate | None) -> None:
        self._certificate = certificate
        self._version = 1
        self._streams: set[_Requests] = set()

    def publish(self, certificate: WorkloadCertificate) -> None:
        """A new certificate: bump the version and push it to every connected Envoy."""
        self._certificate = certificate
        self._version += 1
        for queue in self._streams:
            queue.put_nowait(_PUSH)

    @property
    def has_certificate(self) -> bool:
        return self._certificate is not None

    def response(self, names: list[str]) -> tuple[bytes, str]:
        """The encoded DiscoveryResponse for `names`, and its nonce (needs a certificate)."""
        assert self._certificate is not None
        secrets = []
        for name in names:
            secret = build_secret(name, self._certificate)
            if secret is None:
                log.warning("Envoy asked for secret %r, which the agent does not serve", name)
                continue
            secrets.append(secret)
        nonce = os.urandom(16).hex()
        encoded = sds_messages.discovery_response(
            version_info=str(self._version), secrets=secrets, nonce=nonce
        )
        return encoded, nonce

    async def stream_secrets(
        self, requests: _Requests, send: Callable[[bytes], Coroutine[Any, Any, None]]
    ) -> None:
        """StreamSecrets: `requests` yields decoded requests, then _CLOSED at Envoy's end."""
        self._streams.add(requests)
        names: list[str] = []
        last_nonce = ""
        try:
            while True:
                event = await requests.get()
                if event is _CLOSED:
                    return
                if event is _PUSH:
                    if not names:
                        continue
                else:
                    wanted = _names_to_answer(event, names=names, last_nonce=last_nonce)
                    if wanted is None:
                        continue
                    names = wanted
                if self._certificate is None:
                    continue  # answered by the push when the first certificate arrives
                response, last_nonce = self.response(names)
                await send(response)
        finally:
            self._streams.discard(requests)


class _Stream:
    def __init__(self) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None


class _Connection:
    """One HTTP/2 connection from Envoy; each gRPC call is a stream served by its own task."""

    def __init__(
        self, discovery: SecretDiscovery, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._discovery = discovery
        self._reader = reader
        self._writer = writer
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._streams: dict[int, _Stream] = {}
        self._window_opened = asyncio.Event()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def serve(self) -> None:
        self._h2.initiate_connection()
        self._flush()
        try:
            while data := await self._reader.read(65536):
                try:
                    events = self._h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.warning("SDS connection closed: HTTP/2 protocol error: %s", exc)
                    self._flush()
                    return
                for event in events:
                    self._handle(event)
                self._flush()
                await self._writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for stream in self._streams.values():
                if stream.task is not None:
                    stream.task.cancel()
            self._window_opened.set()
            self._writer.close()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            path = next((_text(v) for k, v in event.headers or [] if _text(k) == ":path"), "")
            stream = self._streams[event.stream_id] = _Stream()
            stream.task = asyncio.create_task(self._call(event.stream_id, path))
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            receiving = self._streams.get(event.stream_id)
            if receiving is not None:
                receiving.buffer += event.data or b""
                self._unframe(receiving)
        elif isinstance(event, h2.events.StreamEnded):
            found = self._streams.get(event.stream_id)
            if found is not None:
                found.requests.put_nowait(_CLOSED)
        elif isinstance(event, h2.events.StreamReset):
            gone = self._streams.pop(event.stream_id, None)
            if gone is not None and gone.task is not None:
                gone.task.cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_opened.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._writer.close()

    def _unframe(self, stream: _Stream) -> None:
        """Whole gRPC messages out of the stream's buffer, decoded, onto its queue."""
        while len(stream.buffer) >= 5:
            compressed, length = struct.unpack(">BI", stream.buffer[:5])
            if length > _MAX_MESSAGE:
                stream.requests.put_nowait(GrpcStatusError(_INVALID_ARGUMENT, "message too large"))
                return
            if len(stream.buffer) < 5 + length:
                return
            payload = bytes(stream.buffer[5 : 5 + length])
            del stream.buffer[: 5 + length]
            if compressed:
                stream.requests.put_nowait(GrpcStatusError(_UNIMPLEMENTED, "no compression"))
                return
            try:
                stream.requests.put_nowait(sds_messages.decode_request(payload))
            except sds_messages.WireError as exc:
                stream.requests.put_nowait(GrpcStatusError(_INVALID_ARGUMENT, str(exc)))

    async def _call(self, stream_id: int, path: str) -> None:
        stream = self._streams[stream_id]
        started = False

        async def send(message: bytes) -> None:
            nonlocal started
            if not started:
                self._h2.send_headers(
                    stream_id, [(":status", "200"), ("content-type", "application/grpc")]
                )
                started = True
            await self._send_data(stream_id, struct.pack(">BI", 0, len(message)) + message)

        code, detail = _OK, ""
        try:
            if path == SERVICE + "StreamSecrets":
                await self._discovery.stream_secrets(_Requests(stream.requests), send)
            elif path == SERVICE + "FetchSecrets":
                request = await _Requests(stream.requests).get()
                if request is _CLOSED:
                    raise GrpcStatusError(_INVALID_ARGUMENT, "no request")
                if not self._discovery.has_certificate:
                    raise GrpcStatusError(_UNAVAILABLE, "no workload certificate yet")
                await send(self._discovery.response(list(request.resource_names))[0])
            elif path == SERVICE + "DeltaSecrets":
                raise GrpcStatusError(_UNIMPLEMENTED, "only State-of-the-World SDS")
            else:
                raise GrpcStatusError(_UNIMPLEMENTED, f"unknown method {path}")
        except GrpcStatusError as exc:
            code, detail = exc.code, str(exc)
        except (ConnectionError, h2.exceptions.StreamClosedError):
            return
        except Exception:
            log.exception("serving an SDS stream failed")
            code, detail = _INTERNAL, "internal error"
        self._finish(stream_id, code, detail, headers_sent=started)

    def _finish(self, stream_id: int, code: int, detail: str, *, headers_sent: bool) -> None:
        trailers = [("grpc-status", str(code))] + ([("grpc-message", detail)] if detail else [])
        if not headers_sent:  # a trailers-only response
            trailers = [(":status", "200"), ("content-type", "application/grpc"), *trailers]
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.send_headers(stream_id, trailers, end_stream=True)
            self._flush()
        self._streams.pop(stream_id, None)

    async def _send_data(self, stream_id: int, data: bytes) -> None:
        while data:
            window = self._h2.local_flow_control_window(stream_id)
            if window <= 0:
                self._window_opened.clear()
                await self._window_opened.wait()
                if self._writer.is_closing():
                    raise ConnectionError("the SDS connection closed")
                continue
            size = min(window, self._h2.max_outbound_frame_size, len(data))
            self._h2.send_data(stream_id, data[:size])
            data = data[size:]
            self._flush()
        await self._writer.drain()

    def close(self) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.close_connection()
            self._flush()
        self._writer.close()


class SdsServer:
    """The gRPC SDS service, bound to a Unix socket path."""

    def __init__(self, socket_path: Path, certificate: WorkloadCertificate | None = None) -> None:
        self.socket_path = socket_path
        self.discovery = SecretDiscovery(certificate)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self.discovery, reader, writer)
        self._connections.add(connection)
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left over from a previous run of the agent
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        except OSError as exc:
            raise OSError(f"cannot listen on the SDS socket {self.socket_path}: {exc}") from None
        log.info("SDS listening on unix:%s", self.socket_path)

    def publish(self, certificate: WorkloadCertificate) -> None:
        self.discovery.publish(certificate)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
