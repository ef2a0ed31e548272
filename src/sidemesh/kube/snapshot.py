"""A read-only snapshot of what injection depends on in a cluster, and its loader.

The analyzers, `injector list` and live `check-inject` are pure functions over a snapshot, so
they are tested with crafted snapshots and run against a cluster through this thin loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient

from sidemesh.install import naming
from sidemesh.install.webhooks import is_injector_configuration, service_reference
from sidemesh.kube import client as kube

Object = dict[str, Any]


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    value = metadata(obj).get("labels")
    return dict(value) if isinstance(value, Mapping) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("namespace", ""))


@dataclass(frozen=True)
class ClusterSnapshot:
    namespaces: tuple[Object, ...] = ()
    pods: tuple[Object, ...] = ()
    services: tuple[Object, ...] = ()
    webhook_configurations: tuple[Object, ...] = ()
    injector_config_maps: tuple[Object, ...] = ()  # istio-sidecar-injector[-REV] in istio-system

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        for ns in self.namespaces:
            if name_of(ns) == namespace:
                return labels_of(ns)
        return {}

    def has_service(self, namespace: str, name: str) -> bool:
        return any(namespace_of(s) == namespace and name_of(s) == name for s in self.services)

    def pods_in(self, namespaces: set[str] | None) -> list[Object]:
        return [p for p in self.pods if namespaces is None or namespace_of(p) in namespaces]


_NAMESPACE = kube.resource_type("v1", "Namespace")
_POD = kube.resource_type("v1", "Pod")
_SERVICE = kube.resource_type("v1", "Service")
_CONFIG_MAP = kube.resource_type("v1", "ConfigMap")
_MWC = kube.resource_type("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")


async def load_snapshot(client: AsyncClient, *, namespace: str | None = None) -> ClusterSnapshot:
    """Everything injection depends on; pods of `namespace` only (None: every namespace)."""
    configurations = await kube.list_objects(client, _MWC)
    service_namespaces = {naming.NAMESPACE}
    for configuration in configurations:
        if is_injector_configuration(configuration):
            for item in configuration.get("webhooks") or []:
                reference = service_reference(item) if isinstance(item, Mapping) else None
                if reference and reference[0]:
                    service_namespaces.add(reference[0])
    services: list[Object] = []
    for service_namespace in sorted(service_namespaces):
        services += await kube.list_objects(client, _SERVICE, namespace=service_namespace)
    config_maps = [
        c
        for c in await kube.list_objects(client, _CONFIG_MAP, namespace=naming.NAMESPACE)
        if name_of(c).startswith("istio-sidecar-injector")
    ]
    return ClusterSnapshot(
        namespaces=tuple(await kube.list_objects(client, _NAMESPACE)),
        pods=tuple(await kube.list_objects(client, _POD, namespace=namespace)),
        services=tuple(services),
        webhook_configurations=tuple(configurations),
        injector_config_maps=tuple(config_maps),
    )
