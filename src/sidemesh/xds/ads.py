"""The Aggregated Discovery Service: SotW and Delta xDS over one grpc.aio handler.

Per connection and type we track what the proxy subscribed to, what we last sent (a shared
`TypedResources` object, so "did it change" is an identity check plus a memoised diff), the
nonce and version of the last response, and what the proxy ACKed or NACKed. Rules:

* a request whose `response_nonce` is not our latest for that type is stale: ignored;
* a NACK (`error_detail`) is logged and counted; we do not resend the rejected version, only
  a later change of those resources is sent;
* a snapshot change wakes every connection, which pushes only the types (and for EDS/delta
  only the resources) whose bytes changed, in the order CDS, EDS, LDS;
* responses are spliced from pre-encoded resource fields (see `cache.py`), so proxies of the
  same shape share bytes and nothing is serialised per proxy except the nonce.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from sidemesh.xds import generate as gen
from sidemesh.xds.cache import TYPE_ORDER, ResourceCache, TypedResources, length_delimited
from sidemesh.xds.metrics import XdsMetrics, short_type
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import NodeError, ProxyInfo, parse_node

log = logging.getLogger("sidemesh.xds.ads")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
WILDCARD_TYPES = frozenset({gen.TYPE_LISTENER, gen.TYPE_CLUSTER})
SERVED_TYPES = frozenset(TYPE_ORDER)
_NOTHING: frozenset[Any] = frozenset()


@dataclass
class TypeState:
    subscribed: frozenset[str] | None = None  # None: wildcard (every resource of the type)
    sent: TypedResources | None = None
    pending: set[str] = field(default_factory=set)  # (re)subscribed names to send regardless
    client_versions: dict[str, str] = field(default_factory=dict)  # delta reconnects
    nonce_sent: str = ""
    version_sent: str = ""
    nonce_acked: str = ""
    version_acked: str = ""
    error: str | None = None

    def wants(self, name: str) -> bool:
        return self.subscribed is None or name in self.subscribed

    def status(self) -> str:
        if not self.nonce_sent:  # a delta proxy that reconnected with everything current
            return "SYNCED" if self.version_acked else "NOT SENT"
        if self.error is not None:
            return "NACK"
        return "SYNCED" if self.nonce_acked == self.nonce_sent else "STALE"


@dataclass(eq=False)
class Connection:
    id: str
    delta: bool
    context: Any
    proxy: ProxyInfo | None = None
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class AdsServer:
    def __init__(
        self,
        snapshot: MeshSnapshot,
        *,
        instance_id: str = "sidemesh",
        metrics: XdsMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        push_concurrency: int = 100,
    ) -> None:
        self.cache = ResourceCache(snapshot)
        self.instance_id = instance_id
        self.metrics = metrics or XdsMetrics()
        self.clock = clock
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._responses: dict[tuple[Any, ...], tuple[str, bytes | None]] = {}
        self._subscriptions: dict[frozenset[str], frozenset[str]] = {}
        # Bounds the responses queued in gRPC at once after a snapshot change (memory).
        self._push_slots = asyncio.Semaphore(push_concurrency)
        self._snapshot_time = clock()
        # `ControlPlane control_plane`: field 6 in SotW responses, 7 in delta ones.
        identifier = length_delimited(1, instance_id.encode())
        self._control_plane_sotw = length_delimited(6, identifier)
        self._control_plane_delta = length_delimited(7, identifier)

    # --- wiring ----------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        def stream(behaviour: Any, request_type: Any) -> grpc.RpcMethodHandler:
            return grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=request_type.FromString,
                response_serializer=lambda payload: payload,
            )  # fmt: skip

        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": stream(self.stream_sotw, discovery_pb2.DiscoveryRequest),
            "DeltaAggregatedResources": stream(
                self.stream_delta, discovery_pb2.DeltaDiscoveryRequest),
        })  # fmt: skip

    @property
    def snapshot(self) -> MeshSnapshot:
        return self.cache.snapshot

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        """Adopt a new snapshot and wake every connection to push what changed for it."""
        self.cache.set_snapshot(snapshot)
        self._responses.clear()
        self._snapshot_time = self.clock()
        self.metrics.snapshots += 1
        for connection in self.connections.values():
            connection.wake.set()

    # --- streams ---------------------------------------------------------------------------

    async def stream_sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(requests, context, delta=False)

    async def stream_delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(requests, context, delta=True)

    async def _serve(self, requests: AsyncIterator[Any], context: Any, *, delta: bool) -> None:
        connection = Connection(id=str(next(self._ids)), delta=delta, context=context)
        pusher = asyncio.create_task(self._push_on_change(connection))
        try:
            async for request in requests:
                async with connection.lock:
                    if connection.proxy is None:
                        await self._identify(connection, request)
                    if delta:
                        await self._on_delta_request(connection, request)
                    else:
                        await self._on_sotw_request(connection, request)
        finally:
            pusher.cancel()
            if self.connections.pop(connection.id, None) is not None:
                self.metrics.connected -= 1
                log.info("ADS disconnected: %s", connection.proxy and connection.proxy.node_id)

    async def _identify(self, connection: Connection, request: Any) -> None:
        if not request.HasField("node") or not request.node.id:
            await connection.context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "first request has no node"
            )
        metadata = json_format.MessageToDict(request.node.metadata)
        try:
            connection.proxy = parse_node(request.node.id, metadata)
        except NodeError as exc:
            await connection.context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        connection.id = f"{request.node.id}-{connection.id}"
        self.connections[connection.id] = connection
        self.metrics.connected += 1
        log.info("ADS connected (%s): %s", "delta" if connection.delta else "sotw", request.node.id)

    async def _push_on_change(self, connection: Connection) -> None:
        while True:
            await connection.wake.wait()
            connection.wake.clear()
            async with self._push_slots, connection.lock:
                pushed = False
                for type_url in TYPE_ORDER:
                    if type_url in connection.types:
                        pushed |= await self._push(connection, type_url, initial=False)
                if pushed:
                    self.metrics.push_time.observe(self.clock() - self._snapshot_time)

    # --- requests --------------------------------------------------------------------------

    def _ack(self, connection: Connection, state: TypeState, request: Any, version: str) -> bool:
        """Record an ACK or NACK; False for a stale nonce (the request is then ignored)."""
        if request.response_nonce != state.nonce_sent:
            return False
        if request.HasField("error_detail"):
            state.error = request.error_detail.message or "rejected"
            self.metrics.nacked(request.type_url)
            log.warning("NACK %s from %s (version %s): %s", short_type(request.type_url),
                        connection.proxy and connection.proxy.node_id, state.version_sent,
                        state.error)  # fmt: skip
        else:
            state.error = None
            state.nonce_acked = request.response_nonce
            state.version_acked = version
        return True

    async def _on_sotw_request(self, connection: Connection, request: Any) -> None:
        type_url = request.type_url
        if type_url not in SERVED_TYPES:
            return
        state = connection.types.setdefault(type_url, TypeState())
        initial = not request.response_nonce
        if not initial and not self._ack(connection, state, request, request.version_info):
            return
        names = frozenset(request.resource_names)
        wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
        subscription = None if wildcard else names
        if subscription is not None:  # equal subscriptions share one object (cheap keys)
            if len(self._subscriptions) > 10_000:
                self._subscriptions.clear()
            subscription = self._subscriptions.setdefault(subscription, subscription)
        if subscription != state.subscribed:
            if subscription is not None:
                state.pending |= subscription - (state.subscribed or frozenset())
            state.subscribed = subscription
        elif not initial:
            if state.pending:
                await self._push(connection, type_url, initial=False)
            return
        await self._push(connection, type_url, initial=initial)

    async def _on_delta_request(self, connection: Connection, request: Any) -> None:
        type_url = request.type_url
        if type_url not in SERVED_TYPES:
            return
        initial = type_url not in connection.types
        state = connection.types.setdefault(type_url, TypeState())
        if request.response_nonce and not self._ack(connection, state, request, state.version_sent):
            return
        subscribe = set(request.resource_names_subscribe)
        if initial:
            state.client_versions = dict(request.initial_resource_versions)
            wildcard = type_url in WILDCARD_TYPES and (not subscribe or "*" in subscribe)
            state.subscribed = None if wildcard else frozenset(subscribe)
        elif state.subscribed is not None:
            state.subscribed = (state.subscribed | subscribe) - set(
                request.resource_names_unsubscribe
            )
        state.pending |= {n for n in subscribe if n != "*"}
        if initial or subscribe:
            await self._push(connection, type_url, initial=initial)

    # --- responses -------------------------------------------------------------------------

    async def _push(self, connection: Connection, type_url: str, *, initial: bool) -> bool:
        assert connection.proxy is not None
        state = connection.types[type_url]
        typed = self.cache.resources_for(connection.proxy)[type_url]
        # Connections in the same position (same previous and next resources, same
        # subscription) get the very same response bytes, nonce included: nonces need only be
        # unique within a stream, and sharing saves a copy of a large response per proxy.
        key = (
            connection.delta, initial, state.sent, typed, state.subscribed,
            frozenset(state.pending) if state.pending else _NOTHING,
            frozenset(state.client_versions.items()) if state.client_versions else _NOTHING,
        )  # fmt: skip
        response = self._responses.get(key)
        if response is None or (response[0] and response[0] == state.nonce_sent):
            change = self.cache.diff(state.sent, typed)
            if connection.delta:
                payload = self._delta_payload(state, typed, change.changed, change.removed)
            else:
                payload = self._sotw_payload(state, typed, change.changed, change.removed, initial)
            nonce = str(next(self._nonces)) if payload is not None else ""
            response = (nonce, None if payload is None else
                        payload + length_delimited(5, nonce.encode()))  # fmt: skip
            self._responses[key] = response
        state.sent = typed
        state.pending.clear()
        state.client_versions = {}
        nonce, message = response
        if message is None:
            if not state.nonce_sent:
                state.version_sent = state.version_acked = typed.version
            return False
        state.nonce_sent = nonce
        state.version_sent = typed.version
        await connection.context.write(message)
        self.metrics.pushed(type_url)
        return True

    def _sotw_payload(
        self,
        state: TypeState,
        typed: TypedResources,
        changed: tuple[str, ...],
        removed: tuple[str, ...],
        initial: bool,
    ) -> bytes | None:
        if state.subscribed is None:  # LDS/CDS: the whole state of the world, if it changed
            if not (initial or changed or removed):
                return None
            names: list[str] = list(typed.resources)
        elif initial:
            names = [n for n in typed.resources if n in state.subscribed]
        else:  # EDS: only what changed or was newly asked for
            names = [n for n in changed if n in state.subscribed]
            names += [n for n in state.pending if n in typed.resources and n not in changed]
            if not names:
                return None
        return b"".join((
            length_delimited(1, typed.version.encode()),
            *(typed.resources[n].any_field for n in names),
            length_delimited(4, typed.type_url.encode()),
            self._control_plane_sotw,
        ))  # fmt: skip

    def _delta_payload(
        self,
        state: TypeState,
        typed: TypedResources,
        changed: tuple[str, ...],
        removed: tuple[str, ...],
    ) -> bytes | None:
        names = [n for n in changed if state.wants(n)]
        names += [n for n in state.pending if n in typed.resources and n not in changed]
        gone = [n for n in removed if state.wants(n)]
        if state.client_versions:  # reconnect: skip what the proxy already has
            known = state.client_versions
            names = [n for n in names if known.get(n) != typed.resources[n].version]
            gone += [n for n in known if n not in typed.resources and state.wants(n)]
        gone += [n for n in state.pending if n not in typed.resources]
        if not names and not gone:
            return None
        parts = [length_delimited(1, typed.version.encode())]
        for name in names:
            resource = typed.resources[name]
            entry = (
                length_delimited(3, name.encode())
                + length_delimited(1, resource.version.encode())
                + resource.any_field
            )
            parts.append(length_delimited(2, entry))
        parts.append(length_delimited(4, typed.type_url.encode()))
        parts += [length_delimited(6, n.encode()) for n in sorted(set(gone))]
        parts.append(self._control_plane_delta)
        return b"".join(parts)

    # --- status ----------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every connected proxy and, per type, SYNCED / STALE / NACK / NOT SENT."""
        rows = []
        for connection in self.connections.values():
            proxy = connection.proxy
            assert proxy is not None
            rows.append({
                "proxy": proxy.node_id,
                "pod": f"{proxy.pod_name}.{proxy.namespace}",
                "cluster_id": proxy.cluster_id,
                "revision": proxy.revision,
                "istio_version": proxy.istio_version,
                "control_plane": self.instance_id,
                "protocol": "delta" if connection.delta else "sotw",
                "connected_at": connection.connected_at,
                "types": {
                    short_type(t): {"status": s.status(), "sent": s.version_sent,
                                    "acked": s.version_acked, "error": s.error}
                    for t, s in connection.types.items()
                },
            })  # fmt: skip
        return sorted(rows, key=lambda row: str(row["proxy"]))
