"""The ASGI app, called in memory: routes, HTTP errors, body limits, path parameters, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
from webhook_testkit import PATCH, FakeAdmitter, call, denied, make_review, post_review, skipped

from sidemesh.webhook.app import WebhookApp
from sidemesh.webhook.replay import ReplayMemo

REVIEW = orjson.dumps(make_review(uid="uid-1"))


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
async def test_inject_answers_with_a_review(api_version: str) -> None:
    app = WebhookApp(FakeAdmitter())
    response = await post_review(app, make_review(api_version=api_version, uid="uid-7"))
    assert response.status == 200
    assert response.headers[b"content-type"] == b"application/json"
    body = response.json()
    assert body["apiVersion"] == api_version
    assert body["response"]["uid"] == "uid-7"
    assert body["response"]["allowed"] is True
    assert body["response"]["patchType"] == "JSONPatch"
    assert response.patch() == PATCH
    assert b"connection" not in response.headers  # keep-alive stays on


async def test_body_may_arrive_in_chunks() -> None:
    app = WebhookApp(FakeAdmitter())
    pieces = [REVIEW[i : i + 7] for i in range(0, len(REVIEW), 7)]
    response = await call(app, body=pieces)
    assert response is not None and response.status == 200
    assert response.json()["response"]["uid"] == "uid-1"


@pytest.mark.parametrize(
    "content_type", [b"application/json", b"application/json; charset=utf-8", b"Application/JSON"]
)
async def test_json_content_types_are_accepted(content_type: bytes) -> None:
    response = await call(WebhookApp(FakeAdmitter()), body=REVIEW, content_type=content_type)
    assert response is not None and response.status == 200


@pytest.mark.parametrize(
    "content_type", [None, b"text/plain", b"application/yaml", b"application/jsonx", b""]
)
async def test_other_content_types_are_415(content_type: bytes | None) -> None:
    admitter = FakeAdmitter()
    response = await call(WebhookApp(admitter), body=REVIEW, content_type=content_type)
    assert response is not None and response.status == 415
    assert admitter.calls == []


async def test_empty_body_is_400() -> None:
    response = await call(WebhookApp(FakeAdmitter()), body=b"")
    assert response is not None and response.status == 400
    assert b"no body" in response.body


async def test_malformed_json_is_400() -> None:
    response = await call(WebhookApp(FakeAdmitter()), body=b"{")
    assert response is not None and response.status == 400
    assert response.headers[b"content-type"].startswith(b"text/plain")


async def test_declared_oversize_body_is_413_without_reading_it() -> None:
    app = WebhookApp(FakeAdmitter(), max_body_bytes=1000)
    headers = [(b"content-length", b"1001")]
    response = await call(app, body=[b"x" * 500, b"x" * 501], headers=headers)
    assert response is not None and response.status == 413
    assert response.chunks_left == 2
    assert response.headers[b"connection"] == b"close"


async def test_streamed_oversize_body_is_cut_off_at_the_limit() -> None:
    app = WebhookApp(FakeAdmitter(), max_body_bytes=1000)
    response = await call(app, body=[b"x" * 600] * 10)  # chunked: no content-length
    assert response is not None and response.status == 413
    assert response.chunks_left == 8
    assert response.headers[b"connection"] == b"close"


async def test_default_limit_is_6_mib() -> None:
    app = WebhookApp(FakeAdmitter())
    size = 6 * 1024 * 1024
    over = await call(app, body=b"", headers=[(b"content-length", str(size + 1).encode())])
    assert over is not None and over.status == 413
    padded = REVIEW[:-1] + b"," + b'"pad":"' + b"x" * (size - len(REVIEW) - 10) + b'"}'
    assert len(padded) <= size
    at_limit = await call(app, body=padded)
    assert at_limit is not None and at_limit.status == 200


async def test_client_disconnect_mid_body_sends_nothing() -> None:
    admitter = FakeAdmitter()
    response = await call(WebhookApp(admitter), body=[b"{", b"}"], disconnect=True)
    assert response is None
    assert admitter.calls == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_inject_only_takes_post(method: str) -> None:
    response = await call(WebhookApp(FakeAdmitter()), method=method, body=REVIEW)
    assert response is not None and response.status == 405
    assert response.headers[b"allow"] == b"POST"


@pytest.mark.parametrize("path", ["/", "/injectx", "/inject2/a/b", "/metrics/x", "/healthz"])
async def test_unknown_paths_are_404(path: str) -> None:
    response = await call(WebhookApp(FakeAdmitter()), path=path, body=REVIEW)
    assert response is not None and response.status == 404


async def test_ready() -> None:
    response = await call(WebhookApp(FakeAdmitter()), method="GET", path="/ready")
    assert response is not None and (response.status, response.body) == (200, b"ok\n")
    post = await call(WebhookApp(FakeAdmitter()), method="POST", path="/ready")
    assert post is not None and post.status == 405


@pytest.mark.parametrize(
    ("path", "cluster_id", "network"),
    [
        ("/inject", None, None),
        ("/inject/", None, None),
        ("/inject/cluster/east", "east", None),
        ("/inject/cluster/east/net/network-1", "east", "network-1"),
        ("/inject/net/n2/cluster/c2/", "c2", "n2"),
        ("/inject/foo/bar/net/n3", None, "n3"),  # unknown keys are ignored
        ("/inject/cluster/c4/net", "c4", None),  # a key without a value is ignored
        ("/inject/net/a--slash--b", None, "a/b"),
    ],
)
async def test_path_parameters_reach_admit(
    path: str, cluster_id: str | None, network: str | None
) -> None:
    admitter = FakeAdmitter()
    response = await post_review(WebhookApp(admitter), make_review(), path=path)
    assert response.status == 200
    [seen] = admitter.calls
    assert (seen["cluster_id"], seen["network"]) == (cluster_id, network)


async def test_exception_in_admit_is_a_denial_not_a_500() -> None:
    app = WebhookApp(FakeAdmitter(error=KeyError("spec")))
    response = await post_review(app, make_review(uid="boom"))
    assert response.status == 200
    body = response.json()["response"]
    assert body["uid"] == "boom" and body["allowed"] is False
    assert "KeyError" in body["status"]["message"]


def metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(app: WebhookApp) -> str:
    response = await call(app, method="GET", path="/metrics")
    assert response is not None and response.status == 200
    assert response.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    return response.body.decode()


async def test_metrics_count_every_outcome() -> None:
    admitter = FakeAdmitter()
    # This admitter changes its answer between identical requests; no replay memo for it.
    app = WebhookApp(admitter, replay=ReplayMemo(max_entries=0))
    await post_review(app, make_review())
    admitter.outcome = skipped("policy-disabled")
    await post_review(app, make_review())
    admitter.outcome = denied(code="invalid-annotation")
    await post_review(app, make_review())
    await call(app, body=b"")
    await call(app, body=REVIEW, content_type=b"text/plain")
    admitter.error = RuntimeError("x")
    await post_review(app, make_review())

    text = await scrape(app)
    assert metric(text, "sidecar_injection_requests_total") == 6
    assert metric(text, "sidecar_injection_success_total") == 1
    assert metric(text, 'sidecar_injection_skip_total{reason="policy-disabled"}') == 1
    failures = {
        "invalid-annotation": 1, "empty-body": 1, "unsupported-media-type": 1, "internal-error": 1,
    }  # fmt: skip
    for reason, count in failures.items():
        assert metric(text, f'sidecar_injection_failure_total{{reason="{reason}"}}') == count
    assert metric(text, "sidecar_injection_time_seconds_count") == 6
    assert metric(text, 'sidecar_injection_time_seconds_bucket{le="+Inf"}') == 6


async def test_metrics_and_ready_are_not_counted_as_injections() -> None:
    app = WebhookApp(FakeAdmitter())
    await call(app, method="GET", path="/ready")
    await scrape(app)
    assert metric(await scrape(app), "sidecar_injection_requests_total") == 0


async def test_non_http_scopes_are_ignored() -> None:
    app = WebhookApp(FakeAdmitter())

    async def receive() -> dict[str, str]:
        raise AssertionError("not called")

    async def send(message: object) -> None:
        raise AssertionError("not called")

    await app({"type": "lifespan"}, receive, send)


async def test_stalled_body_is_408_and_closes() -> None:
    app = WebhookApp(FakeAdmitter(), body_timeout_seconds=0.05)
    scope = {
        "type": "http", "method": "POST", "path": "/inject",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip
    sent: list[MutableMapping[str, Any]] = []
    stall = asyncio.Event()

    async def receive() -> dict[str, object]:
        await stall.wait()  # the client never sends its body
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async with asyncio.timeout(10):
        await app(scope, receive, send)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    text = (await scrape(app)).splitlines()
    assert 'sidecar_injection_failure_total{reason="body-timeout"} 1' in text


async def test_server_cancellation_is_not_mistaken_for_a_timeout() -> None:
    app = WebhookApp(FakeAdmitter(), body_timeout_seconds=60)
    scope = {
        "type": "http", "method": "POST", "path": "/inject",
        "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    started = asyncio.Event()

    async def receive() -> dict[str, object]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        raise AssertionError("nothing is sent to a cancelled request")

    task = asyncio.create_task(app(scope, receive, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
