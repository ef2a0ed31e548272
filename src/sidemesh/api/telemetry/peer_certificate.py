"""Peer metadata in the workload certificate: how the server side of a TCP connection learns
its client's workload (`source_workload`, `source_app`, ... on `reporter="destination"`).

HTTP carries the metadata in headers (`peer.py`); raw TCP has no place for it that upstream
Envoy can fill and read after the TLS handshake. The certificate is such a place:

* the agent names its workload in the certificate request (Istio's `IstioCertificateRequest.
  metadata`, key `CSR_METADATA_KEY`), the same values its Envoy sends in HTTP headers;
* the CA checks the claim (the namespace must be the caller's, every value a plain label
  value) and writes it into the subject of the certificate it signs, one organizational unit
  `sidemesh.peer/<workload>/<namespace>/<app>/<version>/<canonical service>/<canonical
  revision>`; the identity stays the SPIFFE URI SAN alone, so authorization is unchanged;
* the server's inbound mTLS TCP chain reads the peer certificate's subject once the handshake is
  done (Envoy's `set_filter_state` network filter with a CEL formatter, `xds/telemetry.py`)
  and the metrics' labels read the filter state.

The claim is the client sidecar's word, exactly as trusted as the HTTP headers: only a mesh
identity can make it, and only for its own namespace. It travels inside TLS (TLS 1.3 encrypts
certificates), unlike a PROXY protocol header. A certificate without the unit (an older agent,
another CA) gives `unknown`. Labels that change while a pod runs show from its next certificate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Final

from sidemesh.api.telemetry.peer import UNKNOWN, WorkloadMetadata

CSR_METADATA_KEY: Final = "sidemesh.io/workload"
SUBJECT_PREFIX: Final = "sidemesh.peer"
FILTER_STATE_PREFIX: Final = "sidemesh.peer."
SEPARATOR: Final = "/"
FIELDS: Final = tuple(f.name for f in fields(WorkloadMetadata))
# A Kubernetes label value or object name: nothing RFC 4514 escapes in a subject, no separator.
_VALUE: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def claim(workload: WorkloadMetadata) -> dict[str, str]:
    """What the agent adds to its certificate request, under `CSR_METADATA_KEY`."""
    return {name: getattr(workload, name) for name in FIELDS}


def claimed_workload(metadata: Mapping[str, Any], *, namespace: str) -> WorkloadMetadata | None:
    """The workload a certificate request claims, if the CA may write it into the certificate:
    None without a claim or when it names another namespace than the caller's. A value that is
    not a plain label value is `unknown` (it could not be read back unambiguously)."""
    claim = metadata.get(CSR_METADATA_KEY)
    if not isinstance(claim, Mapping):
        return None
    values = {
        name: value if isinstance(value, str) and _VALUE.fullmatch(value) else UNKNOWN
        for name in FIELDS
        for value in (claim.get(name),)
    }
    if values["namespace"] != namespace:
        return None
    return WorkloadMetadata(**values)


def subject_unit(workload: WorkloadMetadata) -> str:
    """The organizational unit the CA writes into the certificate's subject."""
    return SEPARATOR.join([SUBJECT_PREFIX, *(getattr(workload, name) for name in FIELDS)])


def parse_subject_unit(unit: str) -> WorkloadMetadata | None:
    """`subject_unit` read back (what the CEL expressions below compute inside Envoy)."""
    parts = unit.split(SEPARATOR)
    if len(parts) != len(FIELDS) + 1 or parts[0] != SUBJECT_PREFIX:
        return None
    return WorkloadMetadata(**dict(zip(FIELDS, parts[1:], strict=True)))


def filter_state_key(name: str) -> str:
    """Where the server's inbound TCP chain keeps one value of its peer's workload."""
    return FILTER_STATE_PREFIX + name


def cel_expression(name: str) -> str:
    """CEL (with Envoy's string functions) computing one value from the peer certificate's
    subject, as Envoy prints it (RFC 2253: `OU=<unit>` when the unit is the only attribute);
    `unknown` for any other subject, also one with another attribute beside the unit (RFC 2253
    separates attributes with `,` or `+`, which no valid value holds)."""
    subject = "connection.subject_peer_certificate"
    index = FIELDS.index(name) + 1
    return (
        f"{subject}.startsWith('OU={SUBJECT_PREFIX}{SEPARATOR}') && "
        f"!{subject}.contains(',') && !{subject}.contains('+') && "
        f"{subject}.split('{SEPARATOR}').size() == {len(FIELDS) + 1} ? "
        f"{subject}.split('{SEPARATOR}')[{index}] : '{UNKNOWN}'"
    )
