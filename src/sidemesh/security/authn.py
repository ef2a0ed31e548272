"""Who is asking for a certificate: Kubernetes TokenReview, or the local runtime's token file.

Both return the caller's namespace and service account, or raise AuthenticationError whose
message is the reason (it goes back to the caller and into the logs; it never contains the
token).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml

from sidemesh.api import names
from sidemesh.security.files import write_atomically

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
TOKEN_BYTES = 32  # random bytes per local token (256 bits)


class AuthenticationError(Exception):
    """The caller could not be authenticated; str() is the reason."""


@dataclass(frozen=True)
class Caller:
    namespace: str
    service_account: str


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Caller: ...


def caller_from_username(username: str) -> Caller:
    """`system:serviceaccount:NS:SA` → Caller."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        raise AuthenticationError(f"{username!r} is not a service account")
    parts = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        raise AuthenticationError(f"{username!r} is not system:serviceaccount:NAMESPACE:NAME")
    return Caller(parts[0], parts[1])


class TokenReviewAuthenticator:
    """Asks the API server (TokenReview, audience `istio-ca`) who a token belongs to."""

    def __init__(self, client: Any, *, audiences: tuple[str, ...] = (names.TOKEN_AUDIENCE,)):
        self.client = client  # lightkube.AsyncClient
        self.audiences = audiences

    async def authenticate(self, token: str) -> Caller:
        from lightkube.models.authentication_v1 import TokenReviewSpec
        from lightkube.resources.authentication_v1 import TokenReview

        review = TokenReview(spec=TokenReviewSpec(token=token, audiences=list(self.audiences)))
        try:
            result = await self.client.create(review)
        except Exception as exc:  # the API server is the authority; fail closed
            raise AuthenticationError(f"TokenReview failed: {type(exc).__name__}") from exc
        status = result.status
        if status is None or not status.authenticated:
            reason = (status.error if status is not None else None) or "token not authenticated"
            raise AuthenticationError(f"TokenReview refused the token: {reason}")
        if status.audiences is not None and not set(status.audiences) & set(self.audiences):
            raise AuthenticationError(
                f"token audiences {status.audiences} do not include {list(self.audiences)}"
            )
        username = status.user.username if status.user is not None else None
        return caller_from_username(username or "")


@dataclass(frozen=True)
class _LocalToken:
    digest: bytes
    caller: Caller
    expires: datetime.datetime | None


class LocalTokenAuthenticator:
    """Tokens issued by the single-host runtime, kept in a YAML/JSON file.

    The file stores SHA-256 digests, never tokens:
    `{"tokens": [{"sha256": HEX, "namespace": NS, "serviceAccount": SA, "expires": ISO8601}]}`.
    Every entry is compared with `hmac.compare_digest`, so the time taken does not depend on
    how much of a guess matched. The file is re-read when it changes.
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime.datetime] | None = None):
        self.path = path
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._mtime: float | None = None
        self._tokens: tuple[_LocalToken, ...] = ()

    async def authenticate(self, token: str) -> Caller:
        if len(token) < TOKEN_BYTES:
            raise AuthenticationError("unknown token")
        digest = hashlib.sha256(token.encode()).digest()
        match: _LocalToken | None = None
        for entry in self._load():
            if hmac.compare_digest(entry.digest, digest):
                match = entry
        if match is None:
            raise AuthenticationError("unknown token")
        if match.expires is not None and match.expires <= self.clock():
            raise AuthenticationError(f"token expired at {match.expires.isoformat()}")
        return match.caller

    def _load(self) -> tuple[_LocalToken, ...]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError as exc:
            raise AuthenticationError(f"no token file at {self.path}") from exc
        if mtime != self._mtime:
            self._tokens = tuple(_parse_token_file(self.path))
            self._mtime = mtime
        return self._tokens


def _parse_token_file(path: Path) -> list[_LocalToken]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tokens = []
    for index, item in enumerate(data.get("tokens", [])):
        try:
            expires = item.get("expires")
            tokens.append(
                _LocalToken(
                    digest=bytes.fromhex(item["sha256"]),
                    caller=Caller(item["namespace"], item["serviceAccount"]),
                    expires=_parse_time(expires) if expires else None,
                )
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise AuthenticationError(f"{path}: tokens[{index}] is malformed: {exc}") from exc
    return tokens


def _parse_time(value: Any) -> datetime.datetime:
    parsed = (
        value
        if isinstance(value, datetime.datetime)
        else datetime.datetime.fromisoformat(str(value))
    )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def issue_local_token(
    path: Path,
    *,
    namespace: str,
    service_account: str,
    expires: datetime.datetime | None = None,
) -> str:
    """Create a token for NS/SA, record its digest in `path`, and return the token.

    Processes issuing into one file at once (the local runtime's daemon for a new pod, `sidemesh
    proxy-status` for its own identity) take turns on a lock of the file's directory, or one's
    read-modify-write could drop the other's entry."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    entry: dict[str, Any] = {
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "namespace": namespace,
        "serviceAccount": service_account,
    }
    if expires is not None:
        entry["expires"] = expires.isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        data: dict[str, Any] = {"tokens": []}
        if path.exists():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {"tokens": []}
        data.setdefault("tokens", []).append(entry)
        write_atomically(path, orjson.dumps(data, option=orjson.OPT_INDENT_2), 0o600)
    finally:
        os.close(directory)  # releases the lock
    return token
