"""Publish the mesh's trusted roots as ConfigMap `istio-ca-root-cert` in every namespace.

Sidecars mount it (volume `istiod-ca-cert`) to verify the control plane before they have a
certificate of their own. A namespace that appears gets it; a ConfigMap that is edited or
deleted is put back; when the roots change (a renewed root: the bundle then holds the old and
the new one), every namespace's ConfigMap is updated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sidemesh.api import names
from sidemesh.security.store import status_code

log = logging.getLogger("sidemesh.security.rootcert")

ROOT_CERT_KEY = "root-cert.pem"
RETRY_SECONDS = 5.0


async def reconcile_namespace(client: Any, namespace: str, root_pem: str) -> str:
    """Make the namespace's ConfigMap hold `root_pem`; returns what was done."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap

    name = names.CONFIGMAP_CA_ROOT
    try:
        current = await client.get(ConfigMap, name, namespace=namespace)
    except Exception as exc:
        if status_code(exc) != 404:
            raise
        current = None
    if current is None:
        config_map = ConfigMap(
            metadata=ObjectMeta(name=name, namespace=namespace,
                                labels={"istio.io/config": "true"}),
            data={ROOT_CERT_KEY: root_pem},
        )  # fmt: skip
        try:
            await client.create(config_map)
        except Exception as exc:
            if status_code(exc) == 409:
                return "exists"
            raise
        return "created"
    if (current.data or {}).get(ROOT_CERT_KEY) == root_pem:
        return "unchanged"
    await client.patch(ConfigMap, name, {"data": {ROOT_CERT_KEY: root_pem}}, namespace=namespace)
    return "updated"


class PublishedRoot:
    """The trusted roots to publish (PEM), which change when the root is renewed."""

    def __init__(self, pem: str) -> None:
        self._pem = pem
        self._changed = asyncio.Event()

    @property
    def pem(self) -> str:
        return self._pem

    def update(self, pem: str) -> None:
        if pem != self._pem:
            self._pem = pem
            self._changed.set()
            self._changed = asyncio.Event()  # for the next change

    async def changed_from(self, seen: str) -> str:
        """Wait until the roots differ from `seen`; the new PEM."""
        while self._pem == seen:
            await self._changed.wait()
        return self._pem


async def publish_root_cert(client: Any, root: str | PublishedRoot) -> None:
    """Keep every namespace's ConfigMap current, forever (cancel to stop)."""
    published = root if isinstance(root, PublishedRoot) else PublishedRoot(root)
    await asyncio.gather(
        _follow_namespaces(client, published),
        _follow_config_maps(client, published),
        _follow_root_changes(client, published),
    )


async def _watch_forever(kind: str, watch: Callable[[], Awaitable[None]]) -> None:
    """Run `watch` again RETRY_SECONDS after it ends or fails, until cancelled."""
    while True:
        try:
            await watch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s watch failed (%s); retrying", kind, type(exc).__name__)
        await asyncio.sleep(RETRY_SECONDS)


async def _follow_namespaces(client: Any, root: PublishedRoot) -> None:
    from lightkube.resources.core_v1 import Namespace

    async def watch() -> None:
        async for event, namespace in client.watch(Namespace):
            if event in ("ADDED", "MODIFIED") and _active(namespace):
                await _reconcile_logged(client, namespace.metadata.name, root.pem)

    await _watch_forever("namespace", watch)


async def _follow_config_maps(client: Any, root: PublishedRoot) -> None:
    from lightkube.resources.core_v1 import ConfigMap

    selector = {"metadata.name": names.CONFIGMAP_CA_ROOT}

    async def watch() -> None:
        async for event, config_map in client.watch(ConfigMap, namespace="*", fields=selector):
            if config_map.metadata.name != names.CONFIGMAP_CA_ROOT:
                continue
            drifted = (config_map.data or {}).get(ROOT_CERT_KEY) != root.pem
            if event == "DELETED" or drifted:
                await _reconcile_logged(client, config_map.metadata.namespace, root.pem)

    await _watch_forever("configmap", watch)


async def _follow_root_changes(client: Any, root: PublishedRoot) -> None:
    """On every change of the roots, update every namespace (retrying until all are)."""
    seen = root.pem
    while True:
        seen = await root.changed_from(seen)
        log.info("the trusted roots changed; updating %s in every namespace",
                 names.CONFIGMAP_CA_ROOT)  # fmt: skip
        while not await _reconcile_every_namespace(client, root):
            await asyncio.sleep(RETRY_SECONDS)


async def _reconcile_every_namespace(client: Any, root: PublishedRoot) -> bool:
    """Whether every active namespace now holds the current roots."""
    from lightkube.resources.core_v1 import Namespace

    try:
        namespaces = [n async for n in client.list(Namespace) if _active(n)]
    except Exception as exc:
        log.warning("cannot list namespaces (%s); retrying", type(exc).__name__)
        return False
    done = [await _reconcile_logged(client, n.metadata.name, root.pem) for n in namespaces]
    return all(done)


def _active(namespace: Any) -> bool:
    status = namespace.status
    return not (status is not None and status.phase == "Terminating")


async def _reconcile_logged(client: Any, namespace: str, root_pem: str) -> bool:
    try:
        outcome = await reconcile_namespace(client, namespace, root_pem)
    except Exception as exc:
        log.warning("cannot publish the root cert in %s: %s", namespace, type(exc).__name__)
        return False
    if outcome != "unchanged":
        log.info("%s %s/%s", outcome, namespace, names.CONFIGMAP_CA_ROOT)
    return True
