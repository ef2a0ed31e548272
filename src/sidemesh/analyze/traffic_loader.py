"""Loading the traffic configuration `analyze` reads: VirtualServices, DestinationRules,
ServiceEntries and Sidecars of every namespace (a conflict or a subset may come from another
namespace) and every Service. A cluster without Istio's CRDs simply has none."""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from sidemesh.analyze.traffic import TrafficConfig
from sidemesh.api import networking
from sidemesh.kube import client as kube
from sidemesh.kube.snapshot import Object

_SERVICE = kube.resource_type("v1", "Service")


async def list_config(
    client: AsyncClient, group: str, kind: str, plural: str
) -> tuple[Object, ...]:
    """Every stored object of one Istio configuration kind (v1), in every namespace; none
    when its CRD is not installed."""
    res: Any = create_namespaced_resource(group, "v1", kind, plural)
    try:
        return tuple(await kube.list_objects(client, res))
    except ApiError as exc:
        if kube.is_not_found(exc):
            return ()  # the CRD is not installed
        raise


async def _networking(client: AsyncClient, kind: str) -> tuple[Object, ...]:
    return await list_config(client, networking.GROUP, kind, networking.KINDS[kind].plural)


async def load_traffic_config(client: AsyncClient) -> TrafficConfig:
    return TrafficConfig(
        virtual_services=await _networking(client, "VirtualService"),
        destination_rules=await _networking(client, "DestinationRule"),
        service_entries=await _networking(client, "ServiceEntry"),
        services=tuple(await kube.list_objects(client, _SERVICE)),
        sidecars=await _networking(client, "Sidecar"),
    )
