"""Parse + validate: the first stage of the mesh-configuration pipeline, for every
`networking.istio.io` kind sidemesh knows, and the one code path `sidemesh validate`, the
validating webhook and the registries share.

`validate(document)` takes a decoded YAML/JSON object and returns a typed, frozen `Resource`
or raises `ValidationError` naming the document (kind namespace/name) and each field path.
Pure: no I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import pydantic

from sidemesh.api.networking.common import Issue, Issues, Model, field_path, is_dns_label
from sidemesh.api.networking.destination_rule import DestinationRule, check_destination_rule
from sidemesh.api.networking.gateway import Gateway, check_gateway
from sidemesh.api.networking.service_entry import ServiceEntry, check_service_entry
from sidemesh.api.networking.sidecar import Sidecar, check_sidecar
from sidemesh.api.networking.virtual_service import VirtualService
from sidemesh.api.networking.virtual_service_rules import check_virtual_service

GROUP: Final = "networking.istio.io"
VERSIONS: Final = ("v1", "v1beta1", "v1alpha3")  # served, as Istio serves them; v1 stored
DEFAULT_NAMESPACE: Final = "default"

S = TypeVar("S", bound=Model)


@dataclass(frozen=True)
class Kind(Generic[S]):
    """One kind: its spec model and the checks pydantic's field rules cannot express."""

    name: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[S]
    check: Callable[[S, Issues], None]


KINDS: Final[Mapping[str, Kind[Any]]] = {
    k.name: k
    for k in (
        Kind("VirtualService", "virtualservices", ("vs",), VirtualService, check_virtual_service),
        Kind(
            "DestinationRule", "destinationrules", ("dr",), DestinationRule, check_destination_rule
        ),
        Kind("ServiceEntry", "serviceentries", ("se",), ServiceEntry, check_service_entry),
        Kind("Sidecar", "sidecars", (), Sidecar, check_sidecar),
        Kind("Gateway", "gateways", ("gw",), Gateway, check_gateway),
    )
}


@dataclass(frozen=True)
class Resource(Generic[S]):
    """A validated object: who it is and its typed spec."""

    api_version: str
    kind: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    spec: S
    # metadata.creationTimestamp in seconds (0: none, as in a hand-written file: the oldest).
    # Istio's order for conflicting configuration: oldest first (`xds.config_order`).
    created: float = 0.0

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def creation_time(value: Any) -> float | None:
    """An RFC 3339 `metadata.creationTimestamp` (or the datetime YAML reads one as) in
    seconds since the epoch; 0.0 when absent; None when it is not a time."""
    if not value:
        return 0.0
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


class ValidationError(ValueError):
    """The document is not a valid object of its kind. `str()` names the document and, one a
    line, each field path and what is wrong with it."""

    def __init__(self, document: str, issues: list[Issue]) -> None:
        self.document = document
        self.issues = tuple(issues)
        super().__init__("\n".join(f"{document}: {issue}" for issue in issues))


def is_networking(document: Any) -> bool:
    """Whether `document` claims to be one of the kinds `validate` knows."""
    if not isinstance(document, Mapping):
        return False
    group = str(document.get("apiVersion") or "").partition("/")[0]
    return group == GROUP and document.get("kind") in KINDS


def describe(document: Any) -> str:
    """`Kind namespace/name` of a document, as far as it says."""
    if not isinstance(document, Mapping):
        return "document"
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    return f"{document.get('kind') or 'object'} {namespace}/{metadata.get('name') or '<no name>'}"


def validate(document: Any) -> Resource[Any]:
    """The typed object of a `networking.istio.io` document, or ValidationError."""
    where = describe(document)
    if not isinstance(document, Mapping):
        raise ValidationError(where, [Issue("document", "must be a mapping")])
    issues = Issues()
    api_version = str(document.get("apiVersion") or "")
    group, _, version = api_version.partition("/")
    kind = KINDS.get(str(document.get("kind") or ""))
    if group != GROUP or version not in VERSIONS:
        issues.add("apiVersion", f"must be {GROUP}/ one of {', '.join(VERSIONS)}")
    if kind is None:
        issues.add("kind", f"must be one of {', '.join(KINDS)}")
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        issues.add("metadata", "must be a mapping with a name")
        metadata = {}
    name = metadata.get("name")
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    if not isinstance(name, str) or not name:
        issues.add("metadata.name", "is required")
    elif len(name) > 253 or not all(is_dns_label(part) for part in name.split(".")):
        issues.add("metadata.name", f"{name!r} is not a DNS-1123 subdomain")
    if not isinstance(namespace, str) or not is_dns_label(namespace):
        issues.add("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        issues.add("metadata.labels", "must be a mapping")
        labels = {}
    created = creation_time(metadata.get("creationTimestamp"))
    if created is None:
        issues.add("metadata.creationTimestamp", "is not an RFC 3339 time")
    if kind is None or issues.found:
        raise ValidationError(where, issues.found)
    spec = _parse_spec(kind, document.get("spec"), issues)
    if spec is not None:
        kind.check(spec, issues)
    if spec is None or issues.found:
        raise ValidationError(where, issues.found)
    return Resource(
        api_version=api_version,
        kind=kind.name,
        namespace=str(namespace),
        name=str(name),
        labels={str(k): str(v) for k, v in labels.items()},
        spec=spec,
        created=created or 0.0,
    )


def _parse_spec(kind: Kind[S], raw: Any, issues: Issues) -> S | None:
    try:
        return kind.spec.model_validate({} if raw is None else raw)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            issues.add(field_path(("spec", *error["loc"])), _message(error))
        return None


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind in ("greater_than_equal", "less_than_equal") and "ge" in error.get("ctx", {}):
        return f"must be >= {error['ctx']['ge']}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
