"""Loading the security configuration `analyze` reads: AuthorizationPolicies and
RequestAuthentications of every namespace (the root namespace's apply mesh-wide). A cluster
without the CRDs simply has none."""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from sidemesh.analyze.security_policies import SecurityConfig
from sidemesh.api import security
from sidemesh.kube import client as kube
from sidemesh.kube.snapshot import Object


async def _list_policies(client: AsyncClient, kind: str) -> tuple[Object, ...]:
    resource: Any = create_namespaced_resource(security.GROUP, "v1", kind,
                                               security.KINDS[kind].plural)  # fmt: skip
    try:
        return tuple(await kube.list_objects(client, resource))
    except ApiError as exc:
        if kube.is_not_found(exc):
            return ()  # the CRD is not installed
        raise


async def load_security_config(client: AsyncClient) -> SecurityConfig:
    return SecurityConfig(
        authorization_policies=await _list_policies(client, "AuthorizationPolicy"),
        request_authentications=await _list_policies(client, "RequestAuthentication"),
    )
