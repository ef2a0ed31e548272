"""Fuzzing the ASGI app: whatever arrives, it answers promptly with a known status, and every
200 is a well-formed AdmissionReview that echoes the request's uid."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_testkit import FakeAdmitter, Response, call, denied, make_pod, make_review, skipped

from sidemesh.webhook.admission import API_VERSIONS
from sidemesh.webhook.app import WebhookApp

STATUSES = {200, 400, 404, 405, 413, 415}
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=20,
)  # fmt: skip


def _admitter(behaviour: str) -> FakeAdmitter:
    if behaviour == "skip":
        return FakeAdmitter(outcome=skipped())
    if behaviour == "deny":
        return FakeAdmitter(outcome=denied())
    if behaviour == "raise":
        return FakeAdmitter(error=RuntimeError("engine bug"))
    return FakeAdmitter()


admitters = st.sampled_from(["inject", "skip", "deny", "raise"]).map(_admitter)


def run(app: WebhookApp, **request: Any) -> Response:
    response = asyncio.run(call(app, **request))
    assert response is not None
    assert response.status in STATUSES
    return response


def check_review(response: Response, sent: Any) -> None:
    """A 200 from /inject is an AdmissionReview answering `sent`."""
    assert response.status == 200
    body = response.json()
    assert body["kind"] == "AdmissionReview"
    assert body["apiVersion"] in API_VERSIONS
    answer = body["response"]
    assert isinstance(answer["allowed"], bool)
    assert isinstance(sent, dict) and sent["apiVersion"] == body["apiVersion"]
    uid = sent["request"]["uid"]
    assert isinstance(uid, str) and answer["uid"] == uid
    if answer["allowed"] is False:
        assert isinstance(answer["status"]["message"], str)
    if "patch" in answer:
        assert answer["patchType"] == "JSONPatch"
        assert isinstance(orjson.loads(base64.b64decode(answer["patch"], validate=True)), list)


@FUZZ
@given(body=st.binary(max_size=2000), admitter=admitters)
def test_arbitrary_bytes(body: bytes, admitter: FakeAdmitter) -> None:
    response = run(WebhookApp(admitter), body=body)
    assert response.status in {200, 400}
    if response.status == 200:
        check_review(response, orjson.loads(body))


@FUZZ
@given(document=json_values, admitter=admitters)
def test_arbitrary_json(document: Any, admitter: FakeAdmitter) -> None:
    response = run(WebhookApp(admitter), body=orjson.dumps(document))
    assert response.status in {200, 400}
    if response.status == 200:
        check_review(response, document)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


VALID = make_review(pod=make_pod(managedFields=[{"manager": "m"}], labels={"app": "a"}))
VALID_PATHS = _paths(VALID)[1:]


@st.composite
def mutated_reviews(draw: st.DrawFn) -> Any:
    document = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(VALID_PATHS))
        parent: Any = document
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced this branch
    return document


@FUZZ
@given(document=mutated_reviews(), admitter=admitters)
def test_mutated_reviews(document: Any, admitter: FakeAdmitter) -> None:
    response = run(WebhookApp(admitter), body=orjson.dumps(document))
    request = document.get("request") if isinstance(document, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    if response.status == 200:
        check_review(response, document)
    else:
        assert response.status == 400
        # 400 only when there is no AdmissionReview to answer
        assert (
            not isinstance(uid, str)
            or not uid
            or document.get("apiVersion") not in list(API_VERSIONS)
            or document.get("kind") != "AdmissionReview"
        )


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "BREW"]),
    path=st.sampled_from(["/inject", "/inject/", "/ready", "/metrics", "/"])
    | st.text(max_size=30).map(lambda text: "/" + text),
    content_type=st.none() | st.binary(max_size=40),
    content_length=st.none() | st.binary(max_size=12),
    chunks=st.lists(st.binary(max_size=300), max_size=5),
)
def test_arbitrary_requests(
    method: str,
    path: str,
    content_type: bytes | None,
    content_length: bytes | None,
    chunks: list[bytes],
) -> None:
    headers = [] if content_length is None else [(b"content-length", content_length)]
    app = WebhookApp(FakeAdmitter(), max_body_bytes=600)
    run(app, method=method, path=path, body=chunks, headers=headers, content_type=content_type)
