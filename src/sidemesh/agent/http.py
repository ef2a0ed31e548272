"""A tiny HTTP/1.1 client for the agent's local calls (Envoy admin, app probes, app metrics).

One request per connection (`Connection: close`), a hard deadline over connect + request +
response, a cap on the body, responses parsed by httptools (already a dependency, via
uvicorn). The agent never talks HTTP to anything but localhost or its own pod, so there is no
need for pooling, proxies or redirects, and no reason to pull in a client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httptools

USER_AGENT: Final = "sidemesh-agent"
DEFAULT_MAX_BODY: Final = 64 * 1024 * 1024


class HttpError(Exception):
    """The request failed before a complete response status line and headers arrived."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    truncated: bool = False

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _BodyLimitReached(Exception):
    pass


class _Collector:
    """httptools callbacks, gathering one response."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.headers_complete = False
        self.complete = False
        self.truncated = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_complete = True

    def on_body(self, body: bytes) -> None:
        room = self.max_body - len(self.body)
        self.body += body[: max(room, 0)]
        if len(body) > room:
            self.truncated = True
            raise _BodyLimitReached

    def on_message_complete(self) -> None:
        self.complete = True


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _encode_request(
    method: str, host: str, port: int, path: str, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    names = set()
    lines = [f"{method} {path} HTTP/1.1"]
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise HttpError(f"header {name!r} contains a line break")
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if "host" not in names:
        lines.append(f"Host: {_host_header(host, port)}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def fetch(
    host: str,
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = 3.0,
    tls: ssl.SSLContext | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    local_address: str | None = None,
) -> HttpResponse:
    """One request; raises HttpError when no complete response head arrives in time.

    A body longer than `max_body` is cut there and the response marked `truncated`.
    `local_address` binds the connection's source address (the port is left to the kernel).
    """
    request = _encode_request(method, host, port, path, headers, body)
    collector = _Collector(max_body)
    parser = httptools.HttpResponseParser(collector)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                local_addr=(local_address, 0) if local_address is not None else None,
            )
            try:
                writer.write(request)
                await writer.drain()
                while not collector.complete:
                    data = await reader.read(65536)
                    if not data:
                        break
                    try:
                        parser.feed_data(data)
                    except httptools.HttpParserError:
                        # Cut at max_body, or junk after a complete response: we have it all.
                        if collector.truncated or collector.complete:
                            break
                        raise
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await writer.wait_closed()
    except TimeoutError:
        raise HttpError(f"{host}:{port}: no response within {timeout:g}s") from None
    except httptools.HttpParserError as exc:
        raise HttpError(f"invalid HTTP response from {host}:{port}: {exc}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise HttpError(f"{host}:{port}: {exc}") from exc
    if not collector.headers_complete:
        raise HttpError(f"{host}:{port} closed the connection before responding")
    return HttpResponse(
        status=parser.get_status_code(),
        headers=collector.headers,
        body=bytes(collector.body),
        truncated=collector.truncated,
    )


async def fetch_url(url: str, *, method: str = "GET", timeout: float = 3.0) -> HttpResponse:
    """`fetch` for a plain `http://host:port/path` URL (used by `sidemesh agent wait`)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise HttpError(f"{url!r} is not an http:// URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return await fetch(parts.hostname, parts.port or 80, path, method=method, timeout=timeout)
