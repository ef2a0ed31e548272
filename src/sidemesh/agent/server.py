"""A small HTTP/1.1 server for the status port: one asyncio protocol per connection, requests
parsed by httptools, handed to an ASGI-style app (`http` scope, `receive`, `send`).

Why not uvicorn: the status port serves a handful of short GETs (probes, scrapes), and
uvicorn (with click, which it imports) was a quarter of the agent's private memory. This
serves exactly what the status app needs: keep-alive, pipelined requests answered in order,
request bodies read and handed over whole, HEAD without a body, `Connection: close` honoured,
idle connections closed after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import httptools

log = logging.getLogger("sidemesh.agent.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
IDLE_TIMEOUT: Final = 60.0
_MAX_BODY: Final = 1024 * 1024
_REASONS: Final = {200: b"OK", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
                   500: b"Internal Server Error", 503: b"Service Unavailable"}  # fmt: skip


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(self) -> None:
        self.method = "GET"
        self.path = "/"
        self.keep_alive = True
        self.body = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []


class _Connection(asyncio.Protocol):
    def __init__(self, app: App, connections: set[_Connection]) -> None:
        self._app = app
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        self._url = b""
        self._current = _Request()
        self._queue: deque[_Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        if self._idle is not None:
            self._idle.cancel()
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400)
        except httptools.HttpParserError:
            self._reply_and_close(400)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._current = _Request()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        if len(self._current.body) + len(body) > _MAX_BODY:
            raise httptools.HttpParserError("request body too large")
        self._current.body += body

    def on_message_complete(self) -> None:
        request = self._current
        request.method = self._parser.get_method().decode("ascii")
        request.path = httptools.parse_url(self._url).path.decode("latin-1")
        request.keep_alive = self._parser.should_keep_alive()
        self._queue.append(request)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    # serving

    def _arm_idle_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self.close)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _reply_and_close(self, status: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_head(status, [(b"content-length", b"0")], keep_alive=False))
            self._transport.close()

    async def _serve(self) -> None:
        while self._queue:
            request = self._queue.popleft()
            if self._idle is not None:
                self._idle.cancel()
            try:
                keep_alive = await self._run_app(request)
            except Exception:
                log.exception("the status server failed to answer %s", request.path)
                self._reply_and_close(500)
                return
            if self._transport is None:
                return
            if not keep_alive:
                self._transport.close()
                return
            self._arm_idle_timer()

    async def _run_app(self, request: _Request) -> bool:
        """Answer one request; whether the connection stays open."""
        scope: Scope = {
            "type": "http",
            "http_version": "1.1",
            "method": request.method,
            "path": request.path,
            "headers": request.headers,
            "client": self._client,
        }
        received = False
        started: list[bytes] = []
        keep_alive = request.keep_alive

        async def receive() -> Message:
            nonlocal received
            if received:
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": bytes(request.body), "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
                started.append(_head(int(message["status"]), headers, keep_alive=keep_alive))
            elif message["type"] == "http.response.body" and self._transport is not None:
                body = b"" if request.method == "HEAD" else bytes(message.get("body", b""))
                self._transport.write(started.pop() + body if started else body)

        await self._app(scope, receive, send)
        if started and self._transport is not None:  # no body message: the head alone
            self._transport.write(started.pop())
        return keep_alive


def _head(status: int, headers: list[tuple[bytes, bytes]], *, keep_alive: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b""))]
    lines += [name + b": " + value for name, value in headers]
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class HttpServer:
    """Serve `app` on an already bound listening socket until `stop()`."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._app, self._connections), sock=sock
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None
