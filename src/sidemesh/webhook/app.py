"""The webhook's HTTP surface as a raw ASGI application.

No framework: there are five routes, and the request path is hot enough that routing, header
checks and body reading are worth doing by hand (`/validate` shares the body handling).
Admission runs inline on the event loop: it is CPU-bound and short, and a thread hop would
cost more than it saves.

Every error is answered promptly with a 4xx and never a 500. A response sent before the
request body was read carries `connection: close`, so the server does not go on reading (and
discarding) a body nobody wants; over-long bodies are cut off as soon as they pass the limit,
and a body that stops arriving is given up on (408) instead of holding a task forever.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any, Final, Literal

from sidemesh.api import prometheus_text
from sidemesh.webhook.admission import Admitter, ResultKind, ReviewResult, review
from sidemesh.webhook.deadlines import BodyDeadlines
from sidemesh.webhook.metrics import InjectionMetrics, OutcomeClass
from sidemesh.webhook.replay import ReplayMemo
from sidemesh.webhook.token_volume import TokenVolumeNeutral
from sidemesh.webhook.validation import GroupCheck, review_validation
from sidemesh.webhook.validation_metrics import ValidationMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VALIDATE_PATH: Final = "/validate"  # Istio's path for configuration validation
MAX_BODY_BYTES: Final = 6 * 1024 * 1024  # Istio's limit for AdmissionReview bodies
# Longer than the API server's longest webhook timeout (30 s): past it, nobody is waiting.
BODY_TIMEOUT_SECONDS: Final = 30.0

_TEXT: Final = b"text/plain; charset=utf-8"
_JSON: Final = b"application/json"
_PROMETHEUS: Final = prometheus_text.CONTENT_TYPE.encode()

_OUTCOME_CLASS: Final[dict[ResultKind, OutcomeClass]] = {
    "injected": "success",
    "skipped": "skip",
    "denied": "failure",
    "rejected": "failure",
}

log = logging.getLogger(__name__)


class WebhookApp:
    """`POST /inject[/k1/v1/...]`, `POST /validate` (when given checks), `GET /ready`,
    `GET /metrics`."""

    def __init__(
        self,
        admitter: Admitter,
        *,
        metrics: InjectionMetrics | None = None,
        extra_metrics: tuple[Callable[[], bytes], ...] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
        replay: ReplayMemo | None = None,
        validation: Mapping[str, GroupCheck] | None = None,
    ) -> None:
        self._admitter = admitter
        # `POST /validate`: API group -> its check (None: the path is not served).
        self.validation = validation
        self.validation_metrics = ValidationMetrics()
        # Replicas differ in their token volume's random name; the engine sees one name.
        self._neutral = TokenVolumeNeutral(admitter)
        # Repeats of a request but for its uid (a rollout's replicas) skip decoding entirely.
        self.replay = replay if replay is not None else ReplayMemo()
        self.metrics = metrics if metrics is not None else InjectionMetrics()
        self.extra_metrics = extra_metrics  # other components' Prometheus text, appended
        self.max_body_bytes = max_body_bytes
        self._deadlines = BodyDeadlines(body_timeout_seconds)

    @property
    def admitter(self) -> Admitter:
        """The engine; fixed for the app's life (the replay memo holds its answers)."""
        return self._admitter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and websockets are disabled; nothing else is served
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/inject" or path.startswith("/inject/"):
            await self._inject(scope, receive, send)
        elif path == VALIDATE_PATH and self.validation is not None:
            await self._validate(scope, receive, send, self.validation)
        elif path in ("/ready", "/metrics"):
            if method not in ("GET", "HEAD"):
                await _respond(
                    send, 405, b"method not allowed\n", close=_has_body(scope), allow=b"GET, HEAD"
                )
            elif path == "/ready":
                await _respond(send, 200, b"ok\n")
            else:
                text = b"".join(
                    [
                        self.metrics.render(),
                        *([self.validation_metrics.render()] if self.validation else []),
                        *(m() for m in self.extra_metrics),
                    ]
                )
                await _respond(send, 200, text, content_type=_PROMETHEUS)
        else:
            await _respond(send, 404, b"not found\n", close=_has_body(scope))

    async def _inject(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        kind, reason = await self._serve_inject(scope, receive, send)
        if kind is not None:
            self.metrics.record(_OUTCOME_CLASS[kind], reason, time.perf_counter() - started)

    async def _validate(
        self, scope: Scope, receive: Receive, send: Send, checks: Mapping[str, GroupCheck]
    ) -> None:
        body = await self._receive_review(scope, receive, send)
        if isinstance(body, tuple):
            if body[0] is not None:
                self.validation_metrics.record("rejected", body[1])
            return
        result = review_validation(body, checks)
        self.validation_metrics.record(result.kind, result.code)
        if result.error is not None:
            log.error("validation failed (%s)", result.code, exc_info=result.error)
        elif result.kind == "rejected":
            log.warning("bad AdmissionReview request to %s (%s)", VALIDATE_PATH, result.code)
        content_type = _JSON if result.status == 200 else _TEXT
        await _respond(send, result.status, result.body, content_type=content_type)

    async def _serve_inject(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[ResultKind | None, str]:
        """Answer one injection request; returns (result kind, reason) for the metrics."""
        body = await self._receive_review(scope, receive, send)
        if isinstance(body, tuple):
            return body
        route = _path_params(scope["path"])
        result = self.replay.lookup(body, route)
        if result is None:
            result = review(body, self._neutral, cluster_id=route[0], network=route[1])
            self.replay.remember(body, route, result)
            _log_result(result)
        content_type = _JSON if result.status == 200 else _TEXT
        await _respond(send, result.status, result.body, content_type=content_type)
        return result.kind, result.code

    async def _receive_review(
        self, scope: Scope, receive: Receive, send: Send
    ) -> bytes | tuple[Literal["rejected"] | None, str]:
        """The request body of an AdmissionReview POST, or (having answered the request with
        a 4xx) ("rejected", reason), or (None, "") when the client went away."""
        if scope["method"] != "POST":
            await _respond(
                send, 405, b"method not allowed\n", close=_has_body(scope), allow=b"POST"
            )
            return "rejected", "method-not-allowed"
        headers = _headers(scope)
        if not _is_json(headers.get(b"content-type")):
            await _respond(
                send, 415, b"invalid Content-Type, want application/json\n", close=_has_body(scope)
            )
            return "rejected", "unsupported-media-type"
        declared = _content_length(headers.get(b"content-length"))
        if declared is not None and declared > self.max_body_bytes:
            await _respond(send, 413, self._too_large(), close=True)
            return "rejected", "body-too-large"
        body = await self._read_body_in_time(receive)
        if body is _BodyProblem.TOO_LARGE:
            await _respond(send, 413, self._too_large(), close=True)
            return "rejected", "body-too-large"
        if body is _BodyProblem.TIMED_OUT:
            await _respond(send, 408, b"request body not received in time\n", close=True)
            return "rejected", "body-timeout"
        if body is _BodyProblem.DISCONNECTED:
            return None, ""  # the client went away; there is nobody to answer
        assert isinstance(body, bytes)
        if not body:
            await _respond(send, 400, b"no body found\n")
            return "rejected", "empty-body"
        return body

    async def _read_body_in_time(self, receive: Receive) -> bytes | _BodyProblem:
        """`_read_body`, given up after `body_timeout_seconds` (a client stalling mid-body)."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.start(task)
        try:
            return await self._read_body(receive)
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise  # cancelled by someone else (server shutdown): let it through
            task.uncancel()
            return _BodyProblem.TIMED_OUT
        finally:
            self._deadlines.finish(task)

    async def _read_body(self, receive: Receive) -> bytes | _BodyProblem:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _BodyProblem.DISCONNECTED
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    return _BodyProblem.TOO_LARGE
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> bytes:
        return f"request body larger than {self.max_body_bytes} bytes\n".encode()


class _BodyProblem(enum.Enum):
    TOO_LARGE = "too large"
    TIMED_OUT = "timed out"
    DISCONNECTED = "disconnected"


def _log_result(result: ReviewResult) -> None:
    if result.error is not None:
        log.error("sidecar injection failed (%s)", result.code, exc_info=result.error)
    elif result.kind == "rejected":
        log.warning("bad AdmissionReview request (%s)", result.code)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = _TEXT,
    close: bool = False,
    allow: bytes | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if allow is not None:
        headers.append((b"allow", allow))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers lower-case header names; the first occurrence wins.
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type == b"application/json"


def _content_length(value: bytes | None) -> int | None:
    if value is None or not value.isdigit():
        return None  # absent or garbage: the streaming limit still applies
    return int(value)


def _has_body(scope: Scope) -> bool:
    """Whether the request may have a body still unread (then the connection is closed)."""
    headers = _headers(scope)
    if b"transfer-encoding" in headers:
        return True
    return _content_length(headers.get(b"content-length")) not in (None, 0)


@lru_cache(maxsize=64)
def _path_params(path: str) -> tuple[str | None, str | None]:
    """(cluster_id, network) from `/inject/k1/v1/k2/v2`, the way Istio reads its inject URL.

    Unknown keys and a trailing key without a value are ignored; `--slash--` in a value
    stands for `/` (a path segment cannot contain one).
    """
    parts = path.removeprefix("/inject").strip("/").split("/")
    params: dict[str, str] = {}
    for index in range(0, len(parts) - 1, 2):
        params[parts[index]] = parts[index + 1].replace("--slash--", "/")
    return params.get("cluster") or None, params.get("net") or None
