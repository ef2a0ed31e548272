"""The Sidecar resource's ingress listeners and egress `port`/`bind`/`captureMode`, as truth
tables of the pure decisions (`sidecar_ingress`, `sidecar_egress`) and of the listeners and
clusters a proxy then receives; the cache must agree with the reference assembly."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_envoy_acks import NODE, mixed_snapshot
from xds_testkit import to_dict

from sidemesh.api import networking, security
from sidemesh.api.networking.sidecar import IngressListener
from sidemesh.xds import generate as gen
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.inbound import proxy_shape
from sidemesh.xds.model import MeshSnapshot, PeerAuthentication
from sidemesh.xds.proxy import ProxyInfo, parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER
from sidemesh.xds.scoping import Scope, view_of
from sidemesh.xds.sidecar_egress import egress_plan
from sidemesh.xds.sidecar_ingress import POD_ADDRESS_SOURCE, Forward, ingress_decisions
from sidemesh.xds.sidecar_listeners import bound_egress_listeners

POD_IP = "10.0.0.5"  # NODE's address: web's endpoint in mixed_snapshot


def sidecar(name: str = "web", namespace: str = "demo", **spec: Any) -> Any:
    return networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    })  # fmt: skip


def web(**labels: str) -> ProxyInfo:
    return parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web",
                             "LABELS": labels or {"app": "web"}})  # fmt: skip


def with_sidecars(*sidecars: Any, base: MeshSnapshot | None = None) -> MeshSnapshot:
    return replace(base or mixed_snapshot(), sidecars=tuple(sidecars))


def listeners_of(snapshot: MeshSnapshot, proxy: ProxyInfo) -> dict[str, dict[str, Any]]:
    return {m.name: to_dict(m) for m in gen.generate(snapshot, proxy).listeners}


def clusters_of(snapshot: MeshSnapshot, proxy: ProxyInfo) -> dict[str, dict[str, Any]]:
    return {m.name: to_dict(m) for m in gen.generate(snapshot, proxy).clusters}


def listener(port: int, protocol: str = "HTTP", **fields: Any) -> IngressListener:
    data = {"port": {"number": port, "protocol": protocol, "name": f"p{port}"}, **fields}
    return IngressListener.model_validate(data)


# --- ingress: one decision per listener ------------------------------------------------------

INGRESS_CASES = [
    ("loopback endpoint", listener(9080, defaultEndpoint="127.0.0.1:8888"),
     Forward("127.0.0.1", 8888), "HTTP", False),
    ("IPv6 loopback", listener(9080, defaultEndpoint="[::1]:8888"), Forward("::1", 8888),
     "HTTP", False),
    ("pod address, from 127.0.0.6", listener(9080, "TCP", defaultEndpoint="0.0.0.0:7000"),
     Forward(POD_IP, 7000, source=POD_ADDRESS_SOURCE), "TCP", False),
    ("IPv6 wildcard is the pod address too", listener(9080, defaultEndpoint="[::]:7000"),
     Forward(POD_IP, 7000, source=POD_ADDRESS_SOURCE), "HTTP", False),
    ("unset endpoint: loopback, same port", listener(9080, "GRPC"),
     Forward("127.0.0.1", 9080), "GRPC", False),
    ("unix socket", listener(9080, defaultEndpoint="unix:///var/run/app.sock"),
     Forward(pipe="/var/run/app.sock"), "HTTP", False),
    ("abstract unix socket", listener(9080, defaultEndpoint="unix://@app"),
     Forward(pipe="@app"), "HTTP", False),
    ("HTTPS is opaque TCP", listener(9443, "HTTPS", defaultEndpoint="127.0.0.1:8443"),
     Forward("127.0.0.1", 8443), "TCP", False),
    ("the proxy's own port is refused", listener(15021, defaultEndpoint="127.0.0.1:1"),
     Forward(), "HTTP", True),
    ("tls with the pod's files is refused", listener(
        9443, "HTTPS", defaultEndpoint="127.0.0.1:8443",
        tls={"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}),
     Forward(), "TCP", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("listener", "forward", "protocol", "refused"),
    [pytest.param(*case[1:], id=case[0]) for case in INGRESS_CASES],
)
def test_each_ingress_listener_is_decided_with_a_reason(
    listener: IngressListener, forward: Forward, protocol: str, refused: bool
) -> None:
    (decision,) = ingress_decisions([listener], pod_ip=POD_IP)
    assert decision.port.forward == forward
    assert (decision.port.protocol, decision.port.refused) == (protocol, refused)
    assert decision.reason.startswith(f"port {listener.port.number}")
    if refused:
        assert "dropped" in decision.reason


def test_capture_mode_none_and_bind_are_part_of_the_decision() -> None:
    none, bound, wildcard = ingress_decisions([
        listener(9080, captureMode="NONE"),
        listener(9081, bind="10.0.0.5", captureMode="NONE"),
        listener(9082, bind="0.0.0.0"),
    ], pod_ip=POD_IP)  # fmt: skip
    assert (none.port.listen, none.port.bind) == (POD_IP, "")
    assert (bound.port.listen, bound.port.bind) == ("10.0.0.5", "10.0.0.5")
    assert (wildcard.port.listen, wildcard.port.bind) == ("", "")
    assert "captureMode NONE" in none.reason


# --- ingress: the inbound side it builds -----------------------------------------------------

CLASSIC = sidecar(workloadSelector={"labels": {"app": "web"}}, ingress=[
    {"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
     "defaultEndpoint": "127.0.0.1:8888"},
    {"port": {"number": 5000, "protocol": "TCP", "name": "tcp"},
     "defaultEndpoint": "0.0.0.0:5001",
     "connectionPool": {"tcp": {"maxConnections": 7, "connectTimeout": "2s"}}},
])  # fmt: skip


def test_ingress_listeners_replace_the_service_ports() -> None:
    snapshot = with_sidecars(CLASSIC)
    inbound = listeners_of(snapshot, web())["virtualInbound"]
    chains = {c["name"]: c for c in inbound["filter_chains"]}
    # the Services' ports (8080, 9090) are gone; the listeners' ports are there
    assert not any(name.startswith(("inbound|8080", "inbound|9090")) for name in chains)
    http = chains["inbound|9080||-mtls"]["filters"][0]["typed_config"]
    assert "HttpConnectionManager" in http["@type"]
    tcp = chains["inbound|5000||-mtls"]["filters"][-1]["typed_config"]
    assert "TcpProxy" in tcp["@type"] and tcp["cluster"] == "inbound|5000||"
    clusters = clusters_of(snapshot, web())
    endpoint = clusters["inbound|9080||"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 8888}  # fmt: skip
    pod = clusters["inbound|5000||"]
    assert pod["upstream_bind_config"]["source_address"]["address"] == POD_ADDRESS_SOURCE
    assert pod["circuit_breakers"]["thresholds"][0]["max_connections"] == 7
    assert pod["connect_timeout"] == "2s"
    assert "inbound|8080||" not in clusters


@pytest.mark.parametrize(
    ("mode", "chains"),
    [("STRICT", {"inbound|9080||-mtls"}),
     ("PERMISSIVE", {"inbound|9080||-mtls", "inbound|9080||-plaintext"}),
     ("DISABLE", {"inbound|9080||"})],
)  # fmt: skip
def test_peer_authentication_decides_an_ingress_ports_chains(mode: str, chains: set[str]) -> None:
    snapshot = replace(with_sidecars(CLASSIC),
                       peer_authentications=(PeerAuthentication("demo", "default", mode),))  # type: ignore[arg-type]  # fmt: skip
    inbound = listeners_of(snapshot, web())["virtualInbound"]
    found = {c["name"] for c in inbound["filter_chains"] if c["name"].startswith("inbound|9080")}
    assert found == chains


def test_authorization_still_guards_an_ingress_port() -> None:
    policy = {
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "demo"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "DENY",
                 "rules": [{}]},
    }  # fmt: skip
    resource = security.validate(policy)
    snapshot = replace(with_sidecars(CLASSIC), authorization_policies=(resource,))
    inbound = listeners_of(snapshot, web())["virtualInbound"]
    chain = next(c for c in inbound["filter_chains"] if c["name"] == "inbound|9080||-mtls")
    filters = chain["filters"][0]["typed_config"]["http_filters"]
    assert any(f["name"] == "envoy.filters.http.rbac" for f in filters)


def test_a_refused_ingress_port_drops_instead_of_passing_through() -> None:
    refusing = sidecar(workloadSelector={"labels": {"app": "web"}}, ingress=[
        {"port": {"number": 9443, "protocol": "HTTPS", "name": "https"},
         "tls": {"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k"}}])  # fmt: skip
    snapshot = with_sidecars(refusing)
    shape = proxy_shape(snapshot, web())
    assert "not supported" in shape.ingress_reasons[0]
    inbound = listeners_of(snapshot, web())["virtualInbound"]
    (chain,) = [c for c in inbound["filter_chains"] if c["name"].startswith("inbound|9443")]
    assert chain["filter_chain_match"] == {"destination_port": 9443}
    assert chain["filters"][0]["typed_config"]["cluster"] == "BlackHoleCluster"
    assert "inbound|9443||" not in clusters_of(snapshot, web())


def test_an_ingress_bind_address_narrows_the_ports_chains_to_it() -> None:
    port = {"number": 9080, "protocol": "HTTP", "name": "http"}
    bound = sidecar(workloadSelector={"labels": {"app": "web"}},
                    ingress=[{"port": port, "bind": POD_IP}])  # fmt: skip
    inbound = listeners_of(with_sidecars(bound), web())["virtualInbound"]
    chains = [c for c in inbound["filter_chains"] if c["name"].startswith("inbound|9080")]
    assert len(chains) == 2  # PERMISSIVE: mTLS and plaintext
    for chain in chains:
        assert chain["filter_chain_match"]["prefix_ranges"] == [
            {"address_prefix": POD_IP, "prefix_len": 32}]  # fmt: skip


def test_capture_mode_none_gets_a_bound_inbound_listener() -> None:
    none = sidecar(workloadSelector={"labels": {"app": "web"}}, ingress=[
        {"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
         "defaultEndpoint": "127.0.0.1:8888", "captureMode": "NONE"}])  # fmt: skip
    found = listeners_of(with_sidecars(none), web())
    bound = found[f"inbound_{POD_IP}_9080"]
    assert bound["address"]["socket_address"] == {"address": POD_IP, "port_value": 9080}
    assert bound["traffic_direction"] == "INBOUND"
    assert {c["name"] for c in bound["filter_chains"]} == {"inbound|9080||-mtls",
                                                          "inbound|9080||-plaintext"}  # fmt: skip
    # and the captured path serves it as well
    assert any(c["name"] == "inbound|9080||-mtls"
               for c in found["virtualInbound"]["filter_chains"])  # fmt: skip


def test_workloads_without_ingress_listeners_keep_sharing_one_shape() -> None:
    """The Sidecar's ingress is part of the shape only where it applies."""
    snapshot = with_sidecars(CLASSIC)
    plain = replace(mixed_snapshot(), sidecars=())
    other, again = web(app="other"), web(app="another")
    assert proxy_shape(snapshot, other) == proxy_shape(snapshot, again)
    assert proxy_shape(snapshot, other) == proxy_shape(plain, other)
    assert proxy_shape(snapshot, web()) != proxy_shape(snapshot, other)
    cache = ResourceCache(snapshot)
    shared = cache.resources_for(other)[TYPE_LISTENER].own["virtualInbound"]
    assert cache.resources_for(again)[TYPE_LISTENER].own["virtualInbound"] is shared
    assert cache.resources_for(web())[TYPE_LISTENER].own["virtualInbound"] is not shared


