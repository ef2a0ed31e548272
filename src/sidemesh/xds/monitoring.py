"""The monitoring port (15014): `/metrics` (Prometheus text), `/debug/syncz` (JSON, what
`sidemesh proxy-status` shows), `/ready`. A minimal HTTP/1.1 GET server on asyncio: three
read-only routes do not justify a web framework in the control plane's hot process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("sidemesh.xds.monitoring")

MAX_HEADER_BYTES = 16 * 1024


class MonitoringServer:
    def __init__(
        self,
        *,
        metrics: Callable[[], str],
        syncz: Callable[[], Any],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, "text/plain; version=0.0.4", metrics().encode()),
            "/stats/prometheus": lambda: (200, "text/plain; version=0.0.4", metrics().encode()),
            "/debug/syncz": lambda: (200, "application/json", orjson.dumps(syncz())),
            "/ready": lambda: (200, "text/plain", b"ok\n") if ready() else (
                503, "text/plain", b"not ready\n"),
        }  # fmt: skip
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            if len(head) > MAX_HEADER_BYTES:
                raise ValueError("headers too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            route = self._routes.get(path)
            if method != "GET":
                status, kind, body = 405, "text/plain", b"only GET\n"
            elif route is None:
                status, kind, body = 404, "text/plain", b"not found\n"
            else:
                status, kind, body = route()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        except Exception:
            log.exception("monitoring request failed")
        finally:
            writer.close()
