"""AdmissionReview in, AdmissionReview out: the pure core of the injection webhook.

No sockets, clocks or logging here: `review()` takes the request body and an admitter and
returns the response body plus what the HTTP layer needs for status and metrics.

This is the hot path (every pod creation in the cluster goes through it), so it works on the
dicts orjson produces with small typed accessors instead of a validation model: the only
fields read are the handful the response depends on, and the pod is handed to the engine as
decoded. Failure policy follows Istio: anything that cannot be answered as an AdmissionReview
(no uid to echo) is a 400; everything else is a 200 review with `allowed: false` and a message,
which the API server turns into a denial because the webhook is `failurePolicy: Fail`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import orjson

from sidemesh.inject.outcome import Outcome

API_VERSIONS: Final = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})

# Codes for requests that never reached the engine; the engine's own outcome codes are used
# for everything else. They label metrics, so the set must stay small and fixed.
CODE_INVALID_JSON: Final = "invalid-json"
CODE_INVALID_REVIEW: Final = "invalid-review"
CODE_INVALID_REQUEST: Final = "invalid-request"
CODE_ADMIT_ERROR: Final = "internal-error"

_NO_METADATA: Final[dict[str, Any]] = {}  # read-only stand-in for an absent metadata

_OUTCOME_KINDS: Final = frozenset({"injected", "skipped", "denied"})

ResultKind = Literal["injected", "skipped", "denied", "rejected"]


class Admitter(Protocol):
    """What the webhook needs from the injection engine (`sidemesh.inject.engine.Injector`)."""

    @property
    def revision(self) -> str: ...

    def admit(
        self,
        pod: dict[str, Any],
        namespace: str,
        *,
        cluster_id: str | None,
        network: str | None,
    ) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class ReviewResult:
    """The answer to one request body.

    `kind` is the outcome kind, or "rejected" when the body was not a usable AdmissionReview
    (status 400, plain-text body). `error` carries an exception raised by the admitter so the
    caller can log it with its traceback; the response already denies the pod.
    """

    status: int
    body: bytes
    kind: ResultKind
    code: str
    error: Exception | None = None


class _Rejected(Exception):
    """The request cannot be answered with an AdmissionReview (no apiVersion or uid to echo)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Denied(Exception):
    """The AdmissionReview is well formed but its request is not an admissible pod."""


def review(
    body: bytes,
    admitter: Admitter,
    *,
    cluster_id: str | None = None,
    network: str | None = None,
) -> ReviewResult:
    """Answer one AdmissionReview request body. Never raises."""
    try:
        api_version, request, uid = _parse_envelope(body)
    except _Rejected as rejected:
        return ReviewResult(400, f"{rejected}\n".encode(), "rejected", rejected.code)
    try:
        pod, namespace = _pod_and_namespace(request)
    except _Denied as denied:
        return _denial(api_version, uid, str(denied), CODE_INVALID_REQUEST)
    try:
        outcome = admitter.admit(pod, namespace, cluster_id=cluster_id, network=network)
        return _answer(api_version, uid, outcome)
    except Exception as exc:  # fail closed: the pod is denied, the server keeps serving
        message = f"sidecar injection failed: {type(exc).__name__}: {exc}"
        # an exception message may hold lone surrogates, which JSON cannot carry
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return _denial(api_version, uid, message, CODE_ADMIT_ERROR, error=exc)


def _parse_envelope(body: bytes) -> tuple[str, dict[str, Any], str]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Rejected(CODE_INVALID_JSON, f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _Rejected(CODE_INVALID_REVIEW, "request body must be a JSON object")
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str) or api_version not in API_VERSIONS:
        raise _Rejected(
            CODE_INVALID_REVIEW,
            f"unsupported AdmissionReview apiVersion {_show(api_version)}; expected one of "
            + ", ".join(sorted(API_VERSIONS)),
        )
    if document.get("kind") != "AdmissionReview":
        raise _Rejected(
            CODE_INVALID_REVIEW, f"expected kind AdmissionReview, got {_show(document.get('kind'))}"
        )
    request = document.get("request")
    if not isinstance(request, dict):
        raise _Rejected(CODE_INVALID_REVIEW, "AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise _Rejected(CODE_INVALID_REVIEW, "AdmissionReview request has no uid")
    return api_version, request, uid


def _pod_and_namespace(request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    # The API server always sends request.kind; without it we cannot vouch the object is a pod.
    resource_kind = request.get("kind")
    if not isinstance(resource_kind, dict) or resource_kind.get("kind") != "Pod":
        shown = resource_kind.get("kind") if isinstance(resource_kind, dict) else resource_kind
        raise _Denied(f"this webhook admits pods only, got request.kind {_show(shown)}")
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise _Denied(f"request.object must be a Pod object, got {_json_type(pod)}")
    object_kind = pod.get("kind", "Pod")
    if object_kind != "Pod":
        raise _Denied(f"request.object must be a Pod, got kind {_show(object_kind)}")
    metadata = pod.get("metadata", _NO_METADATA)
    if not isinstance(metadata, dict):
        raise _Denied(f"request.object.metadata must be an object, got {_json_type(metadata)}")
    if not isinstance(pod.get("spec"), dict):
        raise _Denied(f"request.object.spec must be an object, got {_json_type(pod.get('spec'))}")
    if "managedFields" in metadata:
        # Managed fields can be huge and never affect injection; the engine must never diff them.
        del metadata["managedFields"]
    namespace = request.get("namespace")
    if namespace is None or namespace == "":
        namespace = metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise _Denied("the pod has no namespace (neither request.namespace nor metadata.namespace)")
    return pod, namespace


def _answer(api_version: str, uid: str, outcome: Outcome) -> ReviewResult:
    if outcome.kind not in _OUTCOME_KINDS:
        raise ValueError(f"the engine returned an unknown outcome kind {outcome.kind!r}")
    response: dict[str, Any] = {"uid": uid, "allowed": outcome.allowed}
    if outcome.kind == "denied":
        response["status"] = {"message": outcome.reason}
    elif outcome.kind == "injected" and outcome.patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = outcome.patch_base64 or base64.b64encode(outcome.patch).decode("ascii")
    if outcome.warnings:
        response["warnings"] = [str(warning) for warning in outcome.warnings]  # SM1xxx: ...
    return ReviewResult(200, _envelope(api_version, response), outcome.kind, outcome.code)


def _denial(
    api_version: str, uid: str, message: str, code: str, *, error: Exception | None = None
) -> ReviewResult:
    # Like Istio, the Status carries only a message, under the JSON name `status` (Go's field is
    # `Result`; a `result` key is silently dropped and the API server then says "denied the
    # request without explanation"). The server fills in the code and reports "admission
    # webhook ... denied the request: <message>".
    response = {"uid": uid, "allowed": False, "status": {"message": message}}
    return ReviewResult(200, _envelope(api_version, response), "denied", code, error)


def _envelope(api_version: str, response: dict[str, Any]) -> bytes:
    document = {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
    return orjson.dumps(document)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _show(value: object) -> str:
    """A short rendering of a client-supplied value for an error message."""
    return repr(value[:80]) if isinstance(value, str) else _json_type(value)
