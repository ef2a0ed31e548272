"""What `ResourceCache` carries from one snapshot to the next (shapes, per-shape resource sets)
is never stale: after every kind of change it serves what a fresh cache builds, and a
VirtualService change recomputes no shape and replaces only listener sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from test_envoy_acks import NODE, mixed_snapshot

from sidemesh.api import networking, security, telemetry
from sidemesh.api.config import MeshConfig
from sidemesh.api.telemetry.mesh import mesh_telemetry
from sidemesh.xds import cache as cache_module
from sidemesh.xds import inbound
from sidemesh.xds.cache import ResourceCache, TypedResources
from sidemesh.xds.cache_carry import Carried
from sidemesh.xds.model import Endpoint, MeshSnapshot, PeerAuthentication, Service, ServicePort
from sidemesh.xds.proxy import ProxyInfo, parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER

WEB = parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"}})
DB = parse_node("sidecar~10.0.0.6~db-0.data~data.svc.cluster.local", {"NAMESPACE": "data"})
LEGACY = parse_node("sidecar~10.0.0.9~old.legacy~legacy.svc.cluster.local",
                    {"NAMESPACE": "legacy"})  # fmt: skip
PROXIES = (WEB, DB, LEGACY)
WEB_HOST = "web.demo.svc.cluster.local"
DB_HOST = "db.data.svc.cluster.local"
# the legacy proxy's address comes to serve db's port too (its shape gains an inbound port)
LEGACY_SERVES_DB = Endpoint("10.0.0.9", 5432, 5432, True, "default", "legacy", "old", False)
WEB_ELSEWHERE = Endpoint("10.0.0.8", 8080, 80, True, "web", "demo", "web-x", True)
ZIPKIN = Service("istio-system", "zipkin", "10.96.0.50", (ServicePort(9411, "http", "HTTP"),))
TRACING = MeshConfig.model_validate({
    "extensionProviders": [{"name": "zipkin", "zipkin": {
        "service": "zipkin.istio-system.svc.cluster.local", "port": 9411}}],
    "defaultProviders": {"tracing": ["zipkin"]},
})  # fmt: skip


def virtual_service(timeout: str) -> Any:
    return networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"hosts": [WEB_HOST], "http": [{"timeout": timeout,
                                                "route": [{"destination": {"host": WEB_HOST}}]}]},
    })  # fmt: skip


def deny_policy() -> Any:
    return security.validate({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-admin", "namespace": "demo"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
    })  # fmt: skip


def access_logging() -> Any:
    return telemetry.validate({
        "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "logs", "namespace": "demo"},
        "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]},
    })  # fmt: skip


def ingress_sidecar() -> Any:
    return networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"workloadSelector": {"labels": {"app": "web"}},
                 "ingress": [{"port": {"number": 8080, "protocol": "HTTP", "name": "http"},
                              "defaultEndpoint": "127.0.0.1:8081"}]},
    })  # fmt: skip


def strict_demo(snapshot: MeshSnapshot) -> tuple[PeerAuthentication, ...]:
    """Namespace demo STRICT (was PERMISSIVE); the other namespaces' policies kept."""
    kept = tuple(p for p in snapshot.peer_authentications if p.namespace != "demo")
    return (PeerAuthentication("demo", "default", "STRICT"), *kept)


def with_endpoint(snapshot: MeshSnapshot, host: str, endpoint: Endpoint) -> MeshSnapshot:
    endpoints = dict(snapshot.endpoints)
    endpoints[host] = (*endpoints[host], endpoint)
    return replace(snapshot, endpoints=endpoints)


# Each change of the sequence, applied to the previous snapshot (the order matters: some
# changes undo earlier ones, so a shape carried from two snapshots ago would be caught).
CHANGES: list[tuple[str, Callable[[MeshSnapshot], MeshSnapshot]]] = [
    ("virtual service", lambda s: replace(s, virtual_services=(virtual_service("5s"),))),
    ("virtual service again", lambda s: replace(s, virtual_services=(virtual_service("7s"),))),
    ("peer authentication", lambda s: replace(s, peer_authentications=strict_demo(s))),
    ("authorization policy", lambda s: replace(s, authorization_policies=(deny_policy(),))),
    ("telemetry", lambda s: replace(s, telemetries=(access_logging(),))),
    ("sidecar ingress", lambda s: replace(s, sidecars=(ingress_sidecar(),))),
    ("sidecar removed", lambda s: replace(s, sidecars=())),
    ("new port served", lambda s: with_endpoint(s, DB_HOST, LEGACY_SERVES_DB)),
    ("endpoint elsewhere", lambda s: with_endpoint(s, WEB_HOST, WEB_ELSEWHERE)),
    ("tracing configured", lambda s: replace(s, mesh_telemetry=mesh_telemetry(TRACING))),
    ("tracing collector appears", lambda s: replace(s, services=(*s.services, ZIPKIN))),
    ("virtual service removed", lambda s: replace(s, virtual_services=())),
    ("nothing", lambda s: replace(s, version=s.version + 1)),
]


def contents(typed: TypedResources) -> dict[str, bytes]:
    return {name: resource.body for name, resource in typed.resources.items()}


