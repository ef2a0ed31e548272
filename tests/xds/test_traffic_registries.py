"""Both registries read VirtualServices and DestinationRules through `validate`: a valid one
reaches the snapshot, an invalid one is skipped with its reason logged (once), never pushed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import yaml
from xds_testkit import eventually, kube_client

from sidemesh.api.config import MeshConfig
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.registry_files import FileRegistry, load_snapshot
from sidemesh.xds.registry_kube import KubeRegistry


def virtual_service(name: str, timeout: str = "1s") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"hosts": [name],
                 "http": [{"route": [{"destination": {"host": name}}], "timeout": timeout}]},
    }  # fmt: skip


def destination_rule(name: str, subset: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"host": name, "subsets": [{"name": subset, "labels": {"version": "v1"}}]},
    }


def test_files_keep_the_valid_ones_and_skip_the_invalid(tmp_path: Path) -> None:
    documents = [
        virtual_service("good"),
        virtual_service("bad", timeout="later"),
        destination_rule("good"),
        destination_rule("bad", subset="Not_A_Label"),
    ]
    (tmp_path / "traffic.yaml").write_text(yaml.safe_dump_all(documents))
    snapshot = load_snapshot([tmp_path])
    assert [r.name for r in snapshot.virtual_services] == ["good"]
    assert [r.name for r in snapshot.destination_rules] == ["good"]


async def test_file_registry_logs_an_invalid_one_once(tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "traffic.yaml").write_text(
        yaml.safe_dump_all([virtual_service("bad", timeout="later"), virtual_service("good")])
    )
    published: list[MeshSnapshot] = []
    registry = FileRegistry([tmp_path], debounce=0.01, poll=0.01)
    caplog.set_level(logging.WARNING, logger="sidemesh.xds.builder")
    task = asyncio.create_task(registry.run(published.append))
    try:
        await eventually(lambda: published and published[-1].virtual_services)
        assert [r.name for r in published[-1].virtual_services] == ["good"]
        (tmp_path / "more.yaml").write_text(yaml.safe_dump(destination_rule("good")))
        await eventually(lambda: published[-1].destination_rules)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1, skipped  # not once per snapshot
    assert "VirtualService demo/bad" in skipped[0] and "spec.http[0].timeout" in skipped[0]


def seed(kmock: Any, plural: str, obj: dict[str, Any]) -> None:
    resource = kmock.resource("networking.istio.io", "v1", plural)
    kmock.objects[resource, "demo", obj["metadata"]["name"]] = obj


async def test_kube_registry_follows_virtual_services_and_destination_rules(
    kmock: Any, caplog: Any
) -> None:
    client = kube_client(kmock)
    seed(kmock, "virtualservices", virtual_service("good"))
    seed(kmock, "virtualservices", virtual_service("bad", timeout="later"))
    seed(kmock, "destinationrules", destination_rule("good"))
    seed(kmock, "serviceentries", {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": "demo"},
        "spec": {"hosts": ["api.example.com"], "resolution": "DNS",
                 "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]}})  # fmt: skip
    seed(kmock, "sidecars", {
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "demo"},
        "spec": {"egress": [{"hosts": ["./*"]}]}})  # fmt: skip
    published: list[MeshSnapshot] = []
    registry = KubeRegistry(client, mesh=MeshConfig(), debounce=0.02)
    caplog.set_level(logging.WARNING, logger="sidemesh.xds.builder")
    task = asyncio.create_task(registry.run(published.append))
    try:
        await eventually(
            lambda: published and published[-1].virtual_services
            and published[-1].destination_rules and published[-1].sidecars
            and published[-1].service_entries
        )  # fmt: skip
        assert [r.name for r in published[-1].virtual_services] == ["good"]
        assert [s.hostname for s in published[-1].services] == ["api.example.com"]
        assert [r.name for r in published[-1].sidecars] == ["default"]
        assert [r.name for r in published[-1].destination_rules] == ["good"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert any("VirtualService demo/bad" in r.getMessage() for r in caplog.records)


class _NotFound(Exception):
    """lightkube's ApiError as `status_code` reads it: the status on `.response`."""

    class response:
        status_code = 404


class _ClusterWithoutNetworkingCrds:
    """Lists nothing; Istio's traffic kinds answer 404 (CRDs absent)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def list(self, resource: Any, **_scope: Any) -> Any:
        info = getattr(resource, "_api_info", None)
        kind = info.resource.kind if info is not None else ""
        if kind in ("VirtualService", "DestinationRule", "ServiceEntry", "Sidecar"):
            self.asked.append(kind)
            raise _NotFound("the server could not find the requested resource")

        class Listed:
            def __aiter__(self) -> Any:
                async def nothing() -> Any:
                    for item in ():
                        yield item

                return nothing()

        return Listed()

    async def watch(self, resource: Any, **_options: Any) -> Any:
        await asyncio.Event().wait()  # nothing ever changes
        yield None  # pragma: no cover


async def test_kube_registry_without_the_networking_crds_is_quiet(
    monkeypatch: Any, caplog: Any
) -> None:
    import sidemesh.xds.registry_kube as registry_kube

    monkeypatch.setattr(registry_kube, "MISSING_KIND_RETRY_SECONDS", 3600.0)
    caplog.set_level(logging.INFO, logger="sidemesh.xds.registry_kube")
    client = _ClusterWithoutNetworkingCrds()
    registry = KubeRegistry(client, mesh=MeshConfig(), debounce=0.02)
    task = asyncio.create_task(registry.run(lambda _snapshot: None))
    try:
        await eventually(
            lambda: (
                sorted(client.asked)
                == ["DestinationRule", "ServiceEntry", "Sidecar", "VirtualService"]
            )
        )
        await eventually(
            lambda: len([r for r in caplog.records if "no CRD" in r.getMessage()]) == 4
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
