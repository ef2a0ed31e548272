"""Who is asking for configuration on :15012, and may they ask as the proxy they claim to be.

Istio's rules. A caller authenticates with a client certificate issued by the mesh CA (Envoy
presents its SDS `default` workload certificate on the `xds-grpc` cluster) or, failing that,
with a service-account token (`authorization: Bearer …`, checked like a certificate request's).
Neither → UNAUTHENTICATED. The proxy's claimed namespace (node metadata NAMESPACE and the node
id's `POD.NAMESPACE`) and service account (SERVICE_ACCOUNT, when given) must then match one of
the caller's identities → else PERMISSION_DENIED: a workload may not read another namespace's
configuration by claiming to be there. :15010 (plaintext) does none of this; it is served only
when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidemesh.security.authn import AuthenticationError, Authenticator
from sidemesh.security.identity import SpiffeId
from sidemesh.security.protocol import bearer_token


class XdsAuthError(Exception):
    """The stream is refused; `code` is the gRPC status name, str() the reason for the caller."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code  # "UNAUTHENTICATED" or "PERMISSION_DENIED"


@dataclass(frozen=True)
class XdsCaller:
    identities: tuple[SpiffeId, ...]
    method: str  # "certificate" or "token"


# The verified client-certificate identities of a connection, by gRPC peer string.
PeerIdentities = Callable[[str], Sequence[SpiffeId] | None]


class XdsAuthenticator:
    def __init__(
        self,
        *,
        trust_domain: str,
        peer_identities: PeerIdentities,
        tokens: Authenticator | None = None,
    ) -> None:
        self.trust_domain = trust_domain
        self.peer_identities = peer_identities
        self.tokens = tokens

    async def authenticate(self, peer: str, metadata: Sequence[tuple[str, Any]]) -> XdsCaller:
        identities = tuple(
            i for i in self.peer_identities(peer) or () if i.trust_domain == self.trust_domain
        )
        if identities:
            return XdsCaller(identities, "certificate")
        token = bearer_token(metadata)
        if token is None:
            raise XdsAuthError(
                "UNAUTHENTICATED",
                "no client certificate from the mesh CA and no 'authorization: Bearer <token>'",
            )
        if self.tokens is None:
            raise XdsAuthError("UNAUTHENTICATED", "tokens are not accepted here")
        try:
            caller = await self.tokens.authenticate(token)
        except AuthenticationError as exc:
            raise XdsAuthError("UNAUTHENTICATED", f"token refused: {exc}") from None
        return XdsCaller(
            (SpiffeId(self.trust_domain, caller.namespace, caller.service_account),), "token"
        )


def authorize(caller: XdsCaller, node_id: str, metadata: Mapping[str, Any]) -> SpiffeId:
    """The identity the proxy may act as, or XdsAuthError(PERMISSION_DENIED) saying why not."""
    id_namespace = node_id.split("~")[2].partition(".")[2] if node_id.count("~") == 3 else ""
    namespaces = {str(n) for n in (metadata.get("NAMESPACE"), id_namespace) if n}
    service_account = str(metadata.get("SERVICE_ACCOUNT") or "")
    for identity in caller.identities:
        if all(n == identity.namespace for n in namespaces) and service_account in (
            "",
            identity.service_account,
        ):
            return identity
    claimed = f"namespace {'/'.join(sorted(namespaces)) or '?'}" + (
        f", service account {service_account}" if service_account else ""
    )
    raise XdsAuthError(
        "PERMISSION_DENIED",
        f"authenticated by {caller.method} as {', '.join(i.uri for i in caller.identities)}, "
        f"which may not ask for the configuration of a proxy in {claimed}",
    )
