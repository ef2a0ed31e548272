"""A registry that follows Kubernetes: watches of Namespaces, Services, EndpointSlices, Pods,
PeerAuthentications, VirtualServices and DestinationRules (lightkube), fed to the shared
snapshot builder (which validates the traffic kinds and skips, with the reason logged, what
`api.networking.validate` refuses).

Each kind is listed then watched from the list's resourceVersion; a failed watch relists the
kind (the relist replaces what the builder holds, so deletions missed while disconnected are
not kept). Pods only matter for labels, service account and the sidecar label, so only those
fields are kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sidemesh.api.config import MeshConfig
from sidemesh.security.store import status_code
from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.model import MeshSnapshot

log = logging.getLogger("sidemesh.xds.registry_kube")

RETRY_SECONDS = 2.0
MISSING_KIND_RETRY_SECONDS = 60.0
# Istio's CRDs: a cluster may not serve them, and then there is simply no such configuration.
OPTIONAL_KINDS = {
    "PeerAuthentication": "using the mesh-wide mTLS default",
    "VirtualService": "default routes only",
    "DestinationRule": "default traffic policies only",
}


def _resources() -> dict[str, Any]:
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.resources.core_v1 import Namespace, Pod, Service
    from lightkube.resources.discovery_v1 import EndpointSlice

    peer_authentication = create_namespaced_resource(
        "security.istio.io", "v1", "PeerAuthentication", "peerauthentications"
    )
    virtual_service = create_namespaced_resource(
        "networking.istio.io", "v1", "VirtualService", "virtualservices"
    )
    destination_rule = create_namespaced_resource(
        "networking.istio.io", "v1", "DestinationRule", "destinationrules"
    )
    return {"Namespace": Namespace, "Service": Service, "EndpointSlice": EndpointSlice,
            "Pod": Pod, "PeerAuthentication": peer_authentication,
            "VirtualService": virtual_service, "DestinationRule": destination_rule}  # fmt: skip


def as_object(kind: str, resource: Any) -> dict[str, Any]:
    raw: dict[str, Any] = resource.to_dict() if hasattr(resource, "to_dict") else dict(resource)
    raw["kind"] = kind
    if kind == "Pod":  # keep what the model reads; pods change often in ways we ignore
        status = raw.get("status") or {}
        raw = {
            "kind": "Pod",
            "metadata": {k: v for k, v in (raw.get("metadata") or {}).items()
                         if k in ("name", "namespace", "labels")},
            "spec": {"serviceAccountName": (raw.get("spec") or {}).get("serviceAccountName"),
                     "containers": [{"ports": c.get("ports") or []}
                                    for c in (raw.get("spec") or {}).get("containers") or []]},
            "status": {"podIP": status.get("podIP"), "conditions": [
                {"type": c.get("type"), "status": c.get("status")}
                for c in status.get("conditions") or [] if c.get("type") == "Ready"]},
        }  # fmt: skip
    return raw


class KubeRegistry:
    def __init__(
        self,
        client: Any,  # lightkube.AsyncClient
        *,
        mesh: MeshConfig | None = None,
        debounce: float = 0.1,
        kinds: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.mesh = mesh or MeshConfig()
        self.debounce = debounce
        self.kinds = dict(kinds) if kinds is not None else _resources()

    async def run(self, publish: Callable[[MeshSnapshot], None]) -> None:
        builder = SnapshotBuilder(publish, mesh=self.mesh, debounce=self.debounce)
        tasks = [asyncio.create_task(builder.run())]
        tasks += [
            asyncio.create_task(self._follow(builder, kind, resource))
            for kind, resource in self.kinds.items()
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, builder: SnapshotBuilder, kind: str, resource: Any) -> None:
        namespaced = kind != "Namespace"
        missing_logged = False
        while True:
            try:
                scope = {"namespace": "*"} if namespaced else {}
                listed = self.client.list(resource, **scope)
                objects = [as_object(kind, item) async for item in listed]
                builder.replace_kind(kind, objects)
                try:
                    version = listed.resourceVersion  # raises when the list was empty
                except Exception:
                    version = None
                async for event, item in self.client.watch(
                    resource, resource_version=version, **scope
                ):
                    obj = as_object(kind, item)
                    if event == "DELETED":
                        meta = obj.get("metadata") or {}
                        builder.delete(kind, str(meta.get("namespace") or ""), str(meta["name"]))
                    else:
                        builder.upsert(obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server went away, a 410 Gone, ...: relist
                if status_code(exc) == 404 and kind in OPTIONAL_KINDS:
                    # Istio's CRD is not installed: no such configuration, defaults apply.
                    # Look again now and then (someone may install it), quietly.
                    if not missing_logged:
                        log.info("%s is not served by this cluster (no CRD); %s",
                                 kind, OPTIONAL_KINDS[kind])  # fmt: skip
                        missing_logged = True
                    builder.replace_kind(kind, [])
                    await asyncio.sleep(MISSING_KIND_RETRY_SECONDS)
                    continue
                log.warning("watch of %s failed (%s: %s); relisting", kind,
                            type(exc).__name__, exc)  # fmt: skip
            await asyncio.sleep(RETRY_SECONDS)
