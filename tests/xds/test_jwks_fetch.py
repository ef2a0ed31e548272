"""`jwksUri`: the control plane fetches the key set (bounded: timeout, size, a checked
document) and the generator inlines it; a URI that cannot be fetched leaves its provider with
keys that verify nothing, so its tokens fail closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidemesh.api import security
from sidemesh.api.config import MeshConfig
from sidemesh.xds import jwt_authn
from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.jwks_fetch import JwksError, fetch_jwks
from sidemesh.xds.model import MeshSnapshot

JWKS = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
                             "x": "x6ontKnKspa-kxLiKwB7_Wc2-4xWSjDDxAEmSNE0ZSQ",
                             "y": "hSixy7S8jY13XedMByBq00jQFRjwJxU090rmB2gtPFI"}]})  # fmt: skip
PAGES = {
    "/jwks": (200, JWKS.encode()),
    "/missing": (404, b"no"),
    "/huge": (200, b'{"keys": [' + b" " * 70_000 + b"]}"),
    "/junk": (200, b"<html>"),
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ")[1].decode()
    if path == "/slow":
        await asyncio.sleep(30)
    status, body = PAGES[path]
    writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (status, len(body), body))  # fmt: skip
    await writer.drain()
    writer.close()


@pytest.fixture
async def issuer() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_a_key_set_is_fetched(issuer: str) -> None:
    assert await fetch_jwks(f"{issuer}/jwks") == JWKS


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing", "HTTP 404"), ("/huge", "larger than"), ("/junk", "jwks parse error"),
])  # fmt: skip
async def test_a_bad_answer_is_refused(issuer: str, path: str, reason: str) -> None:
    with pytest.raises(JwksError, match=reason):
        await fetch_jwks(f"{issuer}{path}")


async def test_a_slow_issuer_times_out(issuer: str) -> None:
    with pytest.raises(JwksError, match="no response within"):
        await fetch_jwks(f"{issuer}/slow", timeout=0.2)


def _request_authentication(uri: str) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "shop"},
            "spec": {"jwtRules": [{"issuer": "https://issuer", "jwksUri": uri}]}}  # fmt: skip


def _inlined(snapshot: MeshSnapshot) -> str:
    (provider,) = jwt_authn.providers(snapshot.request_authentications, snapshot.jwks)
    inline: str = provider.config["local_jwks"]["inline_string"]
    return inline


async def test_the_builder_fetches_and_publishes_the_key_set(issuer: str) -> None:
    published: list[MeshSnapshot] = []
    builder = SnapshotBuilder(published.append, mesh=MeshConfig(), debounce=0.01)
    task = asyncio.create_task(builder.run())
    try:
        builder.upsert(_request_authentication(f"{issuer}/jwks"))
        async with asyncio.timeout(30):
            while not published or "JWKS" not in published[-1].changed:
                await asyncio.sleep(0.02)
        assert _inlined(published[0]) == jwt_authn.UNVERIFIABLE_JWKS  # before the fetch
        assert _inlined(published[-1]) == JWKS
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_an_unfetched_uri_verifies_nothing() -> None:
    resource = security.validate(_request_authentication("https://unreachable.invalid/jwks"))
    (provider,) = jwt_authn.providers([resource], {})
    assert provider.config["local_jwks"]["inline_string"] == jwt_authn.UNVERIFIABLE_JWKS
    assert "not available" in provider.note
