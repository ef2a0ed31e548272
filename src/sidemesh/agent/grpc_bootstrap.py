"""The bootstrap file of a proxyless gRPC app (gRFC A27; `GRPC_XDS_BOOTSTRAP` names it).

Pure: identity in, JSON bytes out. The `grpc-simple` template's init container writes it
(`sidemesh agent grpc-bootstrap`) into a volume the app containers mount; the `grpc-agent`
template's agent (without Envoy, `no_envoy`) writes it next to the certificates it keeps.
The node id has the sidecar's shape, so the discovery knows the pod as it knows an injected
one, and metadata `GENERATOR: grpc` says the client is a gRPC library, not Envoy.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

GRPC_GENERATOR: Final = "grpc"
REFRESH_INTERVAL: Final = "60s"
SERVER_LISTENER_TEMPLATE: Final = "xds.istio.io/grpc/lds/inbound/%s"

# A node id is `sidecar~IP~POD.NS~DOMAIN`: a part holding `~` (or anything outside what
# Kubernetes names, IPs and DNS domains use) would let one pod pose as another.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}")


class GrpcBootstrapError(ValueError):
    """An identity value cannot go into a node id; the message names it."""


@dataclasses.dataclass(frozen=True)
class GrpcIdentity:
    pod_name: str
    namespace: str
    instance_ip: str
    domain: str

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _PART.fullmatch(value):
                raise GrpcBootstrapError(f"{field.name} {value!r} is not valid in a node id")

    @property
    def node_id(self) -> str:
        return f"sidecar~{self.instance_ip}~{self.pod_name}.{self.namespace}~{self.domain}"


@dataclasses.dataclass(frozen=True)
class CertificateFiles:
    """Where the agent without Envoy (`no_envoy`) keeps the workload certificate for the app:
    Istio's OUTPUT_CERTS layout."""

    directory: Path

    @property
    def certificate_chain(self) -> Path:
        return self.directory / "cert-chain.pem"

    @property
    def private_key(self) -> Path:
        return self.directory / "key.pem"

    @property
    def root_certificate(self) -> Path:
        return self.directory / "root-cert.pem"


def grpc_bootstrap(
    identity: GrpcIdentity,
    *,
    discovery_address: str,
    certificates: CertificateFiles | None = None,
    xds_tls: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """The bootstrap JSON: one xDS server (the discovery) and the node.

    With `certificates` (the `grpc-agent` template), the files become the `default`
    certificate provider (`file_watcher`), which the clusters and listeners the discovery
    sends for mTLS name (xDS credentials, gRFC A29); with `xds_tls` as well the xDS stream
    itself goes over TLS to the discovery's :15012 presenting that certificate (gRFC A65), so
    the discovery knows the client as it knows a sidecar. Without, plaintext to :15010."""
    channel_creds: dict[str, Any] = {"type": "insecure"}
    if certificates is not None and xds_tls:
        channel_creds = {"type": "tls", "config": _file_config(certificates)}
    node_metadata = {
        **(metadata or {}),
        "GENERATOR": GRPC_GENERATOR,
        "NAMESPACE": identity.namespace,
        "NAME": identity.pod_name,
        "INSTANCE_IPS": identity.instance_ip,
    }
    document: dict[str, Any] = {
        "xds_servers": [
            {
                "server_uri": f"dns:///{discovery_address}",
                "channel_creds": [channel_creds],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": identity.node_id, "metadata": node_metadata},
        # What an xDS-enabled gRPC server asks LDS for (Istio's name; `xds.grpc_gen_inbound`).
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }
    if certificates is not None:
        document["certificate_providers"] = {
            "default": {"plugin_name": "file_watcher", "config": _file_config(certificates)}
        }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def _file_config(certificates: CertificateFiles) -> dict[str, str]:
    return {
        "certificate_file": str(certificates.certificate_chain),
        "private_key_file": str(certificates.private_key),
        "ca_certificate_file": str(certificates.root_certificate),
        # Renewed certificates are picked up within this (they last hours).
        "refresh_interval": REFRESH_INTERVAL,
    }
