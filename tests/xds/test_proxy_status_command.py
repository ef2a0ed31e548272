"""`sidemesh proxy-status` renders the control planes' /debug/syncz, found at an address, in a
cluster through the API server (pods/proxy), or in the local runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from sidemesh.cli.proxy_status import (
    StatusUnavailable,
    cluster_configured,
    control_plane_selector,
    fetch_from_cluster,
    proxy_path,
    proxy_status,
    render_details,
    render_table,
    running_control_planes,
)
from sidemesh.demo.script import proxy_status_command
from sidemesh.xds.monitoring import MonitoringServer

ROWS = [
    {
        "proxy": "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local",
        "pod": "web-abc.demo", "cluster_id": "Kubernetes", "revision": "canary",
        "istio_version": "1.28.0", "control_plane": "istiod-canary-7d9f",
        "types": {
            "cds": {"status": "SYNCED", "error": None},
            "eds": {"status": "STALE", "error": None},
            "lds": {"status": "NACK", "error": "duplicate filter chain match"},
        },
    }
]  # fmt: skip


def test_table_has_istio_columns_and_states() -> None:
    lines = render_table(ROWS).splitlines()
    assert lines[0].split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD",
                                "REVISION", "VERSION"]  # fmt: skip
    assert lines[1].split() == ["web-abc.demo", "Kubernetes", "SYNCED", "NACK", "STALE", "NOT",
                                "SENT", "istiod-canary-7d9f", "canary", "1.28.0"]  # fmt: skip
    assert "LDS NACK: duplicate filter chain match" in render_details(ROWS)


def test_details_say_which_version_was_refused_and_which_still_runs() -> None:
    row = {"pod": "web-abc.demo", "types": {
        "lds": {"status": "NACK", "error": "bad", "sent": "v9", "acked": "v8"},
        "cds": {"status": "NACK", "error": "worse", "sent": "c1", "acked": ""},
    }}  # fmt: skip
    assert render_details([row]).splitlines() == [
        "web-abc.demo CDS NACK: worse",
        "  refused version c1, still serving nothing yet",
        "web-abc.demo LDS NACK: bad",
        "  refused version v9, still serving v8",
    ]


async def test_command_reads_the_monitoring_endpoint() -> None:
    server = MonitoringServer(metrics=lambda: "x 1\n", syncz=lambda: ROWS)
    await server.start("127.0.0.1", 0)
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, proxy_status, ["--address", f"127.0.0.1:{server.port}", "--details"]
        )
    finally:
        await server.stop()
    assert result.exit_code == 0, result.output
    assert "web-abc.demo" in result.output and "NACK: duplicate" in result.output


def test_command_explains_an_unreachable_control_plane() -> None:
    result = CliRunner().invoke(proxy_status, ["--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "cannot read proxy status from 127.0.0.1:1" in result.output


# --- where the control planes are ---------------------------------------------------------------


def istiod(
    name: str,
    *,
    phase: str = "Running",
    ip: str | None = "10.1.0.9",
    ports: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "istio-system",
        "labels": {"app": "istiod"},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase, **({"podIP": ip} if ip else {})}
    return {"metadata": metadata, "status": status,
            "spec": {"containers": [{"name": "discovery", "ports": ports or []}]}}  # fmt: skip


def test_only_running_addressed_pods_are_asked_on_their_monitoring_port() -> None:
    planes = running_control_planes([
        istiod("istiod-b", ports=[{"name": "http-monitoring", "containerPort": 9014}]),
        istiod("istiod-a"),
        istiod("istiod-pending", phase="Pending", ip=None),
        istiod("istiod-no-ip", ip=None),
        istiod("istiod-going", deleting=True),
    ])  # fmt: skip
    assert [(p.name, p.ip, p.port) for p in planes] == [
        ("istiod-a", "10.1.0.9", 15014),
        ("istiod-b", "10.1.0.9", 9014),
    ]
    assert proxy_path(planes[1]) == (
        "/api/v1/namespaces/istio-system/pods/istiod-b:9014/proxy/debug/syncz"
    )


def test_selector_is_istiod_and_the_revision() -> None:
    assert control_plane_selector(None) == {"app": "istiod"}
    assert control_plane_selector("canary") == {"app": "istiod", "istio.io/rev": "canary"}


@dataclass
class FakeResponse:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()


class FakeCluster:
    """The two calls proxy-status makes of a lightkube AsyncClient: list pods, and GET a path on
    its connection (`client._client._client`)."""

    def __init__(self, pods: list[dict[str, Any]], answers: dict[str, FakeResponse]) -> None:
        self.pods, self.answers = pods, answers
        self.listed: list[dict[str, Any]] = []
        self.fetched: list[str] = []
        self._client = SimpleNamespace(_client=self)

    async def list(self, resource: Any, **query: Any) -> AsyncIterator[dict[str, Any]]:
        self.listed.append({"kind": resource.__name__, **query})
        for pod in self.pods:
            yield pod

    async def get(self, path: str, headers: dict[str, str] | None = None) -> FakeResponse:
        self.fetched.append(path)
        self.headers = headers
        return self.answers[path]


async def test_cluster_rows_come_through_the_pods_proxy_subresource() -> None:
    path_a = "/api/v1/namespaces/istio-system/pods/istiod-a:15014/proxy/debug/syncz"
    path_b = "/api/v1/namespaces/istio-system/pods/istiod-b:15014/proxy/debug/syncz"
    second = {**ROWS[0], "pod": "web-def.demo"}
    client = FakeCluster(
        [istiod("istiod-b"), istiod("istiod-a"), istiod("istiod-pending", phase="Pending")],
        {path_a: FakeResponse(200, orjson.dumps(ROWS)),
         path_b: FakeResponse(200, orjson.dumps([second]))},
    )  # fmt: skip
    rows = await fetch_from_cluster(client, namespace="istio-system", revision="canary")
    assert client.listed == [{
        "kind": "Pod", "namespace": "istio-system",
        "labels": {"app": "istiod", "istio.io/rev": "canary"},
    }]  # fmt: skip
    assert client.fetched == [path_a, path_b]
    assert [row["pod"] for row in rows] == ["web-abc.demo", "web-def.demo"]


async def test_cluster_pods_that_fail_are_named() -> None:
    path = "/api/v1/namespaces/istio-system/pods/istiod-a:15014/proxy/debug/syncz"
    client = FakeCluster([istiod("istiod-a")], {path: FakeResponse(503, b"no endpoints")})
    with pytest.raises(
        StatusUnavailable, match="istio-system/istiod-a: the API server answered 503"
    ):
        await fetch_from_cluster(client, namespace="istio-system", revision=None)
    nothing = FakeCluster([istiod("istiod-a", phase="Pending")], {})
    with pytest.raises(StatusUnavailable, match="no running istiod pod of revision x in namespace"):
        await fetch_from_cluster(nothing, namespace="istio-system", revision="x")


def test_no_local_mesh_and_no_cluster_falls_back_to_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.setenv("SIDEMESH_LOCAL_STATE", str(tmp_path / "no-runtime"))
    assert not cluster_configured()
    result = CliRunner().invoke(proxy_status, [])
    assert result.exit_code == 1
    assert "cannot read proxy status from 127.0.0.1:15014" in result.output


def test_an_empty_local_state_dir_says_there_is_no_mesh(tmp_path: Path) -> None:
    result = CliRunner().invoke(proxy_status, ["--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert f"no local mesh at {tmp_path / 'none'}" in result.output


async def test_address_with_revision_keeps_that_revisions_rows() -> None:
    other = {**ROWS[0], "pod": "api-1.demo", "revision": "stable"}
    server = MonitoringServer(metrics=lambda: "", syncz=lambda: [*ROWS, other])
    await server.start("127.0.0.1", 0)
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, proxy_status,
            ["--address", f"127.0.0.1:{server.port}", "--revision", "stable", "--json"],
        )  # fmt: skip
    finally:
        await server.stop()
    assert result.exit_code == 0, result.output
    assert [row["pod"] for row in orjson.loads(result.output)] == ["api-1.demo"]


def test_the_demo_shows_istioctls_command_and_runs_the_local_one() -> None:
    command = proxy_status_command("canary")
    assert command.kubectl == "istioctl proxy-status --revision canary"
    assert command.local == "sidemesh local proxy-status --revision canary"
