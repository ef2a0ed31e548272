"""Admission as the API server does it: selector semantics pick the webhook, a real
AdmissionReview goes over HTTPS to the real engine, the JSONPatch is applied, failures deny."""

from __future__ import annotations

import base64
import copy
import socket
from typing import Any, Literal

import orjson
import pytest
from local_testkit import running_webhook

from e2e.refusal_cases import CASES, Case
from sidemesh.api import names
from sidemesh.local.admission import (
    AdmissionError,
    WebhookCallError,
    admit,
    apply_pod_defaults,
    build_review,
    read_answer,
    webhook_entries,
)
from sidemesh.local.model import ControlPlaneRecord, ServiceRecord

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "web-5c7cb75d85-",
        "namespace": "demo",
        "labels": {"app": "web", "pod-template-hash": "5c7cb75d85"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-5c7cb75d85",
                "uid": "u",
                "controller": True,
            }
        ],
    },
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "python:3.11",
                "command": ["python3", "-m", "http.server", "8080"],
                "ports": [{"containerPort": 8080}],
            }
        ]
    },
}


def _plane(
    revision: str, *, default: bool = False, policy: Literal["Ignore", "Fail"] = "Fail"
) -> ControlPlaneRecord:
    return ControlPlaneRecord(
        revision=revision, default=default, created=1.0, failure_policy=policy
    )


def _services(*revisions: str) -> dict[str, ServiceRecord]:
    services = {}
    for index, revision in enumerate(revisions):
        name = names.service_name(revision)
        services[f"istio-system/{name}"] = ServiceRecord(
            namespace="istio-system",
            name=name,
            uid=name,
            created=1.0,
            manifest={},
            cluster_ip=f"10.96.0.{10 + index}",
        )
    return services


def _pod() -> dict[str, Any]:
    return apply_pod_defaults(copy.deepcopy(POD))


def test_defaults_before_webhooks() -> None:
    pod = _pod()
    assert pod["spec"]["serviceAccountName"] == "default"
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30


