"""The Kubernetes registry's live MeshConfig: the revision's `istio-<rev>` ConfigMap, watched.

The install mounts that ConfigMap's `mesh` key as discovery's `--mesh-config` file, but the
kubelet refreshes a mounted ConfigMap only every minute or so, and a control plane outside the
cluster has no mount at all; like istiod without a mesh file, discovery watches the ConfigMap
itself (the control plane's ClusterRole reads configmaps). A change is applied by the shared
`mesh_reload.MeshReloader`: valid → every proxy gets a new configuration, invalid → logged and
the last good one stays, start-only fields wait for a restart.

A ConfigMap deleted, or without a `mesh` key, is refused the same way: the last good
MeshConfig stays rather than every proxy silently falling back to the defaults (which would,
for example, turn REGISTRY_ONLY into ALLOW_ANY).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidemesh.api.config import ConfigError
from sidemesh.security.store import status_code
from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.mesh_reload import MeshReloader, parse_mesh_config

log = logging.getLogger("sidemesh.xds.mesh_reload_kube")

MESH_KEY = "mesh"  # Istio's key of the mesh ConfigMap
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class MeshConfigMap:
    """Where the revision's MeshConfig lives: `istio` or `istio-<rev>` in the control plane's
    namespace."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"


def offer_config_map(
    reloader: MeshReloader,
    builder: SnapshotBuilder,
    where: MeshConfigMap,
    data: Mapping[str, Any] | None,
) -> bool:
    """One version of the ConfigMap (`data`; None: deleted) handed to the builder through
    `reloader`; True when the builder got a new MeshConfig."""
    if data is None:
        reloader.refuse(f"{where} was deleted")
        return False
    text = data.get(MESH_KEY)
    if not isinstance(text, str):
        reloader.refuse(f"{where} has no {MESH_KEY!r} key")
        return False
    source = f"{where} key {MESH_KEY!r}"
    try:
        mesh = parse_mesh_config(text, source)
    except ConfigError as exc:
        reloader.refuse(str(exc))
        return False
    return reloader.offer(mesh, builder, source=source)


async def follow_mesh_config_map(
    client: Any,  # lightkube.AsyncClient
    builder: SnapshotBuilder,
    reloader: MeshReloader,
    where: MeshConfigMap,
) -> None:
    """Get the ConfigMap, then watch it from that version, forever (cancel to stop); a failed
    watch gets it again (so a change missed while disconnected is not lost)."""
    from lightkube.resources.core_v1 import ConfigMap

    fields = {"metadata.name": where.name}
    while True:
        try:
            version: str | None = None
            try:
                found = await client.get(ConfigMap, where.name, namespace=where.namespace)
            except Exception as exc:
                if status_code(exc) != 404:
                    raise
                offer_config_map(reloader, builder, where, None)
            else:
                version = (found.metadata.resourceVersion if found.metadata else None) or None
                offer_config_map(reloader, builder, where, found.data or {})
            async for event, item in client.watch(
                ConfigMap, namespace=where.namespace, fields=fields, resource_version=version
            ):
                if item.metadata is None or item.metadata.name != where.name:
                    continue  # a server that ignores the field selector
                data = None if event == "DELETED" else (item.data or {})
                offer_config_map(reloader, builder, where, data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API server went away, a 410 Gone, ...: get it again
            log.warning("watch of %s failed (%s: %s); reading it again", where,
                        type(exc).__name__, exc)  # fmt: skip
        await asyncio.sleep(RETRY_SECONDS)
