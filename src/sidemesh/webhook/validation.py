"""AdmissionReview in, AdmissionReview out: the pure core of the validating webhook (Istio's
`/validate`, "validation door 2"; `sidemesh validate` is door 1).

The API server sends every CREATE and UPDATE of an Istio configuration object here; the object
is routed by its API group to that group's check (a registry the caller supplies, the same one
`sidemesh validate` uses), so a `kubectl apply` is refused with exactly the words the offline
command prints. Pure: no sockets, clocks or logging.

Answers, like Istio's webhook:
* valid: allowed;
* invalid: denied, the message one line per problem, `Kind namespace/name: field.path: what`;
* a kind of a served group that no check knows (another mesh's CRD, say): allowed with an
  admission warning saying it was not checked. sidemesh never consumes such a kind, so it
  cannot break the mesh, and refusing it would break whoever owns that CRD;
* a review that cannot be answered (no uid to echo): 400; a broken request inside a good
  review, or a check that raises: denied (fail closed), never a 500 and never a hang.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sidemesh.api.networking import describe
from sidemesh.webhook.admission import (
    CODE_ADMIT_ERROR,
    CODE_INVALID_REQUEST,
    _envelope,
    _json_type,
    _parse_envelope,
    _Rejected,
    _show,
)

# One group's check: the problems of an object of that group (empty: valid), or None for a
# kind of the group it does not know.
GroupCheck = Callable[[Mapping[str, Any]], tuple[str, ...] | None]

VALIDATED_OPERATIONS: Final = frozenset({"CREATE", "UPDATE"})
# A hostile object can carry thousands of problems; the API server and kubectl show a few.
MAX_PROBLEMS_SHOWN: Final = 20

CODE_VALID: Final = "valid"
CODE_INVALID: Final = "invalid"
CODE_NOT_VALIDATED: Final = "not-validated"

VerdictKind = Literal["allowed", "denied", "rejected"]


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The answer to one request body: HTTP status and body, and what happened (for metrics
    and logs). `code` is from a small fixed set; `error` is an exception a check raised."""

    status: int
    body: bytes
    kind: VerdictKind
    code: str
    error: Exception | None = None


class _Denied(Exception):
    """The review is well formed, but its request cannot be validated as an object."""


def review_validation(body: bytes, checks: Mapping[str, GroupCheck]) -> ValidationResult:
    """Answer one validating AdmissionReview request body. Never raises."""
    try:
        api_version, request, uid = _parse_envelope(body)
    except _Rejected as rejected:
        return ValidationResult(400, f"{rejected}\n".encode(), "rejected", rejected.code)
    if request.get("operation") not in VALIDATED_OPERATIONS:
        # DELETE and CONNECT carry no new object; the configuration only asks for CREATE/UPDATE.
        return _allow(api_version, uid, CODE_VALID)
    try:
        document, group = _object_and_group(request)
    except _Denied as denied:
        return _deny(api_version, uid, str(denied), CODE_INVALID_REQUEST)
    check = checks.get(group)
    try:
        problems = check(document) if check is not None else None
    except Exception as exc:  # fail closed: the object is refused, the server keeps serving
        message = f"validation failed: {type(exc).__name__}: {exc}"
        return _deny(api_version, uid, _json_safe(message), CODE_ADMIT_ERROR, error=exc)
    where = describe(document)
    if problems is None:
        warning = f"{where}: sidemesh does not validate kind {_show(document.get('kind'))}"
        return _allow(api_version, uid, CODE_NOT_VALIDATED, warnings=[_json_safe(warning)])
    if not problems:
        return _allow(api_version, uid, CODE_VALID)
    return _deny(api_version, uid, _json_safe(denial_message(where, problems)), CODE_INVALID)


def denial_message(where: str, problems: tuple[str, ...]) -> str:
    """`Kind namespace/name: problem` a line, as `sidemesh validate` prints each problem."""
    shown = [f"{where}: {problem}" for problem in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"{where}: ... and {len(problems) - MAX_PROBLEMS_SHOWN} more problem(s)")
    return "\n".join(shown)


def _object_and_group(request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    document = request.get("object")
    if not isinstance(document, dict):
        raise _Denied(f"request.object must be an object, got {_json_type(document)}")
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str) or "/" not in api_version:
        raise _Denied(f"request.object.apiVersion must be GROUP/VERSION, got {_show(api_version)}")
    group = api_version.partition("/")[0]
    # The API server says what it is admitting; an object claiming to be something else is
    # not checked under the claim.
    resource_kind = request.get("kind")
    if isinstance(resource_kind, dict) and (
        resource_kind.get("group") != group or resource_kind.get("kind") != document.get("kind")
    ):
        raise _Denied(
            f"request.object is {_show(api_version)} {_show(document.get('kind'))} but "
            f"request.kind says {_show(resource_kind.get('group'))} "
            f"{_show(resource_kind.get('kind'))}"
        )
    metadata = document.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Denied(f"request.object.metadata must be an object, got {_json_type(metadata)}")
    namespace = request.get("namespace")
    if isinstance(metadata, dict) and not metadata.get("namespace") and namespace:
        # The namespace comes from the request path; name it in messages as validate would.
        document = {**document, "metadata": {**metadata, "namespace": namespace}}
    return document, group


def _allow(
    api_version: str, uid: str, code: str, *, warnings: list[str] | None = None
) -> ValidationResult:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = warnings
    return ValidationResult(200, _envelope(api_version, response), "allowed", code)


def _deny(
    api_version: str, uid: str, message: str, code: str, *, error: Exception | None = None
) -> ValidationResult:
    response = {"uid": uid, "allowed": False, "status": {"message": message}}
    return ValidationResult(200, _envelope(api_version, response), "denied", code, error)


def _json_safe(message: str) -> str:
    # client text or an exception message may hold lone surrogates, which JSON cannot carry
    return message.encode("utf-8", "backslashreplace").decode("utf-8")