def test_namespace_label_selects_the_revision_and_the_real_engine_injects() -> None:
    with running_webhook("canary") as hook:
        result = admit(
            _pod(),
            "demo",
            namespace_labels={"istio.io/rev": "canary"},
            control_planes=[_plane("canary")],
            services=_services("canary"),
            ca_pem=hook.root_pem,
            connect=hook.connect,
        )
    assert result.injected_by == "canary"
    assert "rev.namespace.sidecar-injector.istio.io" in result.reason
    spec = result.pod["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]
    assert [c["name"] for c in spec["containers"]] == ["web", "istio-proxy"]
    status = orjson.loads(result.pod["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["revision"] == "canary"
    assert status["containers"] == ["istio-proxy"]
    review = orjson.loads(hook.requests[0])
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["request"]["operation"] == "CREATE"
    assert review["request"]["object"]["metadata"]["generateName"] == "web-5c7cb75d85-"


@pytest.mark.parametrize(
    ("namespace_labels", "pod_labels"),
    [
        ({}, {}),  # injection is off by default
        ({"istio-injection": "disabled", "istio.io/rev": "canary"}, {}),  # istio-injection wins
        ({"istio.io/rev": "other"}, {}),  # names no running revision
        ({"istio.io/rev": "canary"}, {"sidecar.istio.io/inject": "false"}),
    ],  # pod opts out
)
def test_no_webhook_matches_so_no_call(
    namespace_labels: dict[str, str], pod_labels: dict[str, str]
) -> None:
    pod = _pod()
    pod["metadata"]["labels"].update(pod_labels)

    def never(host: str, port: int, timeout: float) -> socket.socket:
        raise AssertionError("no webhook should be called")

    result = admit(
        pod,
        "demo",
        namespace_labels=namespace_labels,
        control_planes=[_plane("canary")],
        services=_services("canary"),
        ca_pem="",
        connect=never,
    )
    assert result.injected_by is None and result.pod == pod and result.reason


def test_istio_injection_enabled_needs_a_default_revision() -> None:
    with running_webhook("default") as hook:
        result = admit(
            _pod(),
            "demo",
            namespace_labels={"istio-injection": "enabled"},
            control_planes=[_plane("default", default=True)],
            services=_services("default"),
            ca_pem=hook.root_pem,
            connect=hook.connect,
        )
    assert result.injected_by == "default"
    assert webhook_entries([_plane("default", default=True)])[2].name == (
        "namespace.sidecar-injector.istio.io"
    )


def test_unreachable_webhook_fails_closed() -> None:
    def refused(host: str, port: int, timeout: float) -> socket.socket:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(WebhookCallError) as caught:
        admit(
            _pod(),
            "demo",
            namespace_labels={"istio.io/rev": "canary"},
            control_planes=[_plane("canary")],
            services=_services("canary"),
            ca_pem="x",
            connect=refused,
        )
    assert str(caught.value).startswith(
        'Internal error occurred: failed calling webhook "rev.namespace.sidecar-injector.istio.io":'
        ' failed to call webhook: Post "https://istiod-canary.istio-system.svc:443/inject'
    )
    assert "Connection refused" in str(caught.value)


def test_failure_policy_ignore_admits_without_the_webhook() -> None:
    def refused(host: str, port: int, timeout: float) -> socket.socket:
        raise ConnectionRefusedError(111, "Connection refused")

    result = admit(
        _pod(),
        "demo",
        namespace_labels={"istio.io/rev": "canary"},
        control_planes=[_plane("canary", policy="Ignore")],
        services=_services("canary"),
        ca_pem="x",
        connect=refused,
    )
    assert result.injected_by is None
    assert "failurePolicy Ignore" in result.warnings[0]


def test_untrusted_certificate_is_a_call_failure() -> None:
    other = None
    with running_webhook("canary") as first, running_webhook("canary") as second:
        other = first.root_pem
        with pytest.raises(WebhookCallError, match="CERTIFICATE_VERIFY_FAILED"):
            admit(
                _pod(),
                "demo",
                namespace_labels={"istio.io/rev": "canary"},
                control_planes=[_plane("canary")],
                services=_services("canary"),
                ca_pem=other,
                connect=second.connect,
            )


def test_denial_is_reported_as_the_api_server_words_it() -> None:
    def deny(body: bytes) -> bytes:
        uid = orjson.loads(body)["request"]["uid"]
        return orjson.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": False, "status": {"message": "bad annotation"}},
            }
        )

    with running_webhook("canary", answer=deny) as hook, pytest.raises(AdmissionError) as caught:
        admit(
            _pod(),
            "demo",
            namespace_labels={"istio.io/rev": "canary"},
            control_planes=[_plane("canary", policy="Ignore")],
            services=_services("canary"),
            ca_pem=hook.root_pem,
            connect=hook.connect,
        )
    # A denial is not a call failure: failurePolicy Ignore does not let the pod through.
    assert not isinstance(caught.value, WebhookCallError)
    assert str(caught.value) == (
        'admission webhook "rev.namespace.sidecar-injector.istio.io" denied the request: '
        "bad annotation"
    )


def _answer(uid: str, **response: Any) -> bytes:
    return orjson.dumps({"response": {"uid": uid, **response}})


def test_read_answer() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    patch = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    encoded = base64.b64encode(orjson.dumps(patch)).decode()
    answer = read_answer(
        _answer("1", allowed=True, patchType="JSONPatch", patch=encoded, warnings=["w"]),
        pod,
        request_uid="1",
        webhook="w",
    )
    assert answer.pod["metadata"]["labels"] == {"a": "b"} and answer.warnings == ("w",)
    assert pod == {"metadata": {"name": "p"}, "spec": {"containers": []}}  # not mutated
    assert not read_answer(_answer("1", allowed=True), pod, request_uid="1", webhook="w").patched
    with pytest.raises(WebhookCallError, match="does not match the request"):
        read_answer(_answer("2", allowed=True), pod, request_uid="1", webhook="w")
    bad = base64.b64encode(orjson.dumps([{"op": "remove", "path": "/nope"}])).decode()
    with pytest.raises(WebhookCallError, match="does not apply"):
        read_answer(
            _answer("1", allowed=True, patchType="JSONPatch", patch=bad),
            pod,
            request_uid="1",
            webhook="w",
        )


def test_review_shape() -> None:
    review = orjson.loads(build_review(_pod(), "demo", uid="abc"))
    request = review["request"]
    assert request["uid"] == "abc" and request["namespace"] == "demo"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "pods"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_refusals_and_warnings_read_as_on_the_real_api_server(case: Case) -> None:
    """The table tests/e2e/test_e2e_refusals.py checks against kubectl and a real API server."""
    pod = apply_pod_defaults(case.pod())
    pod["metadata"]["namespace"] = "demo"
    with running_webhook("canary") as hook:
        try:
            result = admit(
                pod,
                "demo",
                namespace_labels={"istio.io/rev": "canary"},
                control_planes=[_plane("canary")],
                services=_services("canary"),
                ca_pem=hook.root_pem,
                connect=hook.connect,
            )
        except AdmissionError as exc:
            assert not isinstance(exc, WebhookCallError)
            assert str(exc) == case.refusal
            return
    assert case.refusal is None, "the pod was admitted"
    assert result.warnings == case.warnings
    assert result.injected_by == "canary"


def test_a_denial_without_status_reads_without_explanation() -> None:
    """The API server reads only `response.status`; anything else (e.g. a `result` key) is
    dropped, and the denial then has no reason."""
    for response in ({"result": {"message": "m"}}, {}, {"status": {"reason": "Because"}}):
        body = _answer("1", allowed=False, **response)
        with pytest.raises(AdmissionError) as caught:
            read_answer(body, {}, request_uid="1", webhook="w")
        expected = ": Because" if response.get("status") else " without explanation"
        assert str(caught.value) == f'admission webhook "w" denied the request{expected}'
