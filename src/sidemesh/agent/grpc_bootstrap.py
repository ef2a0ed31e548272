"""The bootstrap file of a proxyless gRPC app (gRFC A27; `GRPC_XDS_BOOTSTRAP` names it).

Pure: identity in, JSON bytes out. The `grpc-simple` template's init container writes it
(`sidemesh agent grpc-bootstrap`) into a volume the app containers mount. The node id has the
sidecar's shape, so the discovery knows the pod as it knows an injected one, and metadata
`GENERATOR: grpc` says the client is a gRPC library, not Envoy.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Final

GRPC_GENERATOR: Final = "grpc"

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


def grpc_bootstrap(identity: GrpcIdentity, *, discovery_address: str) -> bytes:
    """The bootstrap JSON: one plaintext xDS server (the discovery's :15010) and the node."""
    document = {
        "xds_servers": [
            {
                "server_uri": f"dns:///{discovery_address}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": identity.node_id,
            "metadata": {
                "GENERATOR": GRPC_GENERATOR,
                "NAMESPACE": identity.namespace,
                "NAME": identity.pod_name,
                "INSTANCE_IPS": identity.instance_ip,
            },
        },
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
