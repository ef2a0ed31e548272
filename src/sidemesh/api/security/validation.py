"""Parse + validate for `security.istio.io` AuthorizationPolicy and RequestAuthentication: the
one path `sidemesh validate`, the validating webhook and the registries share, returning the
same typed `Resource` and raising the same `ValidationError` as the traffic kinds do.

PeerAuthentication keeps its own converter (`xds.convert.peer_authentication`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pydantic

from sidemesh.api.networking.common import Issue, Issues, field_path, is_dns_label
from sidemesh.api.networking.validation import Kind, Resource, ValidationError, describe
from sidemesh.api.security.authorization_policy import (
    AuthorizationPolicy,
    check_authorization_policy,
)
from sidemesh.api.security.request_authentication import (
    RequestAuthentication,
    check_request_authentication,
)

GROUP: Final = "security.istio.io"
VERSIONS: Final = ("v1", "v1beta1")

KINDS: Final[Mapping[str, Kind[Any]]] = {
    kind.name: kind
    for kind in (
        Kind("AuthorizationPolicy", "authorizationpolicies", ("ap",), AuthorizationPolicy,
             check_authorization_policy),
        Kind("RequestAuthentication", "requestauthentications", ("ra",), RequestAuthentication,
             check_request_authentication),
    )
}  # fmt: skip


def is_security(document: Any) -> bool:
    """Whether `document` claims to be one of the kinds this `validate` knows."""
    return (
        isinstance(document, Mapping)
        and str(document.get("apiVersion") or "").partition("/")[0] == GROUP
        and document.get("kind") in KINDS
    )


def validate(document: Any) -> Resource[Any]:
    """The typed object of an AuthorizationPolicy or RequestAuthentication, or
    ValidationError naming each field."""
    where = describe(document)
    if not isinstance(document, Mapping):
        raise ValidationError(where, [Issue("document", "must be a mapping")])
    issues = Issues()
    group, _, version = str(document.get("apiVersion") or "").partition("/")
    if group != GROUP or version not in VERSIONS:
        issues.add("apiVersion", f"must be {GROUP}/ one of {', '.join(VERSIONS)}")
    kind = KINDS.get(str(document.get("kind") or ""))
    if kind is None:
        issues.add("kind", f"must be one of {', '.join(KINDS)}")
    metadata = _mapping(document.get("metadata"))
    name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        issues.add("metadata.name", "is required")
    elif len(name) > 253 or not all(is_dns_label(label) for label in name.split(".")):
        issues.add("metadata.name", f"{name!r} is not a DNS-1123 subdomain")
    if not isinstance(namespace, str) or not is_dns_label(namespace):
        issues.add("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")
    labels = _mapping(metadata.get("labels"))
    spec = None
    if kind is not None and not issues.found:
        try:
            spec = kind.spec.model_validate(document.get("spec") or {})
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                issues.add(field_path(("spec", *error["loc"])), _words(error))
        else:
            kind.check(spec, issues)
    if kind is None or spec is None or issues.found:
        raise ValidationError(where, issues.found)
    return Resource(api_version=f"{group}/{version}", kind=kind.name, namespace=str(namespace),
                    name=str(name), labels={str(k): str(v) for k, v in labels.items()},
                    spec=spec)  # fmt: skip


def deny_all_stand_in(document: Any) -> Resource[AuthorizationPolicy] | None:
    """What an invalid AuthorizationPolicy that reached a registry (past the webhook) becomes:
    a DENY of every request to the workloads it selects, never nothing, since skipping an
    ALLOW or DENY policy opens what it closed. Its selector counts if it is a label map, else
    the policy covers its whole namespace (the mesh, in the root namespace). None: not an
    AuthorizationPolicy with a usable name and namespace, or one attached by targetRef(s),
    which no sidecar uses."""
    if not isinstance(document, Mapping) or document.get("kind") != "AuthorizationPolicy":
        return None
    metadata = _mapping(document.get("metadata"))
    name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    if not is_dns_label(namespace):
        return None
    spec = _mapping(document.get("spec"))
    if spec.get("targetRef") or spec.get("targetRefs"):
        return None
    labels = _mapping(_mapping(spec.get("selector")).get("matchLabels"))
    selector = {"matchLabels": {str(k): str(v) for k, v in labels.items()}} if labels else None
    stand_in = AuthorizationPolicy.model_validate(
        {"selector": selector, "action": "DENY", "rules": [{}]}
    )
    return Resource(api_version=str(document.get("apiVersion") or ""), kind="AuthorizationPolicy",
                    namespace=namespace, name=name, labels={}, spec=stand_in)  # fmt: skip


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _words(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "is required"
    return str(error["msg"]).removeprefix("Value error, ")
