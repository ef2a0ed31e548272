"""istio-ca-root-cert ConfigMaps: reconcile one namespace, and the watch loop keeps them there."""

from __future__ import annotations

import asyncio
from typing import Any

from lightkube.resources.core_v1 import ConfigMap
from security_testkit import kube_client

from sidemesh.security.rootcert import publish_root_cert, reconcile_namespace

CONFIGMAPS = ("", "v1", "configmaps")
NAMESPACES = ("", "v1", "namespaces")
ROOT = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"


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


async def test_watch_publishes_to_every_namespace_and_repairs(kmock: Any) -> None:
    client = kube_client(kmock)
    for name in ("demo", "shop"):
        kmock.objects[kmock.resource(*NAMESPACES), None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
        }
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
