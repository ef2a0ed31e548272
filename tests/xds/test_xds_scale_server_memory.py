"""ADS memory at scale: what the server holds does not grow with the number of streams.

With 1,000 services a proxy's listener set is megabytes, and proxies of distinct shapes (their
own inbound listener) cannot share a response. So: at most `write_concurrency` whole-set
responses are being written at once (gRPC keeps a copy of each until the proxy reads it), the
responses kept for sharing stay within `response_memory_bytes`, and no shape's whole set is
concatenated and kept beside the one response that carries it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from xds_testkit import eventually

from sidemesh.xds.ads import AdsServer
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, ServicePort
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER
from sidemesh.xds.write_slots import LARGE_RESPONSE_BYTES

SERVICES = 150  # enough listeners for whole-set responses over LARGE_RESPONSE_BYTES
PROXIES = 6  # each the endpoint of a service of its own: six shapes, nothing to share


def snapshot() -> MeshSnapshot:
    services = [
        Service(f"ns{i % 5}", f"svc{i}", f"10.96.{i // 250}.{i % 250 + 1}",
                (ServicePort(80, "http", "HTTP", 8080),))
        for i in range(SERVICES)
    ]  # fmt: skip
    endpoints = {
        s.hostname: (Endpoint(f"10.1.0.{i + 1}", 8080, 80, True, "default", s.namespace,
                              f"p{i}", True),)
        for i, s in enumerate(services)
    }  # fmt: skip
    return MeshSnapshot(1, tuple(services), endpoints)


def first_requests(index: int) -> list[discovery_pb2.DiscoveryRequest]:
    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": f"ns{index % 5}"})
    node = base_pb2.Node(id=f"sidecar~10.1.0.{index + 1}~p{index}.ns{index % 5}~x",
                         metadata=metadata)  # fmt: skip
    names = [f"outbound|80||svc{i}.ns{i % 5}.svc.cluster.local" for i in range(SERVICES)]
    return [
        discovery_pb2.DiscoveryRequest(type_url=TYPE_CLUSTER, node=node),
        discovery_pb2.DiscoveryRequest(type_url=TYPE_ENDPOINT, resource_names=names),
        discovery_pb2.DiscoveryRequest(type_url=TYPE_LISTENER),
    ]


class SlowProxies:
    """Stream contexts whose large writes complete only when the test lets them (a proxy that
    has not read yet), counting how many are outstanding at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.outstanding = 0
        self.most_outstanding = 0
        self.received: dict[int, list[bytes]] = {}

    def context(self, index: int) -> Any:
        proxies = self
        self.received[index] = []

        class Context:
            async def write(self, message: bytes) -> None:
                if len(message) >= LARGE_RESPONSE_BYTES:
                    proxies.outstanding += 1
                    proxies.most_outstanding = max(proxies.most_outstanding, proxies.outstanding)
                    await proxies.gate.wait()
                    proxies.outstanding -= 1
                proxies.received[index].append(message)

        return Context()


async def requests(index: int, done: asyncio.Event) -> AsyncIterator[Any]:
    for request in first_requests(index):
        yield request
    await done.wait()


async def test_many_proxies_connecting_at_once_hold_a_bounded_number_of_large_responses() -> None:
    ads = AdsServer(snapshot(), write_concurrency=2, response_memory_bytes=3 * 1024 * 1024)
    proxies = SlowProxies()
    done = asyncio.Event()
    streams = [
        asyncio.create_task(
            ads._serve(requests(i, done), proxies.context(i), delta=False, authenticator=None)
        )
        for i in range(PROXIES)
    ]
    # Every proxy has asked, two whole-set responses are out, the others wait for a slot.
    await eventually(lambda: len(ads.connections) == PROXIES and proxies.outstanding == 2)
    await asyncio.sleep(0)  # one more turn: nobody else gets past the slots
    assert proxies.outstanding == 2
    proxies.gate.set()
    await eventually(lambda: all(len(r) == 3 for r in proxies.received.values()))
    assert proxies.most_outstanding == 2
    assert ads.response_memo_bytes <= 3 * 1024 * 1024

    for index, responses in proxies.received.items():
        by_type = {}
        for raw in responses:
            response = discovery_pb2.DiscoveryResponse.FromString(raw)
            by_type[response.type_url] = response
        connection = next(c for c in ads.connections.values() if f"~p{index}." in c.id)
        listeners = connection.types[TYPE_LISTENER].sent
        assert listeners is not None and listeners.base is not None  # a shape's own set
        # Its whole set went out in one response, and was not concatenated and kept apart.
        assert "encoded" not in vars(listeners)
        sent = by_type[TYPE_LISTENER]
        assert len(sent.resources) == SERVICES + 2  # every service's, capture and inbound
        assert (
            b"".join(
                discovery_pb2.DiscoveryResponse(resources=[r]).SerializeToString()
                for r in sent.resources
            )
            == listeners.encoded
        )  # the same bytes, in the same order
        assert by_type[TYPE_ENDPOINT].nonce and by_type[TYPE_CLUSTER].nonce
    done.set()
    await asyncio.gather(*streams)
    assert not ads.connections


async def test_a_proxy_that_does_not_read_gives_its_write_slot_back() -> None:
    ads = AdsServer(snapshot(), write_concurrency=1, write_slot_seconds=0.05)
    stuck = asyncio.Event()  # never set: proxy 0 never reads its large responses
    proxies = SlowProxies()
    proxies.gate.set()  # everyone else reads at once
    done = asyncio.Event()
    contexts = [proxies.context(i) for i in range(PROXIES)]

    class Stuck:
        async def write(self, message: bytes) -> None:
            await stuck.wait()

    contexts[0] = Stuck()
    streams = [
        asyncio.create_task(
            ads._serve(requests(i, done), contexts[i], delta=False, authenticator=None)
        )
        for i in range(PROXIES)
    ]
    # The one slot is not kept by the proxy that never reads: every other proxy is served.
    await eventually(lambda: all(len(proxies.received[i]) == 3 for i in range(1, PROXIES)))
    done.set()
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    assert not ads.connections
