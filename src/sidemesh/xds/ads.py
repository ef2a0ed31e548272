"""The Aggregated Discovery Service: SotW and Delta xDS over one grpc.aio handler.

Per connection and type we track what the proxy subscribed to, what we last sent (a shared
`TypedResources` object, so "did it change" is an identity check plus a memoised diff), the
nonce and version of the last response, and what the proxy ACKed or NACKed. Rules:

* a request whose `response_nonce` is not our latest for that type is stale: ignored;
* a NACK (`error_detail`) is logged and counted; we do not resend the rejected version, only
  a later change of those resources is sent;
* a snapshot change wakes every connection, which pushes only the types whose bytes changed,
  in the order CDS, EDS, LDS; Delta sends only the changed resources and names the removed
  ones, SotW EDS only the changed assignments, SotW LDS/CDS the whole (pre-encoded) set;
* responses are spliced from pre-encoded resource fields (`responses.py`, `cache.py`), so
  proxies in the same position share one response, nonce included;
* memory stays bounded whatever the number of streams: shared responses are kept in an LRU
  bounded in bytes (proxies of distinct shapes cannot share, and a 1,000-service LDS response
  is megabytes; `shared_responses.py`), and at most `write_concurrency` large responses are
  being written at once (gRPC copies each message it sends and holds it until the proxy
  reads it; `write_slots.py`);
* with an authenticator (:15012) a stream must authenticate before its first request is read,
  and the node it claims must be the caller's own (`authn.py`).
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from sidemesh.api.text import untrusted
from sidemesh.xds.authn import XdsAuthenticator, XdsAuthError, authorize
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.connection import Connection
from sidemesh.xds.grpc_gen import GrpcGenerator, is_grpc
from sidemesh.xds.metrics import XdsMetrics, short_type
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import NodeError, parse_node
from sidemesh.xds.proxy_status import status_rows
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER
from sidemesh.xds.resource_sets import TYPE_ORDER, TypedResources
from sidemesh.xds.responses import TypeState
from sidemesh.xds.shared_responses import SharedResponses
from sidemesh.xds.write_slots import WriteSlots

log = logging.getLogger("sidemesh.xds.ads")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
WILDCARD_TYPES = frozenset({TYPE_LISTENER, TYPE_CLUSTER})
SERVED_TYPES = frozenset(TYPE_ORDER)
# A first response, or a SotW LDS/CDS one, for a set this large takes its write slot before it is
# built (a few hundred listeners with telemetry are megabytes).
LARGE_SET_RESOURCES = 100
# Envoy's NACK message, kept per proxy and type for proxy-status, and logged: bounded, since
# one proxy per type could otherwise hold (or log) a message of any size.
NACK_KEPT_CHARACTERS = 4096
NACK_LOGGED_CHARACTERS = 1000


class AdsServer:
    def __init__(
        self,
        snapshot: MeshSnapshot,
        *,
        instance_id: str = "sidemesh",
        metrics: XdsMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        push_concurrency: int = 100,
        write_concurrency: int = 32,
        write_slot_seconds: float = 10.0,
        response_memory_bytes: int = 128 * 1024 * 1024,
        wait_for_first_snapshot: bool = False,
    ) -> None:
        self.cache = ResourceCache(snapshot)
        # Until the registry's first snapshot, `snapshot` is a placeholder (an empty mesh):
        # a proxy served from it would drop every cluster and listener it has (a restarted
        # control plane answering its reconnecting sidecars with 503s for them). Streams wait.
        self.initialized = asyncio.Event()
        if not wait_for_first_snapshot:
            self.initialized.set()
        self.waiting_for_snapshot = 0  # streams held until then
        self.grpc = GrpcGenerator()  # proxyless gRPC clients (node metadata GENERATOR: grpc)
        self.instance_id = instance_id
        self.metrics = metrics or XdsMetrics()
        self.clock = clock
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._responses = SharedResponses(
            self.cache, instance_id=instance_id, memory_bytes=response_memory_bytes
        )
        self._subscriptions: dict[frozenset[str], frozenset[str]] = {}
        # Bounds the responses queued in gRPC at once after a snapshot change (memory).
        self._push_slots = asyncio.Semaphore(push_concurrency)
        # Bounds the large messages gRPC holds copies of (until each proxy reads its own).
        self._write_slots = WriteSlots(write_concurrency, write_slot_seconds)
        self._snapshot_time = clock()

    # --- wiring ----------------------------------------------------------------------------

    def handler(self, authenticator: XdsAuthenticator | None = None) -> grpc.GenericRpcHandler:
        """ADS for one port; with `authenticator`, every stream must authenticate (:15012)."""

        async def sotw(requests: AsyncIterator[Any], context: Any) -> None:
            await self._serve(requests, context, delta=False, authenticator=authenticator)

        async def delta(requests: AsyncIterator[Any], context: Any) -> None:
            await self._serve(requests, context, delta=True, authenticator=authenticator)

        def stream(behaviour: Any, request_type: Any) -> grpc.RpcMethodHandler:
            return grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=request_type.FromString,
                response_serializer=lambda payload: payload,
            )  # fmt: skip

        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": stream(sotw, discovery_pb2.DiscoveryRequest),
            "DeltaAggregatedResources": stream(delta, discovery_pb2.DeltaDiscoveryRequest),
        })  # fmt: skip

    @property
    def snapshot(self) -> MeshSnapshot:
        return self.cache.snapshot

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        """Adopt a new snapshot and wake every connection to push what changed for it."""
        self.cache.set_snapshot(snapshot)
        self.initialized.set()
        self._responses.forget()
        self._snapshot_time = self.clock()
        self.metrics.snapshots += 1
        for connection in self.connections.values():
            connection.wake.set()

    @property
    def response_memo_bytes(self) -> int:
        """Bytes of responses kept for sharing (bounded by `response_memory_bytes`)."""
        return self._responses.memory_bytes

    # --- streams ---------------------------------------------------------------------------

    async def _serve(
        self,
        requests: AsyncIterator[Any],
        context: Any,
        *,
        delta: bool,
        authenticator: XdsAuthenticator | None,
    ) -> None:
        connection = Connection(id=str(next(self._ids)), delta=delta, context=context)
        if authenticator is not None:
            try:
                connection.caller = await authenticator.authenticate(
                    context.peer(), context.invocation_metadata() or ()
                )
            except XdsAuthError as exc:
                await self._refuse(context, exc)
        if not self.initialized.is_set():
            self.waiting_for_snapshot += 1
            try:
                await self.initialized.wait()  # the proxy's requests wait in gRPC meanwhile
            finally:
                self.waiting_for_snapshot -= 1
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
        if connection.caller is not None:
            try:
                connection.identity = authorize(connection.caller, request.node.id, metadata)
            except XdsAuthError as exc:
                await self._refuse(connection.context, exc, request.node.id)
        connection.id = f"{request.node.id}-{connection.id}"
        self.connections[connection.id] = connection
        self.metrics.connected += 1
        log.info("ADS connected (%s): %s", "delta" if connection.delta else "sotw", request.node.id)

    async def _refuse(self, context: Any, error: XdsAuthError, node_id: str = "") -> None:
        self.metrics.refused(error.code)
        log.warning("ADS stream from %s%s refused (%s): %s", context.peer(),
                    f" ({node_id})" if node_id else "", error.code, error)  # fmt: skip
        await context.abort(getattr(grpc.StatusCode, error.code), str(error))

    async def _push_on_change(self, connection: Connection) -> None:
        while True:
            await connection.wake.wait()
            connection.wake.clear()
            async with self._push_slots, connection.lock:
                assert connection.proxy is not None
                try:
                    resources = self._resources_of(connection)
                except Exception:
                    # One proxy's failed build must not end its pushes for good: the proxy
                    # keeps what it has and the next snapshot tries again.
                    log.exception("building config for %s failed; it keeps its previous config",
                                  connection.proxy.node_id)  # fmt: skip
                    continue
                self._resend_assignments_of_changed_clusters(connection, resources)
                pushed = False
                for type_url in TYPE_ORDER:
                    if type_url in connection.types:
                        pushed |= await self._push(connection, resources[type_url], initial=False)
                if pushed:
                    self.metrics.push_time.observe(self.clock() - self._snapshot_time)

    def _resend_assignments_of_changed_clusters(
        self, connection: Connection, resources: dict[str, TypedResources]
    ) -> None:
        """Envoy replaces a changed cluster by a new one that warms until it gets its load
        assignment; an unchanged assignment would otherwise not be sent again and the new
        cluster would wait out the initial fetch timeout (15 s). So, as Istio does, every
        changed cluster's assignment goes out with it."""
        clusters, assignments = (
            connection.types.get(TYPE_CLUSTER),
            connection.types.get(TYPE_ENDPOINT),
        )
        if clusters is None or clusters.sent is None or assignments is None:
            return
        changed = self.cache.diff(clusters.sent, resources[TYPE_CLUSTER]).changed
        if assignments.sent is not None:
            endpoints = resources[TYPE_ENDPOINT].resources
            assignments.pending |= {
                name for name in changed
                if name in endpoints and name in clusters.sent.resources
            }  # fmt: skip

    # --- requests --------------------------------------------------------------------------

    def _ack(self, connection: Connection, state: TypeState, request: Any, version: str) -> bool:
        """Record an ACK or NACK; False for a stale nonce (the request is then ignored)."""
        if request.response_nonce != state.nonce_sent:
            return False
        if request.HasField("error_detail"):
            state.error = (request.error_detail.message or "rejected")[:NACK_KEPT_CHARACTERS]
            self.metrics.nacked(request.type_url)
            log.warning("NACK %s from %s (version %s): %s", short_type(request.type_url),
                        connection.proxy and connection.proxy.node_id, state.version_sent,
                        untrusted(state.error, NACK_LOGGED_CHARACTERS))  # fmt: skip
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
        names = request.resource_names
        current = state.subscribed
        if type_url in WILDCARD_TYPES and (not names or "*" in names):
            subscription = None
        elif current is not None and len(names) == len(current) and current.issuperset(names):
            subscription = current  # the usual ACK repeats the subscription: no new set
        else:
            subscription = self._intern(frozenset(names))
        if subscription is not current:
            if subscription is not None and state.sent is not None:
                state.pending |= subscription - (current or frozenset())
            state.subscribed = subscription
        elif not initial:
            if state.pending:
                await self._push(connection, self._resources(connection, type_url), initial=False)
            return
        await self._push(connection, self._resources(connection, type_url), initial=initial)

    def _intern(self, names: frozenset[str]) -> frozenset[str]:
        """Equal subscriptions share one object: one copy of the names, cheap response keys."""
        if len(self._subscriptions) > 10_000:
            self._subscriptions.clear()
        return self._subscriptions.setdefault(names, names)

    def _resources(self, connection: Connection, type_url: str) -> TypedResources:
        assert connection.proxy is not None
        return self._resources_of(connection)[type_url]

    def _resources_of(self, connection: Connection) -> dict[str, TypedResources]:
        """Envoy's resources for the proxy, or for a gRPC client only the names it asked for."""
        assert connection.proxy is not None
        if is_grpc(connection.proxy):
            asked = {type_url: state.subscribed for type_url, state in connection.types.items()}
            return self.grpc.resources_for(self.cache.snapshot, connection.proxy, asked)
        return self.cache.resources_for(connection.proxy)

    async def _on_delta_request(self, connection: Connection, request: Any) -> None:
        type_url = request.type_url
        if type_url not in SERVED_TYPES:
            return
        initial = type_url not in connection.types
        state = connection.types.setdefault(type_url, TypeState())
        if request.response_nonce and not self._ack(connection, state, request, state.version_sent):
            return
        subscribe = frozenset(request.resource_names_subscribe)
        if initial:
            state.client_versions = dict(request.initial_resource_versions)
            wildcard = type_url in WILDCARD_TYPES and (not subscribe or "*" in subscribe)
            state.subscribed = None if wildcard else self._intern(subscribe)
        elif state.subscribed is not None:
            unsubscribe = frozenset(request.resource_names_unsubscribe)
            if subscribe - state.subscribed or unsubscribe & state.subscribed:
                state.subscribed = self._intern((state.subscribed | subscribe) - unsubscribe)
        if state.sent is not None:  # the first response sends every subscribed name anyway
            state.pending |= {n for n in subscribe if n != "*"}
        if initial or subscribe:
            await self._push(connection, self._resources(connection, type_url), initial=initial)

    # --- responses -------------------------------------------------------------------------

    async def _push(self, connection: Connection, typed: TypedResources, *, initial: bool) -> bool:
        state = connection.types[typed.type_url]
        # A response that may carry a whole set (the first one, or SotW LDS/CDS) is built and
        # written holding a write slot: proxies connecting by the thousand then hold a few
        # copies of a megabytes-large response at a time, not one each.
        whole_set = initial or (not connection.delta and state.subscribed is None)
        held = whole_set and len(typed.resources) >= LARGE_SET_RESOURCES
        if held:
            await self._write_slots.acquire()
        try:
            message = self._responses.owed(state, typed, delta=connection.delta, initial=initial)
        except BaseException:
            if held:
                self._write_slots.release()
            raise
        if message is None:
            if held:
                self._write_slots.release()
            return False
        await self._write_slots.write(connection.context, message, held=held)
        self.metrics.pushed(typed.type_url)
        return True

    # --- status ---------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every connected proxy and, per type, SYNCED / STALE / NACK / NOT SENT."""
        return status_rows(self.connections.values(), control_plane=self.instance_id)
