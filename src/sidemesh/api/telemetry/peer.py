"""Peer metadata: what one sidecar tells the other about its workload, and how it travels.

Upstream Envoy has no Istio stats filter and no metadata-exchange filter, so the exchange is
done with plain headers Envoy adds and strips itself:

* every sidecar's Envoy runs with its own workload's metadata in its environment
  (`envoy_environment`, set by the agent; `%ENVIRONMENT(...)%` in Envoy's configuration reads
  it, so the control plane sends every proxy the same bytes);
* the client's outbound routes overwrite `x-sidemesh-peer-*` request headers with its
  metadata (an app cannot forge them); the server's inbound mTLS chains move them into dynamic
  metadata and remove them before the app, and add the same headers about the server to the
  response, which the client's outbound side moves into dynamic metadata and removes;
* only what arrived over mTLS counts: inbound plaintext chains drop the headers unread, and a
  server adds its response headers on mTLS chains only (no workload details to strangers).
  Principals never travel in headers: they are the peer certificate's URI SAN.

TCP has no headers: the client side names the server's workload from the endpoint's metadata
(the registry's pod labels), the server side reads the client's from the client's certificate
(`peer_certificate.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final

UNKNOWN: Final = "unknown"
HEADER_PREFIX: Final = "x-sidemesh-peer-"
ENVIRONMENT_PREFIX: Final = "SIDEMESH_PEER_"
# The dynamic metadata namespace the received peer metadata lands in.
METADATA_NAMESPACE: Final = "sidemesh.peer"

# Istio's labels: the canonical service/revision labels, then the usual app/version ones.
_CANONICAL_NAME: Final = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_CANONICAL_REVISION: Final = ("service.istio.io/canonical-revision", "app.kubernetes.io/version",
                              "version")  # fmt: skip
_APP: Final = ("app", "app.kubernetes.io/name")
_VERSION: Final = ("version", "app.kubernetes.io/version")
# A header value must stay a header value whatever a label holds.
_MAX_VALUE: Final = 253


@dataclass(frozen=True)
class WorkloadMetadata:
    """A workload as Istio's standard metrics label it (source_* / destination_*)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"


# The exchanged keys, in a fixed order: (metadata field, header, environment variable).
KEYS: Final = tuple(
    (f.name, HEADER_PREFIX + f.name.replace("_", "-"), ENVIRONMENT_PREFIX + f.name.upper())
    for f in fields(WorkloadMetadata)
)


def _first(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    return next((labels[k] for k in keys if labels.get(k)), None)


def _clean(value: str) -> str:
    """A value safe in a header and a label: printable ASCII without spaces, bounded."""
    kept = "".join(c for c in value if "!" <= c <= "~")[:_MAX_VALUE]
    return kept or UNKNOWN


def workload_metadata(*, workload: str, namespace: str,
                      labels: Mapping[str, str]) -> WorkloadMetadata:  # fmt: skip
    """Istio's derivation: canonical service from `service.istio.io/canonical-name`, else the
    app name labels, else the workload; canonical revision from its label, else the version
    labels, else `latest`."""
    canonical = _first(labels, _CANONICAL_NAME) or workload or UNKNOWN
    return WorkloadMetadata(
        workload=_clean(workload or UNKNOWN),
        namespace=_clean(namespace or UNKNOWN),
        app=_clean(_first(labels, _APP) or UNKNOWN),
        version=_clean(_first(labels, _VERSION) or UNKNOWN),
        canonical_service=_clean(canonical),
        canonical_revision=_clean(_first(labels, _CANONICAL_REVISION) or "latest"),
    )


def envoy_environment(metadata: WorkloadMetadata) -> dict[str, str]:
    """The environment Envoy runs with, so its configuration can name its own workload."""
    return {variable: getattr(metadata, name) for name, _, variable in KEYS}


# OpenTelemetry's resource, read by Envoy's environment resource detector (xds/telemetry_tracing.py)
OTEL_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"


def otel_resource_attributes(metadata: WorkloadMetadata) -> dict[str, str]:
    """`OTEL_RESOURCE_ATTRIBUTES` for Envoy: Istio's span service, `<canonical-service>.
    <namespace>`. `,` and `=` separate the variable's pairs, so values never hold them."""

    def value(text: str) -> str:
        return text.replace(",", "").replace("=", "") or UNKNOWN

    service = f"{value(metadata.canonical_service)}.{value(metadata.namespace)}"
    return {OTEL_RESOURCE_ATTRIBUTES: f"service.name={service}"}


def own(name: str) -> str:
    """The formatter reading one of this proxy's own metadata values."""
    return f"%ENVIRONMENT({ENVIRONMENT_PREFIX}{name.upper()})%"


def received(name: str) -> str:
    """The formatter reading one value of the peer's metadata, as received."""
    return f"%METADATA(DYNAMIC:{METADATA_NAMESPACE}:{name})%"
