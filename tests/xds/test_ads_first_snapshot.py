"""A control plane that has not yet built its registry's first snapshot holds proxy streams
instead of answering them from the empty placeholder: a sidecar reconnecting to a restarted
control plane must not be told that the mesh has no services (it would drop every cluster and
listener and answer 503 until the real snapshot came)."""

from __future__ import annotations

import asyncio

from envoy.config.cluster.v3 import cluster_pb2
from grpc import aio
from test_ads_protocol import WEB, Client, request
from test_envoy_acks import mixed_snapshot
from xds_testkit import eventually

from sidemesh.xds.ads import AdsServer
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.resource_names import TYPE_CLUSTER


async def first_clusters(server: AdsServer, publish_after_hold: bool) -> set[str]:
    grpc_server = aio.server()
    grpc_server.add_generic_rpc_handlers((server.handler(),))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        client = Client(channel, delta=False)
        await client.send(request(TYPE_CLUSTER, WEB))
        if publish_after_hold:
            await eventually(lambda: server.waiting_for_snapshot == 1)
            server.set_snapshot(mixed_snapshot())
        response = await client.receive(timeout=30)
        names = set()
        for resource in response.resources:
            cluster = cluster_pb2.Cluster()
            resource.Unpack(cluster)
            names.add(cluster.name)
        return names
    finally:
        await channel.close()
        await grpc_server.stop(None)


def test_a_stream_opened_before_the_first_snapshot_gets_that_snapshot() -> None:
    server = AdsServer(MeshSnapshot(version=0), wait_for_first_snapshot=True)
    names = asyncio.run(first_clusters(server, publish_after_hold=True))
    assert any(name.startswith("outbound|") for name in names), names
    assert server.waiting_for_snapshot == 0


def test_without_a_registry_the_given_snapshot_is_served_at_once() -> None:
    server = AdsServer(mixed_snapshot())
    names = asyncio.run(first_clusters(server, publish_after_hold=False))
    assert any(name.startswith("outbound|") for name in names), names
