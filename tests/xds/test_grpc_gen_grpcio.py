"""A real grpcio client (its xDS resolver, `xds:///HOST:PORT`) resolves services through our
discovery's gRPC generator and calls real grpcio servers: the default route, a short name,
a VirtualService's weighted subsets, and a route change pushed to a connected client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from async_waits import eventually
from proxyless_grpc_kit import ads_server, call_through_xds, who_server
from sidemesh.agent.grpc_bootstrap import GrpcIdentity, grpc_bootstrap
from sidemesh.api.config import MeshConfig
from sidemesh.xds.ads import AdsServer
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot

HOST = "who.demo.svc.cluster.local"


def pod(name: str, ip: str, port: int, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo",
                     "labels": {"app": "who", "version": version}},
        "spec": {"containers": [{"name": "app",
                                 "ports": [{"name": "grpc", "containerPort": port}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "who", "namespace": "demo"},
    "spec": {"clusterIP": "10.96.0.30", "selector": {"app": "who"},
             "ports": [{"name": "grpc", "port": 7070, "targetPort": "grpc"}]},
}  # fmt: skip
RULE = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "who", "namespace": "demo"},
    "spec": {"host": "who", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                        {"name": "v2", "labels": {"version": "v2"}}]},
}  # fmt: skip


def routes_to(subset: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "who", "namespace": "demo"},
        "spec": {"hosts": ["who"], "http": [{"route": [
            {"destination": {"host": "who", "subset": name}, "weight": 100 if subset == name else 0}
            for name in ("v1", "v2")
        ]}]},
    }  # fmt: skip


def mesh(ports: tuple[int, int], *config: dict[str, Any], version: int = 1) -> MeshSnapshot:
    objects = [SERVICE, pod("who-v1", "127.0.0.1", ports[0], "v1"),
               pod("who-v2", "127.0.0.2", ports[1], "v2"), *config]  # fmt: skip
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=version)


def bootstrap(tmp_path: Path, ads_port: int) -> Path:
    identity = GrpcIdentity(pod_name="client-0", namespace="demo", instance_ip="127.0.0.9",
                            domain="demo.svc.cluster.local")  # fmt: skip
    path = tmp_path / "bootstrap.json"
    path.write_bytes(grpc_bootstrap(identity, discovery_address=f"127.0.0.1:{ads_port}"))
    return path


async def test_a_grpc_client_reaches_every_endpoint_by_full_and_short_name(
    tmp_path: Path,
) -> None:
    async with (
        who_server("v1") as first,
        who_server("v2", host="127.0.0.2") as second,
        ads_server(mesh((first, second))) as (_, port),
    ):
        path = bootstrap(tmp_path, port)
        answers = await call_through_xds(path, f"{HOST}:7070", calls=20)
        assert set(answers) == {"v1", "v2"}  # round robin over both endpoints
        assert await call_through_xds(path, "who:7070", calls=1) in (["v1"], ["v2"])


async def test_virtual_service_weights_pick_the_subset_and_changes_reach_the_client(
    tmp_path: Path,
) -> None:
    async with (
        who_server("v1") as first,
        who_server("v2", host="127.0.0.2") as second,
        ads_server(mesh((first, second), RULE, routes_to("v2"))) as (ads, port),
    ):
        path = bootstrap(tmp_path, port)
        assert set(await call_through_xds(path, f"{HOST}:7070", calls=10)) == {"v2"}
        # A client stays connected while the route changes: it follows the push.
        client = asyncio.ensure_future(call_through_xds(path, f"{HOST}:7070", calls=10, until="v1"))
        await eventually(lambda: synced(ads) or client.done(), timeout=60)
        assert not client.done()  # it is still getting v2
        ads.set_snapshot(mesh((first, second), RULE, routes_to("v1"), version=2))
        assert set(await client) == {"v1"}


def synced(ads: AdsServer) -> bool:
    """The client has its listener, cluster and assignment, ACKed."""
    rows = [row for row in ads.status() if row["proxy"].startswith("sidecar~127.0.0.9~")]
    return any(len(row["types"]) == 3 and all(t["status"] == "SYNCED"
                                              for t in row["types"].values())
               for row in rows)  # fmt: skip
