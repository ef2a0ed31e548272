"""review(): AdmissionReview bytes in, response bytes out (no HTTP)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from webhook_testkit import PATCH, FakeAdmitter, denied, make_pod, make_review, skipped

from sidemesh.inject.outcome import Outcome
from sidemesh.inject.warnings import InjectionWarning
from sidemesh.webhook.admission import review


def answer(document: Any, admitter: FakeAdmitter | None = None, **params: Any) -> dict[str, Any]:
    result = review(orjson.dumps(document), admitter or FakeAdmitter(), **params)
    assert result.status == 200
    body: dict[str, Any] = orjson.loads(result.body)
    assert body["kind"] == "AdmissionReview"
    return body


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_injected_pod_gets_a_base64_json_patch(api_version: str) -> None:
    body = answer(make_review(api_version=api_version, uid="abc-123"))
    assert body["apiVersion"] == api_version
    response = body["response"]
    assert response["uid"] == "abc-123"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(response["patch"])) == PATCH
    assert "status" not in response and "warnings" not in response


def test_skipped_pod_is_allowed_without_patch() -> None:
    response = answer(make_review(), FakeAdmitter(outcome=skipped()))["response"]
    assert response == {"uid": make_review()["request"]["uid"], "allowed": True}


def test_denied_pod_carries_the_reason_as_message() -> None:
    admitter = FakeAdmitter(outcome=denied("annotation sidecar.istio.io/proxyCPU: bad quantity"))
    result = review(orjson.dumps(make_review()), admitter)
    response = orjson.loads(result.body)["response"]
    assert response["allowed"] is False
    assert response["status"] == {"message": "annotation sidecar.istio.io/proxyCPU: bad quantity"}
    assert "patch" not in response
    assert (result.kind, result.code) == ("denied", "invalid-annotation")


def test_warnings_are_passed_on() -> None:
    outcome = Outcome(
        kind="injected", code="injected", reason="", revision="default",
        patch=b"[]", warnings=(InjectionWarning("SM1101", "port 15001 is the proxy's"),),
    )  # fmt: skip
    response = answer(make_review(), FakeAdmitter(outcome=outcome))["response"]
    assert response["warnings"] == ["SM1101: port 15001 is the proxy's"]


def test_admit_sees_pod_without_managed_fields_and_the_request_namespace() -> None:
    admitter = FakeAdmitter()
    pod = make_pod(managedFields=[{"manager": "kubectl"}], labels={"app": "web"})
    answer(make_review(pod=pod, namespace="shop"), admitter, cluster_id="c1", network="n1")
    [call] = admitter.calls
    assert "managedFields" not in call["pod"]["metadata"]
    assert call["pod"]["metadata"]["labels"] == {"app": "web"}
    assert call["namespace"] == "shop"
    assert (call["cluster_id"], call["network"]) == ("c1", "n1")


@pytest.mark.parametrize("namespace", [None, ""])
def test_namespace_falls_back_to_the_pod(namespace: str | None) -> None:
    admitter = FakeAdmitter()
    document = make_review(namespace=namespace)
    if namespace is None:
        del document["request"]["namespace"]
    answer(document, admitter)
    assert admitter.calls[0]["namespace"] == "demo"


def test_exception_in_admit_denies_the_pod() -> None:
    admitter = FakeAdmitter(error=RuntimeError("template exploded"))
    result = review(orjson.dumps(make_review(uid="u1")), admitter)
    response = orjson.loads(result.body)["response"]
    assert result.status == 200
    assert response["uid"] == "u1" and response["allowed"] is False
    assert "RuntimeError: template exploded" in response["status"]["message"]
    assert isinstance(result.error, RuntimeError)
    assert (result.kind, result.code) == ("denied", "internal-error")


def test_unencodable_exception_message_still_answers() -> None:
    admitter = FakeAdmitter(error=ValueError("lone surrogate \udc80"))
    response = answer(make_review(), admitter)["response"]
    assert response["allowed"] is False
    assert "\\udc80" in response["status"]["message"]


def test_unknown_outcome_kind_fails_closed() -> None:
    outcome = Outcome(kind="maybe", code="x", reason="", revision="default")  # type: ignore[arg-type]
    response = answer(make_review(), FakeAdmitter(outcome=outcome))["response"]
    assert response["allowed"] is False


# Bodies that cannot be answered with an AdmissionReview: 400, plain text.
REJECTED: dict[str, bytes] = {
    "not JSON": b"{not json",
    "not UTF-8": b'{"a": "\xff"}',
    "JSON array": b"[]",
    "JSON string": b'"AdmissionReview"',
    "JSON null": b"null",
    "no apiVersion": orjson.dumps({"kind": "AdmissionReview", "request": {"uid": "u"}}),
    "apiVersion a list": orjson.dumps({**make_review(), "apiVersion": []}),
    "unknown apiVersion": orjson.dumps(make_review(api_version="admission.k8s.io/v2")),
    "wrong kind": orjson.dumps({**make_review(), "kind": "Pod"}),
    "no request": orjson.dumps({**make_review(), "request": None}),
    "request is a list": orjson.dumps({**make_review(), "request": []}),
    "no uid": orjson.dumps(make_review(uid=None)),  # type: ignore[arg-type]
    "empty uid": orjson.dumps(make_review(uid="")),
    "numeric uid": orjson.dumps(make_review(uid=7)),  # type: ignore[arg-type]
    "deeply nested": b"[" * 5000 + b"]" * 5000,
}


@pytest.mark.parametrize("body", REJECTED.values(), ids=REJECTED.keys())
def test_unanswerable_bodies_are_400(body: bytes) -> None:
    admitter = FakeAdmitter()
    result = review(body, admitter)
    assert result.status == 400
    assert result.kind == "rejected"
    assert result.body.endswith(b"\n") and len(result.body) < 500
    assert admitter.calls == []


def _review_with(**request: Any) -> dict[str, Any]:
    document = make_review()
    for key, value in request.items():
        if value is ...:
            del document["request"][key]
        else:
            document["request"][key] = value
    return document


# Well-formed reviews whose request is not an admissible pod: 200, allowed false, uid echoed.
DENIED: dict[str, dict[str, Any]] = {
    "object missing": _review_with(object=...),
    "object null": _review_with(object=None),
    "object a list": _review_with(object=[make_pod()]),
    "object a Service": _review_with(object={**make_pod(), "kind": "Service"}),
    "request.kind Deployment": _review_with(kind={"group": "apps", "version": "v1",
                                                  "kind": "Deployment"}),
    "request.kind missing": _review_with(kind=...),
    "request.kind null": _review_with(kind=None),
    "request.kind a string": _review_with(kind="Pod"),
    "metadata null": _review_with(object={**make_pod(), "metadata": None}),
    "metadata a string": _review_with(object={**make_pod(), "metadata": "x"}),
    "spec null": _review_with(object={**make_pod(), "spec": None}),
    "spec missing": _review_with(object={"kind": "Pod", "metadata": {"namespace": "demo"}}),
    "namespace a number": _review_with(namespace=3),
    "no namespace anywhere": _review_with(
        namespace=..., object={"metadata": {"name": "web"}, "spec": {}}
    ),
}  # fmt: skip


@pytest.mark.parametrize("document", DENIED.values(), ids=DENIED.keys())
def test_inadmissible_requests_are_denied_with_a_reason(document: dict[str, Any]) -> None:
    admitter = FakeAdmitter()
    body = answer(document, admitter)
    response = body["response"]
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert response["uid"] == document["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["message"]
    assert admitter.calls == []
