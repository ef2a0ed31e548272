"""Loading the security configuration `analyze` reads: AuthorizationPolicies and
RequestAuthentications of every namespace (the root namespace's apply mesh-wide). A cluster
without the CRDs simply has none."""

from __future__ import annotations

from lightkube import AsyncClient

from sidemesh.analyze.security_policies import SecurityConfig
from sidemesh.analyze.traffic_loader import list_config
from sidemesh.api import security
from sidemesh.kube.snapshot import Object


async def _list_policies(client: AsyncClient, kind: str) -> tuple[Object, ...]:
    return await list_config(client, security.GROUP, kind, security.KINDS[kind].plural)


async def load_security_config(client: AsyncClient) -> SecurityConfig:
    return SecurityConfig(
        authorization_policies=await _list_policies(client, "AuthorizationPolicy"),
        request_authentications=await _list_policies(client, "RequestAuthentication"),
    )