# --- egress: port, bind, captureMode ---------------------------------------------------------

EGRESS_CASES = [
    # (egress listeners, service port → visible?)
    ("hosts only: every port", [{"hosts": ["*/*"]}],
     {("web", 80): True, ("web", 9090): True, ("db", 5432): True}),
    ("a port listener alone: that port only",
     [{"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["*/*"]}],
     {("web", 80): True, ("web", 9090): False, ("db", 5432): False, ("old", 80): True}),
    ("port listener plus catch-all: the port's hosts decide that port",
     [{"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["legacy/*"]},
      {"hosts": ["*/*"]}],
     {("web", 80): False, ("old", 80): True, ("web", 9090): True, ("db", 5432): True}),
    ("catch-all scoped by namespace",
     [{"port": {"number": 5432, "protocol": "TCP", "name": "pg"}, "hosts": ["*/*"]},
      {"hosts": ["./*"]}],
     {("web", 80): True, ("web", 9090): True, ("db", 5432): True, ("old", 80): False}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("egress", "expected"), [pytest.param(c[1], c[2], id=c[0]) for c in EGRESS_CASES]
)
def test_egress_ports_decide_which_service_ports_a_proxy_sees(
    egress: list[dict[str, Any]], expected: dict[tuple[str, int], bool]
) -> None:
    snapshot = with_sidecars(sidecar(egress=egress))
    scope = Scope(snapshot, view_of(snapshot, web()))
    seen = {(s.name, p.port) for s in scope.services for p in s.ports}
    assert {key: key in seen for key in expected} == expected
    listeners = listeners_of(snapshot, web())
    vips = {"web": "10.96.0.10", "db": "10.96.0.11", "old": "10.96.0.12"}
    for (name, port), visible in expected.items():
        assert (f"{vips[name]}_{port}" in listeners) is visible, (name, port)
        cluster = f"outbound|{port}||{name}."
        assert any(c.startswith(cluster) for c in clusters_of(snapshot, web())) is visible


def test_egress_port_scoping_shrinks_what_a_proxy_receives() -> None:
    everything = with_sidecars(sidecar(egress=[{"hosts": ["*/*"]}]))
    one_port = with_sidecars(
        sidecar(
            egress=[{"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["./*"]}]
        )
    )
    sizes = []
    for snapshot in (everything, one_port):
        found = ResourceCache(snapshot).resources_for(web())
        typed = [found[TYPE_LISTENER], found[TYPE_CLUSTER], found[TYPE_ENDPOINT]]
        sizes.append(([len(t.resources) for t in typed], sum(len(t.encoded) for t in typed)))
    (counts, size), (few, small) = sizes
    # web's 9090, db's 5432 and legacy's 80 leave: a listener, cluster, load assignment each
    assert [a - b for a, b in zip(counts, few, strict=True)] == [3, 3, 3]
    assert small < size * 0.7  # measured: 63,299 → 38,491 bytes


def test_egress_plan_reasons_say_what_each_listener_does() -> None:
    plan = egress_plan(sidecar(egress=[
        {"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "hosts": ["./*"],
         "captureMode": "NONE"},
        {"port": {"number": 9081, "protocol": "HTTP", "name": "uds"},
         "bind": "unix:///var/run/egress.sock", "captureMode": "NONE", "hosts": ["./*"]},
        {"port": {"number": 15000, "protocol": "HTTP", "name": "admin"}, "bind": "127.0.0.1",
         "captureMode": "NONE", "hosts": ["./*"]},
        {"hosts": ["*/*"], "captureMode": "NONE"},
    ]).spec)  # fmt: skip
    assert plan is not None
    assert [(b.address, b.port, b.bind_to_port) for b in plan.bound] == [("127.0.0.1", 9080, True)]
    text = "\n".join(plan.reasons)
    assert "unix domain socket bind" in text and "not supported" in text
    assert "port 15000 is one of the proxy's own ports" in text
    assert "captureMode NONE without a port" in text
    assert plan.hosts_for(9080) == ("./*",) and plan.hosts_for(1234) == ("*/*",)


def test_capture_mode_none_binds_a_listener_routing_to_the_hosts_of_its_port() -> None:
    snapshot = with_sidecars(sidecar(egress=[
        {"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["*/*"],
         "captureMode": "NONE"},
        {"hosts": ["./*"]},
    ]))  # fmt: skip
    listeners = listeners_of(snapshot, web())
    bound = listeners["127.0.0.1_80"]
    assert bound["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 80}
    assert bound.get("bind_to_port", True) is True
    config = bound["filter_chains"][0]["filters"][0]["typed_config"]
    hosts = {v["name"]: v for v in config["route_config"]["virtual_hosts"]}
    assert set(hosts) == {"web.demo.svc.cluster.local:80", "old.legacy.svc.cluster.local:80"}
    web_host = hosts["web.demo.svc.cluster.local:80"]
    assert {"web", "web:80", "web.demo", "10.96.0.10:80"} <= set(web_host["domains"])
    assert "old" not in hosts["old.legacy.svc.cluster.local:80"]["domains"]  # not our namespace
    assert web_host["routes"][0]["route"]["cluster"] == "outbound|80||web.demo.svc.cluster.local"


def test_a_bound_tcp_listener_needs_exactly_one_service() -> None:
    def bound(hosts: list[str]) -> Any:
        snapshot = with_sidecars(sidecar(egress=[
            {"port": {"number": 80, "protocol": "TCP", "name": "tcp"}, "hosts": hosts,
             "captureMode": "NONE"}]))  # fmt: skip
        return bound_egress_listeners(Scope(snapshot, view_of(snapshot, web())))

    one = bound(["legacy/*"])
    (found,) = one.listeners
    assert to_dict(found)["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] == (
        "outbound|80||old.legacy.svc.cluster.local")  # fmt: skip
    two = bound(["*/*"])
    assert two.listeners == () and "sees 2 services on port 80" in two.reasons[0]


def test_cache_agrees_with_the_reference_for_every_sidecar_feature() -> None:
    snapshot = with_sidecars(sidecar(
        workloadSelector={"labels": {"app": "web"}},
        ingress=[{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                  "defaultEndpoint": "127.0.0.1:8888", "captureMode": "NONE"},
                 {"port": {"number": 9443, "protocol": "HTTPS", "name": "https"},
                  "tls": {"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k"}}],
        egress=[{"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["*/*"],
                 "captureMode": "NONE"}, {"hosts": ["./*"]}],
    ))  # fmt: skip
    reference = gen.generate(snapshot, web())
    cached = ResourceCache(snapshot).resources_for(web())
    for type_url, messages in ((TYPE_LISTENER, reference.listeners),
                               (TYPE_CLUSTER, reference.clusters)):  # fmt: skip
        expected = {m.name: m.SerializeToString() for m in messages}
        assert {n: r.body for n, r in cached[type_url].resources.items()} == expected


# --- validation --------------------------------------------------------------------------------

VALIDATION_CASES = [
    ("ingress tls needs SIMPLE or MUTUAL",
     {"ingress": [{"port": {"number": 9443, "protocol": "HTTPS", "name": "s"},
                   "tls": {"mode": "PASSTHROUGH"}}]}, "spec.ingress[0].tls.mode"),
    ("ingress tls takes no credentialName",
     {"ingress": [{"port": {"number": 9443, "protocol": "HTTPS", "name": "s"},
                   "tls": {"mode": "SIMPLE", "credentialName": "x", "serverCertificate": "/c",
                           "privateKey": "/k"}}]}, "spec.ingress[0].tls.credentialName"),
    ("MUTUAL needs caCertificates",
     {"ingress": [{"port": {"number": 9443, "protocol": "HTTPS", "name": "s"},
                   "tls": {"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}}]},
     "spec.ingress[0].tls.caCertificates"),
    ("an empty connection pool",
     {"ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "h"},
                   "connectionPool": {}}]}, "spec.ingress[0].connectionPool"),
    ("bind needs a port", {"egress": [{"bind": "127.0.0.1", "hosts": ["./*"]}]},
     "spec.egress[0].port"),
    ("unix bind cannot be captured by iptables",
     {"egress": [{"port": {"number": 0, "protocol": "HTTP", "name": "u"},
                  "bind": "unix:///tmp/s", "captureMode": "IPTABLES", "hosts": ["./*"]}]},
     "spec.egress[0].captureMode"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "field"), [pytest.param(c[1], c[2], id=c[0]) for c in VALIDATION_CASES]
)
def test_sidecar_validation_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(networking.ValidationError) as failure:
        sidecar(**spec)
    assert field in str(failure.value)
