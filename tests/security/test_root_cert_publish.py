"""istio-ca-root-cert ConfigMaps: reconcile one namespace, the watch loop keeps them there, and
a change of the roots (a renewed root) reaches every namespace."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes_validate
from lightkube.resources.core_v1 import ConfigMap
from security_testkit import kube_client

from sidemesh.security.rootcert import PublishedRoot, publish_root_cert, reconcile_namespace

CONFIGMAPS = ("", "v1", "configmaps")
NAMESPACES = ("", "v1", "namespaces")
ROOT = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"
RENEWED = "-----BEGIN CERTIFICATE-----\nrenewed\n-----END CERTIFICATE-----\n"


def stored(kmock: Any, namespace: str) -> Any:
    key = (kmock.resource(*CONFIGMAPS), namespace, "istio-ca-root-cert")
    if key not in kmock.objects or kmock.objects[key].deleted:
        return None
    return kmock.objects[key]["data"]["root-cert.pem"]


async def test_reconcile_creates_updates_and_leaves_alone(kmock: Any) -> None:
    client = kube_client(kmock)
    assert await reconcile_namespace(client, "demo", ROOT) == "created"
    assert stored(kmock, "demo") == ROOT
    assert await reconcile_namespace(client, "demo", ROOT) == "unchanged"
    assert await reconcile_namespace(client, "demo", ROOT + ROOT) == "updated"
    assert stored(kmock, "demo") == ROOT + ROOT


async def eventually(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def add_namespaces(kmock: Any, *names: str) -> None:
    for name in names:
        kmock.objects[kmock.resource(*NAMESPACES), None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
        }


async def test_watch_publishes_to_every_namespace_and_repairs(kmock: Any) -> None:
    client = kube_client(kmock)
    add_namespaces(kmock, "demo", "shop")
    task = asyncio.create_task(publish_root_cert(client, ROOT))
    try:
        await eventually(lambda: stored(kmock, "demo") == ROOT and stored(kmock, "shop") == ROOT)
        # Someone edits it: it is put back.
        await client.patch(
            ConfigMap,
            "istio-ca-root-cert",
            {"data": {"root-cert.pem": "tampered"}},
            namespace="shop",
        )
        await eventually(lambda: stored(kmock, "shop") == ROOT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_change_of_the_roots_is_published_to_every_namespace(kmock: Any) -> None:
    client = kube_client(kmock)
    add_namespaces(kmock, "demo", "shop", "quiet")
    root = PublishedRoot(ROOT)
    task = asyncio.create_task(publish_root_cert(client, root))
    try:
        everywhere = ("demo", "shop", "quiet")
        await eventually(lambda: all(stored(kmock, n) == ROOT for n in everywhere))
        root.update(ROOT + RENEWED)  # the old root and the renewed one
        await eventually(lambda: all(stored(kmock, n) == ROOT + RENEWED for n in everywhere))
        root.update(RENEWED)  # the old root expired
        await eventually(lambda: all(stored(kmock, n) == RENEWED for n in everywhere))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for namespace in everywhere:
        config_map = kmock.objects[kmock.resource(*CONFIGMAPS), namespace, "istio-ca-root-cert"]
        for version in ("1.28", kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(config_map.raw, version, strict=True)


async def test_published_root_wakes_waiters_only_on_a_change() -> None:
    root = PublishedRoot(ROOT)
    waiter = asyncio.create_task(root.changed_from(ROOT))
    root.update(ROOT)  # the same roots: nothing to publish
    await asyncio.sleep(0)
    assert not waiter.done()
    root.update(RENEWED)
    assert await asyncio.wait_for(waiter, 1) == RENEWED
    assert await root.changed_from(ROOT) == RENEWED  # already changed: no wait
