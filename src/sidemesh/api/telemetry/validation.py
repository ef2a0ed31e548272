"""Parse + validate for `telemetry.istio.io` Telemetry: the one path `sidemesh validate`, the
validating webhook and the registries share, returning the same typed `Resource` and raising
the same `ValidationError` as the traffic and security kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pydantic

from sidemesh.api.networking.common import Issue, Issues, field_path, is_dns_label
from sidemesh.api.networking.validation import Kind, Resource, ValidationError, describe
from sidemesh.api.telemetry.model import Telemetry, check_telemetry

GROUP: Final = "telemetry.istio.io"
VERSIONS: Final = ("v1", "v1alpha1")
KIND: Final = Kind("Telemetry", "telemetries", ("telemetry",), Telemetry, check_telemetry)


def is_telemetry(document: Any) -> bool:
    """Whether `document` claims to be a Telemetry."""
    return (
        isinstance(document, Mapping)
        and str(document.get("apiVersion") or "").partition("/")[0] == GROUP
        and document.get("kind") == KIND.name
    )


def _identity(document: Mapping[str, Any], issues: Issues) -> tuple[str, str, Mapping[str, Any]]:
    """(namespace, name, labels) of a document, each problem added to `issues`."""
    group, _, version = str(document.get("apiVersion") or "").partition("/")
    if group != GROUP or version not in VERSIONS:
        issues.add("apiVersion", f"must be {GROUP}/ one of {', '.join(VERSIONS)}")
    if document.get("kind") != KIND.name:
        issues.add("kind", f"must be {KIND.name}")
    raw = document.get("metadata")
    metadata: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        issues.add("metadata.name", "is required")
    elif len(name) > 253 or not all(is_dns_label(part) for part in name.split(".")):
        issues.add("metadata.name", f"{name!r} is not a DNS-1123 subdomain")
    if not isinstance(namespace, str) or not is_dns_label(namespace):
        issues.add("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")
    labels = metadata.get("labels")
    return str(namespace), str(name), labels if isinstance(labels, Mapping) else {}


def validate(document: Any) -> Resource[Telemetry]:
    """The typed Telemetry of a document, or ValidationError naming each field."""
    where = describe(document)
    if not isinstance(document, Mapping):
        raise ValidationError(where, [Issue("document", "must be a mapping")])
    issues = Issues()
    namespace, name, labels = _identity(document, issues)
    if issues.found:
        raise ValidationError(where, issues.found)
    try:
        spec = Telemetry.model_validate(document.get("spec") or {})
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            words = {"extra_forbidden": "unknown field", "missing": "is required"}
            message = str(error["msg"]).removeprefix("Value error, ")
            issues.add(field_path(("spec", *error["loc"])), words.get(error["type"], message))
        raise ValidationError(where, issues.found) from None
    check_telemetry(spec, issues)
    if issues.found:
        raise ValidationError(where, issues.found)
    return Resource(api_version=str(document["apiVersion"]), kind=KIND.name,
                    namespace=namespace, name=name,
                    labels={str(k): str(v) for k, v in labels.items()}, spec=spec)  # fmt: skip
