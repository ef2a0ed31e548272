"""The validating webhook (`POST /validate`): Istio configuration checked by the same group
checks as `sidemesh validate`, refused with the same words; hostile reviews never crash or
hang it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from webhook_testkit import FakeAdmitter, call, post_review

from sidemesh.cli.validate import GROUP_CHECKS, check_document
from sidemesh.webhook.app import WebhookApp
from sidemesh.webhook.validation import MAX_PROBLEMS_SHOWN, review_validation

UID = "7f0b2b8c-5f5f-11e8-bc74-36e6bb280816"

VALID_VS: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
}
INVALID_VS: dict[str, Any] = {
    **VALID_VS,
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "route": [{"destination": {"host": "reviews"}}],
                "retries": {"attempts": 3, "retryOn": "sometimes"},
            }
        ],
    },
}


def review(obj: Any, *, operation: str = "CREATE", **request: Any) -> dict[str, Any]:
    kind = {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": kind,
            "operation": operation,
            "namespace": "shop",
            "object": obj,
            **request,
        },
    }


def answer(body: Any) -> dict[str, Any]:
    result = review_validation(orjson.dumps(body), GROUP_CHECKS)
    assert result.status == 200, result.body
    response: dict[str, Any] = orjson.loads(result.body)["response"]
    assert response["uid"] == UID
    return response


def test_a_valid_object_is_allowed() -> None:
    assert answer(review(VALID_VS)) == {"uid": UID, "allowed": True}


def test_an_invalid_object_is_refused_with_the_words_validate_prints() -> None:
    response = answer(review(INVALID_VS))
    assert response["allowed"] is False
    problems = check_document(INVALID_VS)
    assert problems  # the offline door refuses it too
    assert response["status"]["message"] == "\n".join(
        f"VirtualService shop/reviews: {problem}" for problem in problems
    )
    assert "spec.http[0].retries.retryOn" in response["status"]["message"]


def test_the_namespace_comes_from_the_request_when_the_object_has_none() -> None:
    obj = {**INVALID_VS, "metadata": {"name": "reviews"}}
    message = answer(review(obj, namespace="payments"))["status"]["message"]
    assert message.startswith("VirtualService payments/reviews: spec.http[0].retries.retryOn")


def test_update_is_validated_and_delete_is_not() -> None:
    assert answer(review(INVALID_VS, operation="UPDATE"))["allowed"] is False
    assert answer(review(None, operation="DELETE"))["allowed"] is True


def test_peer_authentication_goes_to_the_security_check() -> None:
    bad = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"mtls": {"mode": "SOMETIMES"}},
    }
    kind = {"group": "security.istio.io", "version": "v1", "kind": "PeerAuthentication"}
    response = answer(review(bad, kind=kind))
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("PeerAuthentication shop/default: ")


# One invalid object per group the registry routes today, and the field its refusal names.
INVALID_BY_GROUP = {
    "networking.istio.io": (INVALID_VS, "spec.http[0].retries.retryOn"),
    "security.istio.io": ({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-some", "namespace": "shop"}, "spec": {"action": "MAYBE"},
    }, "spec.action"),
    "telemetry.istio.io": ({
        "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "traces", "namespace": "shop"},
        "spec": {"tracing": [{"randomSamplingPercentage": 150}]},
    }, "spec.tracing[0].randomSamplingPercentage"),
}  # fmt: skip


@pytest.mark.parametrize("group", sorted(GROUP_CHECKS))
def test_every_registered_group_is_routed_to_its_check(group: str) -> None:
    obj, field = INVALID_BY_GROUP[group]
    kind = {"group": group, "version": "v1", "kind": obj["kind"]}
    response = answer(review(obj, kind=kind))
    assert response["allowed"] is False
    name = f"{obj['kind']} shop/{obj['metadata']['name']}"
    assert response["status"]["message"].startswith(f"{name}: {field}")


def test_a_kind_no_check_knows_is_admitted_with_a_warning() -> None:
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "vm", "namespace": "shop"},
        "spec": {"address": "10.0.0.1"},
    }
    kind = {"group": "networking.istio.io", "version": "v1", "kind": "WorkloadEntry"}
    response = answer(review(entry, kind=kind))
    assert response["allowed"] is True
    assert response["warnings"] == [
        "WorkloadEntry shop/vm: sidemesh does not validate kind 'WorkloadEntry'"
    ]


def test_many_problems_are_cut_short() -> None:
    hosts = ["*"] * (MAX_PROBLEMS_SHOWN + 5)
    obj = {**VALID_VS, "spec": {**VALID_VS["spec"], "hosts": hosts}}
    lines = answer(review(obj))["status"]["message"].splitlines()
    assert len(lines) == MAX_PROBLEMS_SHOWN + 1
    assert lines[-1].endswith("more problem(s)")


def test_a_check_that_raises_refuses_the_object() -> None:
    def broken(document: Mapping[str, Any]) -> tuple[str, ...] | None:
        raise RuntimeError("boom")

    result = review_validation(orjson.dumps(review(VALID_VS)), {"networking.istio.io": broken})
    response = orjson.loads(result.body)["response"]
    assert (result.status, result.code, response["allowed"]) == (200, "internal-error", False)
    assert response["status"]["message"] == "validation failed: RuntimeError: boom"
    assert isinstance(result.error, RuntimeError)


# Hostile or broken reviews: (name, body, expected status, expected code, words in the answer).
HOSTILE: list[tuple[str, bytes, int, str, str]] = [
    ("not JSON", b"{", 400, "invalid-json", "not valid JSON"),
    ("JSON array", b"[]", 400, "invalid-review", "must be a JSON object"),
    ("no apiVersion", orjson.dumps({"kind": "AdmissionReview"}), 400, "invalid-review",
     "unsupported AdmissionReview apiVersion"),
    ("no request", orjson.dumps({**review(VALID_VS), "request": None}), 400, "invalid-review",
     "no request object"),
    ("no uid", orjson.dumps({**review(VALID_VS), "request": {"operation": "CREATE"}}), 400,
     "invalid-review", "no uid"),
    ("object is a string", orjson.dumps(review("VirtualService")), 200, "invalid-request",
     "request.object must be an object, got a string"),
    ("object without apiVersion", orjson.dumps(review({"kind": "VirtualService"})), 200,
     "invalid-request", "request.object.apiVersion must be GROUP/VERSION"),
    ("apiVersion not a string", orjson.dumps(review({**VALID_VS, "apiVersion": 7})), 200,
     "invalid-request", "got a number"),
    ("object claims another kind",
     orjson.dumps(review({**VALID_VS, "kind": "DestinationRule"})), 200, "invalid-request",
     "request.kind says 'networking.istio.io' 'VirtualService'"),
    ("metadata is a list", orjson.dumps(review({**VALID_VS, "metadata": []})), 200,
     "invalid-request", "request.object.metadata must be an object"),
    ("spec is a list", orjson.dumps(review({**VALID_VS, "spec": []})), 200, "invalid",
     "VirtualService shop/reviews: spec"),
    ("deep nesting", orjson.dumps(review({**VALID_VS, "spec": {"hosts": [[[[["x"]]]]]}})), 200,
     "invalid", "spec.hosts"),
    ("name not a string", orjson.dumps(review({**VALID_VS, "metadata": {"name": {"a": 1}}})),
     200, "invalid", "metadata.name"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "code", "words"), [h[1:] for h in HOSTILE],
                         ids=[h[0] for h in HOSTILE])  # fmt: skip
def test_hostile_reviews_get_an_answer(body: bytes, status: int, code: str, words: str) -> None:
    result = review_validation(body, GROUP_CHECKS)
    assert (result.status, result.code) == (status, code)
    assert words in result.body.decode()
    if status == 200:
        assert orjson.loads(result.body)["response"]["allowed"] is False


# -- over HTTP (the ASGI app, in memory) ------------------------------------------------------


async def test_the_app_serves_validate_and_counts_outcomes() -> None:
    app = WebhookApp(FakeAdmitter(), validation=GROUP_CHECKS)
    allowed = await post_review(app, review(VALID_VS), path="/validate")
    refused = await post_review(app, review(INVALID_VS), path="/validate")
    garbage = await call(app, path="/validate", body=b"not json")
    assert allowed.json()["response"]["allowed"] is True
    assert refused.json()["response"]["allowed"] is False
    assert garbage is not None and garbage.status == 400
    metrics = await call(app, method="GET", path="/metrics")
    assert metrics is not None
    text = metrics.body.decode()
    assert "galley_validation_passed 1\n" in text
    assert 'galley_validation_failed{reason="invalid"} 1\n' in text
    assert "galley_validation_http_error 1\n" in text


async def test_validate_shares_the_request_checks_of_inject() -> None:
    app = WebhookApp(FakeAdmitter(), validation=GROUP_CHECKS)
    wrong_type = await call(app, path="/validate", body=b"{}", content_type=b"text/plain")
    empty = await call(app, path="/validate", body=b"")
    get = await call(app, method="GET", path="/validate")
    assert wrong_type is not None and wrong_type.status == 415
    assert empty is not None and empty.status == 400
    assert get is not None and get.status == 405


async def test_without_checks_validate_is_not_served() -> None:
    app = WebhookApp(FakeAdmitter())
    response = await post_review(app, review(VALID_VS), path="/validate")
    assert response.status == 404
