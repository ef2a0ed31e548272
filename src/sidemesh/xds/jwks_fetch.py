"""The control plane fetches the JWKS of every `jwksUri` a RequestAuthentication names (as
istiod does by default) and the generator inlines it, so a sidecar never reaches an issuer.

Bounded: one GET per URI with a timeout and a body limit, no redirects followed, the document
checked as a key set before it is used. A URI that cannot be fetched has no document, and the
generator then gives its provider a key set that verifies nothing: tokens fail closed. A good
document is kept when a refresh fails (as istiod keeps its cache) and refreshed periodically.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

from sidemesh.agent.http import HttpError, fetch
from sidemesh.api.security.request_authentication import MAX_JWKS_BYTES, jwks_error
from sidemesh.api.text import untrusted
from sidemesh.xds.model import MeshSnapshot

log = logging.getLogger("sidemesh.xds.jwks")

FETCH_TIMEOUT: Final = 5.0  # seconds, Istio's default JWT rule timeout
REFRESH_SECONDS: Final = 20 * 60.0  # istiod's default JWKS refresh
RETRY_SECONDS: Final = 10.0

Fetch = Callable[[str], Awaitable[str]]


class JwksError(Exception):
    """The document could not be fetched or is not a key set; str() says why."""


def jwks_uris(snapshot: MeshSnapshot) -> set[str]:
    """The URIs whose documents the generator needs (rules with an inline JWKS need none)."""
    return {rule.jwks_uri for policy in snapshot.request_authentications
            for rule in policy.spec.jwt_rules or () if rule.jwks_uri and not rule.jwks}  # fmt: skip


async def fetch_jwks(uri: str, *, timeout: float = FETCH_TIMEOUT) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JwksError("not an http(s) URL")
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        response = await fetch(parts.hostname, parts.port or (443 if tls else 80), target,
                               headers=[("Accept", "application/json")], timeout=timeout,
                               tls=tls, max_body=MAX_JWKS_BYTES)  # fmt: skip
    except HttpError as exc:
        raise JwksError(str(exc)) from None
    if response.status != 200:
        raise JwksError(f"HTTP {response.status}")
    if response.truncated:
        raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
    try:
        text = response.body.decode("utf-8")
    except UnicodeDecodeError:
        raise JwksError("not UTF-8") from None
    problem = jwks_error(text)
    if problem:
        raise JwksError(problem)
    return text


class JwksFetcher:
    """Keeps the documents of the URIs last `want`ed; calls `on_change` when one changes."""

    def __init__(
        self,
        on_change: Callable[[], None],
        *,
        fetcher: Fetch = fetch_jwks,
        refresh: float = REFRESH_SECONDS,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self.on_change = on_change
        self.fetcher = fetcher
        self.refresh = refresh
        self.retry = retry
        self._documents: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def documents(self) -> Mapping[str, str]:
        return dict(self._documents)

    def want(self, uris: Iterable[str]) -> None:
        """Follow exactly `uris` (needs a running loop; without one, nothing is fetched)."""
        wanted = set(uris)
        for uri in [u for u in self._tasks if u not in wanted]:
            self._tasks.pop(uri).cancel()
            self._documents.pop(uri, None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for uri in sorted(wanted - set(self._tasks)):
            self._tasks[uri] = loop.create_task(self._follow(uri), name=f"jwks {uri}")

    async def _follow(self, uri: str) -> None:
        while True:
            try:
                document = await self.fetcher(uri)
            except JwksError as exc:
                known = "keeping the last one" if uri in self._documents else "its tokens fail"
                log.warning("JWKS %s not fetched (%s): %s", untrusted(uri), known,
                            untrusted(str(exc)))  # fmt: skip
                await asyncio.sleep(self.retry)
                continue
            if self._documents.get(uri) != document:
                self._documents[uri] = document
                log.info("JWKS %s fetched (%d bytes)", untrusted(uri), len(document))
                self.on_change()
            await asyncio.sleep(self.refresh)

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