def test_a_carried_cache_serves_what_a_fresh_cache_builds_after_every_change() -> None:
    snapshot = mixed_snapshot()
    carried = ResourceCache(snapshot)
    for proxy in PROXIES:
        carried.resources_for(proxy)
    for label, change in CHANGES:
        snapshot = change(snapshot)
        carried.set_snapshot(snapshot)
        fresh = ResourceCache(snapshot)
        for proxy in PROXIES:
            served, expected = carried.resources_for(proxy), fresh.resources_for(proxy)
            for type_url in (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER):
                assert contents(served[type_url]) == contents(expected[type_url]), (label, proxy)
                assert served[type_url].version == expected[type_url].version, (label, proxy)
                assert served[type_url].encoded == expected[type_url].encoded, (label, proxy)


def inbound_chain_names(cache: ResourceCache, proxy: ProxyInfo) -> set[str]:
    from envoy.config.listener.v3 import listener_pb2

    body = cache.resources_for(proxy)[TYPE_LISTENER].resources["virtualInbound"].body
    return {chain.name for chain in listener_pb2.Listener.FromString(body).filter_chains}


def test_a_peer_authentication_change_reaches_the_inbound_listener() -> None:
    snapshot = mixed_snapshot()
    cache = ResourceCache(snapshot)
    assert "inbound|8080||-plaintext" in inbound_chain_names(cache, WEB)  # PERMISSIVE
    cache.set_snapshot(replace(snapshot, peer_authentications=strict_demo(snapshot)))
    chains = inbound_chain_names(cache, WEB)
    assert "inbound|8080||-mtls" in chains and "inbound|8080||-plaintext" not in chains


def test_a_virtual_service_change_replaces_listener_sets_only_and_computes_no_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot = mixed_snapshot()
    cache = ResourceCache(snapshot)
    before = {proxy: cache.resources_for(proxy) for proxy in PROXIES}
    computed: list[ProxyInfo] = []

    def counting(snapshot: MeshSnapshot, proxy: ProxyInfo) -> inbound.ProxyShape:
        computed.append(proxy)
        return inbound.proxy_shape(snapshot, proxy)

    monkeypatch.setattr(cache_module, "proxy_shape", counting)
    cache.set_snapshot(replace(snapshot, version=2, virtual_services=(virtual_service("5s"),)))
    for proxy in PROXIES:
        after = cache.resources_for(proxy)
        assert after[TYPE_CLUSTER] is before[proxy][TYPE_CLUSTER]  # the ADS layer sends nothing
        assert after[TYPE_ENDPOINT] is before[proxy][TYPE_ENDPOINT]
        listeners = cache.diff(before[proxy][TYPE_LISTENER], after[TYPE_LISTENER])
        # the routes live in the host's listeners (both of its HTTP ports), nothing else
        assert set(listeners.changed) == {"10.96.0.10_80", "10.96.0.10_9090"}
        assert listeners.removed == ()
    assert computed == []
    # A snapshot with the same services but a proxy serving another port: that one shape again.
    cache.set_snapshot(with_endpoint(cache.snapshot, DB_HOST, LEGACY_SERVES_DB))
    for proxy in PROXIES:
        cache.resources_for(proxy)
    assert computed == [LEGACY]


class RecordingSnapshot(MeshSnapshot):
    """A snapshot that notes which of its attributes are read."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__"):
            object.__getattribute__(self, "__dict__").setdefault("_read", set()).add(name)
        return super().__getattribute__(name)


def test_shape_inputs_cover_everything_proxy_shape_reads() -> None:
    """`inbound.SHAPE_FIELDS` must grow with `proxy_shape`: a field it reads but the cache does
    not compare would let a stale shape be served."""
    rich = replace(mixed_snapshot(), virtual_services=(virtual_service("5s"),),
                   authorization_policies=(deny_policy(),), telemetries=(access_logging(),),
                   sidecars=(ingress_sidecar(),), mesh_telemetry=mesh_telemetry(TRACING),
                   services=(*mixed_snapshot().services, ZIPKIN))  # fmt: skip
    fields = {name: getattr(rich, name) for name in MeshSnapshot.__dataclass_fields__}
    recording = RecordingSnapshot(**fields)
    for proxy in PROXIES:
        inbound.proxy_shape(recording, proxy)
    read = recording.__dict__["_read"] - {"_read"}
    # the proxy's instances come from these; services_by_host only for tracing's collector,
    # which `shape_inputs` answers for itself
    own = {"instances_by_address", "services", "endpoints", "services_by_host", "mtls_mode"}
    fields_read = {name for name in read if name in MeshSnapshot.__dataclass_fields__}
    assert fields_read - own <= set(inbound.SHAPE_FIELDS)
    assert read - fields_read <= own  # no other derived attribute slipped in unnoticed


def test_carried_entries_last_one_snapshot_unless_used_again() -> None:
    carried: Carried[str, int] = Carried()
    carried.put("kept", 1)
    carried.put("departed", 2)
    carried.roll()
    assert carried.get("kept") is None and carried.offered("kept") == 1
    carried.put("kept", carried.offered("kept") or 0)
    carried.roll()
    assert carried.offered("kept") == 1
    assert carried.offered("departed") is None  # not used in the snapshot before: forgotten
    carried.roll(keep=False)
    assert carried.offered("kept") is None
