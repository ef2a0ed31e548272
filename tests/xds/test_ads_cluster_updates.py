"""A changed cluster takes its load assignment along: Envoy replaces the cluster by a new one
that warms until it gets an assignment, so an unchanged one is sent again (as Istio does);
otherwise a DestinationRule change would leave the cluster warming for the initial fetch
timeout (15 s)."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.endpoint.v3 import endpoint_pb2
from grpc import aio
from test_ads_protocol import WEB, Client, request, subscribe_all
from test_ads_protocol import ads as ads  # the fixture
from test_envoy_acks import mixed_snapshot

from sidemesh.api import networking
from sidemesh.xds import generate as gen
from sidemesh.xds.ads import AdsServer

HOST = "web.demo.svc.cluster.local"


async def test_a_changed_cluster_gets_its_unchanged_assignment_again(
    ads: tuple[AdsServer, aio.Channel],
) -> None:
    server, channel = ads
    client = Client(channel, delta=False)
    await subscribe_all(client, WEB, "demo")
    rule = networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"host": HOST, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1}}}},
    })  # fmt: skip
    server.set_snapshot(replace(mixed_snapshot(), version=2, destination_rules=(rule,)))

    clusters = await client.receive()
    assert clusters.type_url == gen.TYPE_CLUSTER
    await client.send(request(gen.TYPE_CLUSTER, nonce=clusters.nonce,
                              version=clusters.version_info))  # fmt: skip
    assignments = await client.receive()
    assert assignments.type_url == gen.TYPE_ENDPOINT
    names = sorted(
        endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name
        for r in assignments.resources
    )
    assert names == [f"outbound|80||{HOST}", f"outbound|9090||{HOST}"]
    client.call.cancel()
