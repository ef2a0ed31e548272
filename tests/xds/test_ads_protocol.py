"""ADS protocol: nonces, ACK/NACK, stale requests, ordered and targeted pushes, delta resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from grpc import aio
from test_envoy_acks import mixed_snapshot
from xds_testkit import eventually

from sidemesh.xds import generate as gen
from sidemesh.xds.ads import AdsServer, Connection
from sidemesh.xds.model import Endpoint, PeerAuthentication

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
WEB = "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local"
DB = "sidecar~10.0.0.6~db-0.data~data.svc.cluster.local"


def node(node_id: str, namespace: str, labels: dict[str, str] | None = None) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": namespace, "LABELS": labels or {}})
    return base_pb2.Node(id=node_id, metadata=metadata)


class Client:
    def __init__(self, channel: aio.Channel, delta: bool) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        response = (discovery_pb2.DeltaDiscoveryResponse if delta
                    else discovery_pb2.DiscoveryResponse)  # fmt: skip
        method = "DeltaAggregatedResources" if delta else "StreamAggregatedResources"
        self.call = channel.stream_stream(
            METHOD + method, request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )()  # fmt: skip

    async def send(self, message: Any) -> None:
        await self.call.write(message)

        self._reading: asyncio.Task[Any] | None = None

    def _read(self) -> asyncio.Task[Any]:
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.call.read())
        return self._reading

    async def receive(self, timeout: float = 5.0) -> Any:
        message = await asyncio.wait_for(asyncio.shield(self._read()), timeout)
        self._reading = None
        return message


@pytest.fixture
async def ads() -> AsyncIterator[tuple[AdsServer, aio.Channel]]:
    server = AdsServer(mixed_snapshot(), instance_id="cp-test")
    grpc_server = aio.server()
    grpc_server.add_generic_rpc_handlers((server.handler(),))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel
    await channel.close()
    await grpc_server.stop(None)


def request(
    type_url: str,
    node_id: str | None = None,
    namespace: str = "demo",
    *,
    names: tuple[str, ...] = (),
    nonce: str = "",
    version: str = "",
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    message = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if node_id:
        message.node.CopyFrom(node(node_id, namespace, {"app": "web"}))
    if error is not None:
        message.error_detail.message = error
    return message


async def subscribe_all(client: Client, node_id: str, namespace: str) -> dict[str, Any]:
    """CDS, then EDS for every cluster, then LDS; ACK each; the last responses by type."""
    last = {}
    await client.send(request(gen.TYPE_CLUSTER, node_id, namespace))
    cds = await client.receive()
    await client.send(request(gen.TYPE_CLUSTER, nonce=cds.nonce, version=cds.version_info))
    eds_names = tuple(sorted(name for name, kind in map(_cluster, cds.resources) if kind == "EDS"))
    await client.send(request(gen.TYPE_ENDPOINT, names=eds_names))
    eds = await client.receive()
    await client.send(request(gen.TYPE_ENDPOINT, names=eds_names, nonce=eds.nonce,
                              version=eds.version_info))  # fmt: skip
    await client.send(request(gen.TYPE_LISTENER))
    lds = await client.receive()
    await client.send(request(gen.TYPE_LISTENER, nonce=lds.nonce, version=lds.version_info))
    last.update({"cds": cds, "eds": eds, "lds": lds, "eds_names": eds_names})
    return last


def _cluster(resource: Any) -> tuple[str, str]:
    cluster = cluster_pb2.Cluster.FromString(resource.value)
    return cluster.name, cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)


async def wait_status(server: AdsServer, node_id: str, short: str, status: str) -> None:
    def reached() -> bool:
        rows = {r["proxy"]: r for r in server.status()}
        return bool(rows.get(node_id, {}).get("types", {}).get(short, {}).get("status") == status)

    await eventually(reached, timeout=30, every=0.01)


def newest_connection(server: AdsServer, node_id: str) -> Connection:
    found = [c for c in server.connections.values() if c.proxy and c.proxy.node_id == node_id]
    assert found, f"{node_id} not connected"
    return found[-1]


async def settled(server: AdsServer, node_id: str) -> None:
    """Wait until the proxy's stream has caught up with the current snapshot: every type it
    subscribed to was compared with the current resources and any response was written (and
    counted in `server.metrics.pushes`). "Nothing was sent" is then a counter that did not
    move, not a response that failed to arrive within a guessed time."""

    def caught_up() -> bool:
        connection = newest_connection(server, node_id)
        assert connection.proxy is not None
        current = server.cache.resources_for(connection.proxy)
        return (
            not connection.wake.is_set()
            and not connection.lock.locked()
            and all(state.sent is current[t] for t, state in connection.types.items())
        )

    await eventually(caught_up, timeout=30, every=0.01)


async def test_ack_nack_and_no_blind_resend(ads: tuple[AdsServer, aio.Channel]) -> None:
    server, channel = ads
    client = Client(channel, delta=False)
    await client.send(request(gen.TYPE_CLUSTER, WEB))
    first = await client.receive()
    assert first.type_url == gen.TYPE_CLUSTER and first.nonce and first.version_info
    assert first.control_plane.identifier == "cp-test"
    await wait_status(server, WEB, "cds", "STALE")
    await client.send(request(gen.TYPE_CLUSTER, nonce=first.nonce, error="bad cluster"))
    await wait_status(server, WEB, "cds", "NACK")
    assert server.metrics.nacks == {"cds": 1}
    assert server.metrics.pushes == {"cds": 1}
    # The same content again (a snapshot that changes nothing for CDS) is not resent.
    server.set_snapshot(replace(mixed_snapshot(), version=2))
    await settled(server, WEB)
    assert server.metrics.pushes == {"cds": 1}
    # A real change is sent, and ACKing it clears the NACK. It is the next response on the
    # stream, so nothing was resent before it either.
    server.set_snapshot(
        replace(mixed_snapshot(), version=3, services=mixed_snapshot().services[:2])
    )
    fixed = await client.receive()
    assert fixed.nonce != first.nonce and fixed.version_info != first.version_info
    proxy = newest_connection(server, WEB).proxy
    assert proxy is not None
    assert fixed.version_info == server.cache.resources_for(proxy)[gen.TYPE_CLUSTER].version
    await client.send(request(gen.TYPE_CLUSTER, nonce=fixed.nonce, version=fixed.version_info))
    await wait_status(server, WEB, "cds", "SYNCED")
    client.call.cancel()


async def test_stale_nonce_is_ignored(ads: tuple[AdsServer, aio.Channel]) -> None:
    server, channel = ads
    client = Client(channel, delta=False)
    await client.send(request(gen.TYPE_CLUSTER, WEB))
    first = await client.receive()
    await client.send(request(gen.TYPE_CLUSTER, nonce="not-ours", error="ignored"))
    # Requests on a stream are handled in order: once the ACK behind it is seen, the stale
    # NACK was handled too, and neither was answered.
    await client.send(request(gen.TYPE_CLUSTER, nonce=first.nonce, version=first.version_info))
    await wait_status(server, WEB, "cds", "SYNCED")
    assert server.metrics.nacks == {}
    assert server.metrics.pushes == {"cds": 1}
    client.call.cancel()


async def test_pushes_are_ordered_and_only_to_affected_proxies(
    ads: tuple[AdsServer, aio.Channel],
) -> None:
    server, channel = ads
    web, db = Client(channel, delta=False), Client(channel, delta=False)
    await subscribe_all(web, WEB, "demo")
    await subscribe_all(db, DB, "data")
    # A policy change in `demo` only changes the web proxy's inbound listener.
    snapshot = mixed_snapshot()
    policies = tuple(p for p in snapshot.peer_authentications if p.namespace != "demo")
    snapshot = replace(
        snapshot,
        version=2,
        peer_authentications=(*policies, PeerAuthentication("demo", "default", "STRICT")),
    )
    before = dict(server.metrics.pushes)
    server.set_snapshot(snapshot)
    pushed = await web.receive()
    assert pushed.type_url == gen.TYPE_LISTENER
    await web.send(request(gen.TYPE_LISTENER, nonce=pushed.nonce, version=pushed.version_info))
    await settled(server, DB)
    await settled(server, WEB)
    assert server.metrics.pushes == {**before, "lds": before["lds"] + 1}  # web's, not db's
    # An endpoint change goes to both, EDS only, and only the changed assignment.
    endpoints = dict(snapshot.endpoints)
    host = "db.data.svc.cluster.local"
    endpoints[host] = (*endpoints[host], Endpoint("10.0.0.66", 5432, 5432, namespace="data"))
    server.set_snapshot(replace(snapshot, version=3, endpoints=endpoints))
    for client in (web, db):
        response = await client.receive()
        assert response.type_url == gen.TYPE_ENDPOINT
        assert len(response.resources) == 1
    # A new service: CDS before EDS before LDS.
    new_services = (*snapshot.services, replace(snapshot.services[1], name="db2", vip="10.96.1.1"))
    server.set_snapshot(replace(snapshot, version=4, services=new_services, endpoints=endpoints))
    order = [(await web.receive()).type_url for _ in range(2)]
    assert order == [gen.TYPE_CLUSTER, gen.TYPE_LISTENER]  # EDS only once Envoy asks for db2
    assert server.metrics.push_time.count >= 3
    web.call.cancel()
    db.call.cancel()


async def test_delta_sends_changes_and_resumes_without_resending(
    ads: tuple[AdsServer, aio.Channel],
) -> None:
    server, channel = ads
    client = Client(channel, delta=True)
    first = discovery_pb2.DeltaDiscoveryRequest(type_url=gen.TYPE_CLUSTER)
    first.node.CopyFrom(node(WEB, "demo", {"app": "web"}))
    await client.send(first)
    response = await client.receive()
    versions = {r.name: r.version for r in response.resources}
    assert "outbound|5432||db.data.svc.cluster.local" in versions
    await client.send(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=gen.TYPE_CLUSTER, response_nonce=response.nonce
        )
    )
    snapshot = mixed_snapshot()
    server.set_snapshot(replace(snapshot, version=2, services=snapshot.services[:2]))
    change = await client.receive()
    assert list(change.resources) == []
    assert list(change.removed_resources) == ["outbound|80||old.legacy.svc.cluster.local"]
    client.call.cancel()
    # Reconnect knowing everything: nothing to send, and the status says SYNCED.
    again = Client(channel, delta=True)
    resume = discovery_pb2.DeltaDiscoveryRequest(type_url=gen.TYPE_CLUSTER)
    resume.node.CopyFrom(node(WEB, "demo", {"app": "web"}))
    current = server.cache.resources_for(
        next(iter(server.connections.values())).proxy if server.connections else _proxy()
    )[gen.TYPE_CLUSTER]
    resume.initial_resource_versions.update({n: r.version for n, r in current.resources.items()})
    before, earlier = dict(server.metrics.pushes), set(server.connections)
    await again.send(resume)
    # SYNCED without a response: the server recorded the proxy's versions as current.
    await eventually(lambda: set(server.connections) - earlier, timeout=30, every=0.01)
    await settled(server, WEB)
    assert newest_connection(server, WEB).types[gen.TYPE_CLUSTER].status() == "SYNCED"
    assert server.metrics.pushes == before
    again.call.cancel()


def _proxy() -> Any:
    from sidemesh.xds.proxy import parse_node

    return parse_node(WEB, {"NAMESPACE": "demo", "LABELS": {"app": "web"}})


async def test_a_vip_move_is_one_listener_in_and_one_out_over_delta_and_all_over_sotw(
    ads: tuple[AdsServer, aio.Channel],
) -> None:
    server, channel = ads
    sotw = Client(channel, delta=False)
    await subscribe_all(sotw, WEB, "demo")
    delta = Client(channel, delta=True)
    for type_url in (gen.TYPE_CLUSTER, gen.TYPE_LISTENER):
        first = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
        first.node.CopyFrom(node(DB, "data"))
        await delta.send(first)
        response = await delta.receive()
        await delta.send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        )
    snapshot = mixed_snapshot()
    services = list(snapshot.services)
    services[1] = replace(services[1], vip="10.96.0.99")  # db moves
    server.set_snapshot(replace(snapshot, version=2, services=tuple(services)))
    change = await delta.receive()
    assert change.type_url == gen.TYPE_LISTENER  # clusters do not depend on the VIP
    assert [r.name for r in change.resources] == ["10.96.0.99_5432"]
    assert list(change.removed_resources) == ["10.96.0.11_5432"]
    whole = await sotw.receive()
    assert whole.type_url == gen.TYPE_LISTENER
    assert len(whole.resources) == 6  # SotW: every listener, as the protocol requires
    sotw.call.cancel()
    delta.call.cancel()


async def test_a_failed_build_for_one_proxy_is_logged_and_the_next_snapshot_still_pushes(
    ads: tuple[AdsServer, aio.Channel],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, channel = ads
    web = Client(channel, delta=False)
    await subscribe_all(web, WEB, "demo")
    working = server.cache.resources_for

    def broken(proxy: Any) -> Any:
        raise RuntimeError("generator bug")

    monkeypatch.setattr(server.cache, "resources_for", broken)
    snapshot = mixed_snapshot()
    policies = tuple(p for p in snapshot.peer_authentications if p.namespace != "demo")
    strict = (*policies, PeerAuthentication("demo", "default", "STRICT"))
    with caplog.at_level("ERROR", logger="sidemesh.xds.ads"):
        server.set_snapshot(replace(snapshot, version=2, peer_authentications=strict))
        await eventually(lambda: any("generator bug" in (r.exc_text or "") or
                                     (r.exc_info and "generator bug" in str(r.exc_info[1]))
                                     for r in caplog.records), timeout=30, every=0.01)
    monkeypatch.setattr(server.cache, "resources_for", working)
    server.set_snapshot(replace(snapshot, version=3, peer_authentications=strict))
    pushed = await web.receive(timeout=30)
    assert pushed.type_url == gen.TYPE_LISTENER
    web.call.cancel()
