"""The agent's status server (15020): readiness, rewritten app probes, merged metrics, quit.

* `GET /healthz/ready`: 200 when the sidecar is ready (see `readiness`), else 503 and why.
* `GET /app-health/<container>/{readyz,livez,startupz}`: runs the app's original probe,
  200 or 500; 404 for a path the injector did not rewrite.
* `GET /stats/prometheus`: Envoy's, the app's and the agent's metrics in one text body.
* `POST /quitquitquit`: graceful exit (for Jobs), accepted from the pod's loopback only.

A raw ASGI app on the agent's own small HTTP/1.1 server (`server`, httptools), bound to a
socket the agent creates itself so that a port conflict is an ordinary OSError at startup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from sidemesh.agent import http, readiness
from sidemesh.agent.metrics import CONTENT_TYPE, AgentMetrics, AppMetricsTarget, merge_metrics
from sidemesh.agent.prober import Prober
from sidemesh.agent.probes import APP_HEALTH_PREFIX
from sidemesh.agent.server import HttpServer

log = logging.getLogger("sidemesh.agent.status")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_TEXT: Final = "text/plain; charset=utf-8"
_APP_METRICS_ACCEPT: Final = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


@dataclass
class AgentState:
    """What the status server needs to know about the rest of the agent."""

    has_certificate: Callable[[], bool]
    draining: bool = False


class StatusApp:
    def __init__(
        self,
        *,
        state: AgentState,
        prober: Prober,
        metrics: AgentMetrics,
        admin: tuple[str, int],
        app_metrics: AppMetricsTarget | None,
        app_host: str,
        on_quit: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._prober = prober
        self._metrics = metrics
        self._admin = admin
        self._app_metrics = app_metrics
        self._app_host = app_host
        self._on_quit = on_quit
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/quitquitquit":
            await self._quit(scope, method, send)
        elif method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n")
        elif path == "/healthz/ready":
            reason = await self.not_ready_reason()
            status = 200 if reason is None else 503
            await _respond(send, status, (reason or "ready").encode() + b"\n")
        elif path.startswith(APP_HEALTH_PREFIX):
            await self._app_health(path, send)
        elif path == "/stats/prometheus":
            body = (await self.collect_metrics()).encode()
            await _respond(send, 200, body, content_type=CONTENT_TYPE)
        else:
            await _respond(send, 404, b"not found\n")

    async def not_ready_reason(self) -> str | None:
        if self._state.draining:
            return "the agent is draining"
        if not self._state.has_certificate():
            return "no workload certificate yet"
        return await readiness.check_envoy(*self._admin)

    async def _app_health(self, path: str, send: Send) -> None:
        if not self._prober.knows(path):
            await _respond(send, 404, f"no app probe at {path}\n".encode())
            return
        result = await self._prober.check(path)
        if not result.success:
            log.info("app probe %s failed: %s", path, result.detail)
        await _respond(send, 200 if result.success else 500, result.detail.encode() + b"\n")

    async def _fetch_text(self, host: str, port: int, path: str, what: str) -> str:
        try:
            response = await http.fetch(
                host, port, path, headers=[("Accept", _APP_METRICS_ACCEPT)], timeout=5.0
            )
        except http.HttpError as exc:
            log.warning("cannot scrape %s metrics: %s", what, exc)
            return ""
        if response.status != 200:
            log.warning("cannot scrape %s metrics: HTTP %d", what, response.status)
            return ""
        return response.text

    async def collect_metrics(self) -> str:
        sources = [self._fetch_text(*self._admin, "/stats/prometheus", "Envoy")]
        if self._app_metrics is not None:
            target = self._app_metrics
            sources.append(self._fetch_text(self._app_host, target.port, target.path, "app"))
        scraped = await asyncio.gather(*sources)
        return merge_metrics([*scraped, self._metrics.render(now=self._clock())])

    async def _quit(self, scope: Scope, method: str, send: Send) -> None:
        if method != "POST":
            await _respond(send, 405, b"use POST\n")
            return
        client = scope.get("client")
        if not client or not _is_loopback(client[0]):
            await _respond(send, 403, b"only from localhost\n")
            return
        await _respond(send, 200, b"OK\n")
        log.info("/quitquitquit: shutting down")
        self._on_quit()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _respond(send: Send, status: int, body: bytes, *, content_type: str = _TEXT) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StatusServer:
    def __init__(self, app: StatusApp, *, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: HttpServer | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server((self._host, self._port), family=family)
        server = HttpServer(self._app)
        try:
            await server.start(sock)
        except BaseException:
            sock.close()
            raise
        self._server = server
        log.info("status server listening on %s:%d", self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
