"""The live MeshConfig rule both registries share (`mesh_reload`): what applies now, what waits
for a restart, what is refused; and the Kubernetes registry following the revision's
`istio-<rev>` ConfigMap on kmock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from xds_testkit import eventually, kube_client

from sidemesh.api.config import ConfigError, MeshConfig
from sidemesh.install import naming
from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.mesh_reload import (
    START_ONLY_FIELDS,
    live_mesh,
    parse_mesh_config,
    start_only_alias,
)
from sidemesh.xds.mesh_reload_kube import MeshConfigMap
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.registry_kube import KubeRegistry

REVISION = "canary"
WHERE = MeshConfigMap(naming.NAMESPACE, naming.mesh_configmap_name(REVISION))


@pytest.mark.parametrize(
    ("text", "applies", "waiting"),
    [
        ("", {}, ()),
        ("outboundTrafficPolicy: {mode: REGISTRY_ONLY}", {"outbound": "REGISTRY_ONLY"}, ()),
        ("trustDomain: example.org", {"trust_domain": "cluster.local"}, ("trustDomain",)),
        ("enablePrometheusMerge: false", {}, ("enablePrometheusMerge",)),
        ("defaultConfig: {concurrency: 4}", {}, ("defaultConfig",)),
        (
            "trustDomain: example.org\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}",
            {"outbound": "REGISTRY_ONLY", "trust_domain": "cluster.local"},
            ("trustDomain",),
        ),
    ],
)
def test_live_mesh_applies_all_but_the_start_only_fields(
    text: str, applies: dict[str, str], waiting: tuple[str, ...]
) -> None:
    start = MeshConfig()
    live = live_mesh(start, parse_mesh_config(text, "test"))
    assert live.waiting == waiting
    assert live.mesh.outbound_traffic_policy.mode == applies.get("outbound", "ALLOW_ANY")
    for name in START_ONLY_FIELDS:  # always the start values, until a restart
        assert getattr(live.mesh, name) == getattr(start, name)


def test_start_only_fields_are_named_as_users_write_them() -> None:
    aliases = [start_only_alias(name) for name in START_ONLY_FIELDS]
    assert aliases == ["trustDomain", "defaultConfig", "enablePrometheusMerge"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("outboundTrafficPolicy: {mode: SOMETIMES}", "outboundTrafficPolicy"),
        ("outboundTrafficPolicy: [", "not valid YAML"),
        ("- a list", "expected a mapping"),
    ],
)
def test_an_invalid_mesh_config_names_its_source_and_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mesh_config(text, "ConfigMap istio-system/istio key 'mesh'")
    assert str(caught.value).startswith("ConfigMap istio-system/istio")
    assert problem in str(caught.value)


def _config_map(name: str, mesh: str | None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": naming.NAMESPACE},
        "data": {} if mesh is None else {"mesh": mesh},
    }


async def test_the_kube_registry_follows_the_revisions_mesh_config_map(
    kmock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from lightkube.resources.core_v1 import ConfigMap

    configmaps = kmock.resource("", "v1", "configmaps")
    # Changed while discovery was down: the first read applies it.
    kmock.objects[configmaps, WHERE.namespace, WHERE.name] = _config_map(
        WHERE.name, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
    )
    client = kube_client(kmock)
    published: list[MeshSnapshot] = []
    registry = KubeRegistry(client, mesh=MeshConfig(), debounce=0.01, kinds={},
                            mesh_config_map=WHERE)  # fmt: skip
    caplog.set_level(logging.INFO, logger="sidemesh.xds.mesh_reload")

    kmock.objects[configmaps, WHERE.namespace, "istio"] = _config_map("istio", "")

    async def put(mesh: str | None, name: str = WHERE.name) -> None:
        from lightkube.types import PatchType

        await client.patch(ConfigMap, name, {"data": {"mesh": mesh}}, namespace=WHERE.namespace,
                           patch_type=PatchType.MERGE)  # fmt: skip

    task = asyncio.create_task(registry.run(published.append))
    try:
        await eventually(lambda: published and published[-1].outbound_policy == "REGISTRY_ONLY",
                         timeout=10)  # fmt: skip
        assert "MeshConfig/mesh" in published[-1].changed

        # Another revision's ConfigMap is not ours; ours switching back is.
        await put("outboundTrafficPolicy: {mode: ALLOW_ANY}\n", name="istio")
        await put("outboundTrafficPolicy: {mode: ALLOW_ANY}\n")
        await eventually(lambda: published[-1].outbound_policy == "ALLOW_ANY", timeout=10)
        await put("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", name="istio")

        count = len(published)
        caplog.clear()
        await put("outboundTrafficPolicy: {mode: SOMETIMES}\n")
        await eventually(lambda: "mesh config not reloaded" in caplog.text, timeout=10)
        assert f"{WHERE} key 'mesh'" in caplog.text
        await put(None)  # no `mesh` key
        await eventually(lambda: "has no 'mesh' key" in caplog.text, timeout=10)
        assert len(published) == count  # the last good one stays
        assert published[-1].outbound_policy == "ALLOW_ANY"  # never the other revision's

        caplog.clear()
        await put("trustDomain: example.org\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
        await eventually(lambda: published[-1].outbound_policy == "REGISTRY_ONLY", timeout=10)
        assert "trustDomain take effect when discovery restarts" in caplog.text
        assert published[-1].trust_domain == "cluster.local"  # as the CA signs, until then

        count = len(published)
        await client.delete(ConfigMap, WHERE.name, namespace=WHERE.namespace)
        await eventually(lambda: f"{WHERE} was deleted" in caplog.text, timeout=10)
        assert len(published) == count
        assert published[-1].outbound_policy == "REGISTRY_ONLY"  # not the defaults
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_an_equal_mesh_config_changes_nothing() -> None:
    async def run() -> bool:
        from sidemesh.xds.mesh_reload import MeshReloader

        builder = SnapshotBuilder(lambda _: None, mesh=MeshConfig())
        reloader = MeshReloader(MeshConfig())
        same = reloader.offer(parse_mesh_config("", "test"), builder, source="test")
        # only start-only fields differ: nothing new for the proxies either
        start_only = reloader.offer(
            parse_mesh_config("trustDomain: example.org", "test"), builder, source="test"
        )
        return same or start_only or bool(builder._changed)

    assert asyncio.run(run()) is False
