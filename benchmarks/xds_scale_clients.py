"""Simulated sidecars for `xds_scale.py`: ADS streams in a client process.

Each stream keeps only a proxy's bookkeeping (per type: version, nonce, resources and bytes of
the last response), never the response itself or a parsed protobuf of it: with telemetry an
outbound listener is ~7.6 KB, so one proxy's initial LDS for 1,000 services is ~7.6 MB, and a
process holding the last response of each of its 1,000 streams held gigabytes. Responses are
read field by field at the top level only (`agent.sds_messages.fields`, the one reader).

The parent drives a process through a command queue:
* `("connect", [proxy indices])` opens those streams and answers `("synced", ...)` once every
  one of them has ACKed its first CDS, EDS and LDS response (a wave);
* `("round", marker, wait)` answers `("round", {index: latency}, [sizes])` once every stream
  received a response containing `marker` (or `wait` seconds passed);
* `("stop",)` closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPES = frozenset({LDS, CDS, EDS})
SERVICE_PORT = 80
M_MMAP_THRESHOLD = -3  # glibc mallopt
STREAMS_PER_CHANNEL = 20  # several TCP connections per process, as many sidecars would have


def cluster_name(index: int) -> str:
    return f"outbound|{SERVICE_PORT}||svc{index}.ns{index % 50}.svc.cluster.local"


def proxy_ip(index: int) -> str:
    return f"10.{1 + index // 62500}.{(index // 250) % 250}.{index % 250 + 1}"


@dataclass
class LastResponse:
    """What a proxy remembers of the last response of one type."""

    version: str = ""
    nonce: str = ""
    resources: int = 0  # carried by that response (Delta: changed ones only)
    removed: int = 0  # Delta only
    size: int = 0


def summarize(raw: bytes, *, delta: bool) -> tuple[str, LastResponse]:
    """(type URL, summary) of a (Delta)DiscoveryResponse. Both messages number version 1,
    resources 2, type_url 4 and nonce 5; Delta's removed_resources is 6 (SotW's 6 is the
    control plane)."""
    from sidemesh.agent.sds_messages import fields

    found = LastResponse(size=len(raw))
    type_url = ""
    for number, value in fields(memoryview(raw)):  # views: no resource is copied
        if isinstance(value, int):
            continue
        if number == 2:
            found.resources += 1
        elif number == 1:
            found.version = bytes(value).decode()
        elif number == 4:
            type_url = bytes(value).decode()
        elif number == 5:
            found.nonce = bytes(value).decode()
        elif number == 6 and delta:
            found.removed += 1
    return type_url, found


@dataclass
class Proxy:
    index: int
    last: dict[str, LastResponse] = field(default_factory=dict)
    synced: bool = False


class ClientProcess:
    def __init__(self, args: dict[str, Any], t0: Any, results: Any) -> None:
        self.args = args
        self.t0 = t0
        self.results = results
        self.delta = args["protocol"] == "delta"
        self.services = args["services"]
        self.per_service = max(1, args["proxies"] // args["services"])
        self.eds_names = [cluster_name(i) for i in range(self.services)]
        self.proxies: dict[int, Proxy] = {}
        self.channels: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.failures: list[str] = []
        self.waiting: set[int] = set()  # the current wave, until synced
        self.wave_done = asyncio.Event()
        self.marker = b""  # bytes that identify the change of the current round
        self.latencies: dict[int, float] = {}
        self.sizes: list[int] = []
        self.round_done = asyncio.Event()

    def channel(self) -> Any:
        from grpc import aio

        # A local subchannel pool stops gRPC from funnelling every channel into one shared
        # connection, which caps concurrent streams.
        if len(self.proxies) > len(self.channels) * STREAMS_PER_CHANNEL:
            options = [("grpc.max_receive_message_length", -1),
                       ("grpc.use_local_subchannel_pool", 1)]  # fmt: skip
            self.channels.append(aio.insecure_channel(self.args["address"], options=options))
        return self.channels[-1]

    async def connect(self, indices: list[int]) -> tuple[int, float]:
        started = time.monotonic()
        self.waiting = set(indices)
        self.wave_done.clear()
        for index in indices:
            proxy = self.proxies[index] = Proxy(index)
            self.tasks.append(asyncio.create_task(self.guarded(proxy, self.channel())))
        if self.waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wave_done.wait(), self.args["timeout"])
        return len(indices) - len(self.waiting), time.monotonic() - started

    async def guarded(self, proxy: Proxy, channel: Any) -> None:
        for _ in range(20):  # like Envoy: a failed stream is opened again after a backoff
            try:
                await self.stream(proxy, channel)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted and reported in the result line
                self.failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[:3]}"[:200])
                await asyncio.sleep(0.5)

    async def stream(self, proxy: Proxy, channel: Any) -> None:
        from envoy.service.discovery.v3 import discovery_pb2
        from google.protobuf import struct_pb2
        from grpc import aio

        delta = self.delta
        request_type = (discovery_pb2.DeltaDiscoveryRequest if delta
                        else discovery_pb2.DiscoveryRequest)  # fmt: skip
        method = "DeltaAggregatedResources" if delta else "StreamAggregatedResources"
        call = channel.stream_stream(
            f"/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=lambda raw: raw,
        )()
        service = min(proxy.index // self.per_service, self.services - 1)
        metadata = struct_pb2.Struct()
        metadata.update({"NAMESPACE": f"ns{service % 50}", "SERVICE_ACCOUNT": f"sa{service}"})
        first = request_type(type_url=CDS)
        first.node.id = f"sidecar~{proxy_ip(proxy.index)}~p{proxy.index}.ns{service % 50}~x"
        first.node.metadata.CopyFrom(metadata)
        await call.write(first)
        if delta:  # like Envoy: explicit EDS names, wildcard LDS/CDS
            await call.write(request_type(type_url=EDS, resource_names_subscribe=self.eds_names))
        else:
            await call.write(request_type(type_url=EDS, resource_names=self.eds_names))
        await call.write(request_type(type_url=LDS))
        while True:
            raw = await call.read()
            if raw is aio.EOF:
                return
            received = time.monotonic()
            type_url, last = summarize(raw, delta=delta)
            carries_marker = bool(self.marker) and self.marker in raw
            del raw  # nothing of the response is kept but its summary
            proxy.last[type_url] = last
            if delta:
                ack = request_type(type_url=type_url, response_nonce=last.nonce)
            else:  # SotW ACKs repeat the subscription, as Envoy's do
                ack = request_type(
                    type_url=type_url, response_nonce=last.nonce, version_info=last.version,
                    resource_names=self.eds_names if type_url == EDS else [],
                )  # fmt: skip
            await call.write(ack)
            if not proxy.synced and proxy.last.keys() >= TYPES:
                proxy.synced = True
                self.waiting.discard(proxy.index)
                if not self.waiting:
                    self.wave_done.set()
            if carries_marker and proxy.index not in self.latencies:
                self.latencies[proxy.index] = received - self.t0.value
                self.sizes.append(last.size)
                if len(self.latencies) == len(self.proxies):
                    self.round_done.set()

    async def round(self, marker: bytes, wait: float) -> None:
        self.latencies = {}
        self.sizes = []
        self.round_done.clear()
        self.marker = marker
        self.results.put(("armed",))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.round_done.wait(), wait)
        self.marker = b""
        self.results.put(("round", dict(self.latencies), list(self.sizes)))

    async def serve(self, commands: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, commands.get)
            if command[0] == "stop":
                break
            if command[0] == "connect":
                synced, seconds = await self.connect(command[1])
                new_failures, self.failures = self.failures, []
                self.results.put(("synced", synced, seconds, new_failures[:3],
                                  len(new_failures)))  # fmt: skip
            elif command[0] == "round":
                await self.round(command[1], command[2])
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()


def client_main(args: dict[str, Any], t0: Any, results: Any, commands: Any) -> None:
    """A client process's entry point (`multiprocessing`, spawn)."""
    return_large_buffers_to_the_system()
    asyncio.run(ClientProcess(args, t0, results).serve(commands))


@contextlib.contextmanager
def client_allocator_environment() -> Iterator[None]:
    """Environment for starting a client process: at most two glibc malloc arenas. gRPC's
    threads each get an arena by default, and the 16 KB frames of multi-MB responses spread
    over them fragmented a 500-stream client to gigabytes of RSS over a SotW listener round
    (measured: 5.2 GB for 1,000 proxies, 1.2 GB with two arenas). The server is not started
    with it: its figures are those of a default allocator."""
    previous = os.environ.get("MALLOC_ARENA_MAX")
    os.environ["MALLOC_ARENA_MAX"] = previous or "2"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MALLOC_ARENA_MAX"]


def return_large_buffers_to_the_system() -> None:
    """glibc serves a large allocation with mmap and returns it to the system when freed, but
    after the first such free it raises that threshold to the freed size, so later multi-MB
    responses come from the heap, which fragments and stays resident. A fixed threshold keeps
    the clients' RSS near what they hold (they stand in for proxies: their own allocator is not
    what is measured). Best effort: not glibc, nothing changes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
