"""The monitoring port (15014): `/metrics` (Prometheus text), `/debug/syncz` (JSON, what
`sidemesh proxy-status` shows), `/ready`. A minimal HTTP/1.1 GET server on asyncio: three
read-only routes do not justify a web framework in the control plane's hot process.

`/metrics`, `/stats/prometheus` and `/ready` answer anyone (Prometheus and probes scrape them).
`/debug/*` names every proxy's pod, address and namespace, so, as Istio's
`allowAuthenticatedOrLocalhost`, it answers a caller on loopback, or one whose bearer token
the control plane's authenticator (TokenReview, or the local runtime's token file) accepts and
whose service account is in the control plane's namespace (Istio leaves that check as a TODO;
we make it). The token comes in `Authorization: Bearer`, or, because the API server consumes
`Authorization` and forwards the rest of a pods/proxy request, in `X-Sidemesh-Debug-Token`.
`sidemesh proxy-status` sends a token of the namespace's `default` service account, as
istioctl does for its debug requests. Every refusal is a 403 whose body says why: a 401
proxied by the API server reads to kubectl and client-go as the API server rejecting the
user's own credentials ("You must be logged in to the server").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sidemesh.api import names, prometheus_text
from sidemesh.security.authn import AuthenticationError, Authenticator

log = logging.getLogger("sidemesh.xds.monitoring")

MAX_HEADER_BYTES = 16 * 1024
DEBUG_PREFIX: Final = "/debug/"
DEBUG_TOKEN_HEADER: Final = "X-Sidemesh-Debug-Token"
DEBUG_SERVICE_ACCOUNT: Final = "default"  # whose token proxy-status presents (istioctl's)
AUTHENTICATION_TIMEOUT = 10.0
REASONS: Final = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                  503: "Service Unavailable"}  # fmt: skip

Answer = tuple[int, str, bytes]


@dataclass(frozen=True)
class DebugAccess:
    """Whether a debug request is answered, and why not (words for the caller and the log)."""

    allowed: bool
    reason: str = ""


def is_loopback(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bearer_token(headers: dict[str, str]) -> str | None:
    """The request's token: `Authorization: Bearer T`, else the X-Sidemesh-Debug-Token header."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get(DEBUG_TOKEN_HEADER.lower(), "").strip() or None


async def debug_access(
    *, peer: str | None, token: str | None, authenticator: Authenticator | None, namespace: str
) -> DebugAccess:
    """Loopback, or an authenticated service account of `namespace`."""
    if is_loopback(peer):
        return DebugAccess(True)
    if authenticator is None:
        return DebugAccess(False, "debug endpoints answer only on loopback here")
    if token is None:
        return DebugAccess(
            False, "debug endpoints need a bearer token (Authorization: Bearer, or "
            f"{DEBUG_TOKEN_HEADER} through the API server) or a request from loopback",
        )  # fmt: skip
    try:
        caller = await asyncio.wait_for(authenticator.authenticate(token), AUTHENTICATION_TIMEOUT)
    except AuthenticationError as exc:
        return DebugAccess(False, f"token not accepted: {exc}")
    except TimeoutError:
        return DebugAccess(False, "token not accepted: authentication timed out")
    if caller.namespace != namespace:
        return DebugAccess(
            False, f"service account {caller.namespace}/{caller.service_account} may not "
            f"read debug endpoints: only service accounts of namespace {namespace} may",
        )  # fmt: skip
    return DebugAccess(True)


class MonitoringServer:
    def __init__(
        self,
        *,
        metrics: Callable[[], str],
        syncz: Callable[[], Any],
        ready: Callable[[], bool] = lambda: True,
        authenticator: Authenticator | None = None,
        debug_namespace: str = names.CONTROL_PLANE_NAMESPACE,
    ) -> None:
        self._routes: dict[str, Callable[[], Answer]] = {
            "/metrics": lambda: (200, prometheus_text.CONTENT_TYPE, metrics().encode()),
            "/stats/prometheus": lambda: (200, prometheus_text.CONTENT_TYPE, metrics().encode()),
            "/debug/syncz": lambda: (200, "application/json", orjson.dumps(syncz())),
            "/ready": lambda: (200, "text/plain", b"ok\n") if ready() else (
                503, "text/plain", b"not ready\n"),
        }  # fmt: skip
        self.authenticator = authenticator
        self.debug_namespace = debug_namespace
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

    async def _answer(self, head: bytes, peer: str | None) -> Answer:
        """(status, content type, body)."""
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        path = target.split("?", 1)[0]
        route = self._routes.get(path)
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if route is None:
            return 404, "text/plain", b"not found\n"
        if path.startswith(DEBUG_PREFIX):
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            access = await debug_access(
                peer=peer,
                token=bearer_token(headers),
                authenticator=self.authenticator,
                namespace=self.debug_namespace,
            )
            if not access.allowed:
                log.info("refused %s to %s: %s", path, peer, access.reason)
                return 403, "text/plain", f"{access.reason}\n".encode()
        return route()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            if len(head) > MAX_HEADER_BYTES:
                raise ValueError("headers too large")
            peername = writer.get_extra_info("peername")
            peer = str(peername[0]) if isinstance(peername, tuple) else None
            status, kind, body = await self._answer(head, peer)
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Service Unavailable')}\r\n"
                f"Content-Type: {kind}\r\n"
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
