"""Gateway proxies' resources (`xds.gateway`), as truth tables: which servers a gateway proxy
serves and why not, host intersection, virtual hosts and routes from bound VirtualServices,
TLS termination, and that the reference `generate` and the ADS cache agree for routers."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format

from sidemesh.api.config import MeshConfig
from sidemesh.xds import convert
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.credentials import credentials_of
from sidemesh.xds.gateway import gateway_listeners, intersect_hosts, is_router, plan_gateway
from sidemesh.xds.generate import generate
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo, parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_LISTENER

GATEWAY_IP = "10.0.0.20"
GATEWAY = parse_node(
    f"router~{GATEWAY_IP}~ingress-0.edge~edge.svc.cluster.local",
    {"NAMESPACE": "edge", "LABELS": {"istio": "ingressgateway", "app": "ingress"}},
)
BACKEND = "web.shop.svc.cluster.local"


def _pem_pair(host: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


CERT, KEY = _pem_pair("secure.example.com")
OTHER_CERT, _ = _pem_pair("other.example.com")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, namespace: str = "edge", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k.replace("_", "."): _b64(v) for k, v in data.items()}}  # fmt: skip


def server(number: int, protocol: str, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {"port": {"number": number, "name": f"{protocol.lower()}-{number}",
                     "protocol": protocol}, "hosts": hosts, **extra}  # fmt: skip


def gateway(name: str, servers: list[dict[str, Any]], *, namespace: str = "edge",
            selector: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"istio": "ingressgateway"} if selector is None else selector,
                     "servers": servers}}  # fmt: skip


def virtual_service(name: str, hosts: list[str], gateways: list[str], http: list[dict[str, Any]],
                    namespace: str = "edge") -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": hosts, "gateways": gateways, "http": http}}  # fmt: skip


def to_backend(**extra: Any) -> dict[str, Any]:
    return {"route": [{"destination": {"host": BACKEND, "port": {"number": 80}}}], **extra}


def cluster_objects() -> list[dict[str, Any]]:
    """A backend service in `shop`, and the gateway's Service (80 → 8080, 443 → 8443)."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "web-0", "namespace": "shop",
                      "labels": {"app": "web", "security.istio.io/tlsMode": "istio"}},
         "spec": {"serviceAccountName": "web"},
         "status": {"podIP": "10.0.0.10", "conditions": [{"type": "Ready", "status": "True"}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "istio-ingressgateway", "namespace": "edge"},
         "spec": {"clusterIP": "10.96.0.20", "selector": {"istio": "ingressgateway"},
                  "ports": [{"name": "http2", "port": 80, "targetPort": 8080},
                            {"name": "https", "port": 443, "targetPort": 8443}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "ingress-0", "namespace": "edge",
                      "labels": {"istio": "ingressgateway", "app": "ingress"}},
         "spec": {"serviceAccountName": "ingress"},
         "status": {"podIP": GATEWAY_IP, "conditions": [{"type": "Ready", "status": "True"}]}},
    ]  # fmt: skip


def snapshot(*objects: dict[str, Any], errors: list[str] | None = None) -> MeshSnapshot:
    every = [*cluster_objects(), *objects]
    return build_snapshot({convert.object_key(o): o for o in every}, mesh=MeshConfig(),
                          version=1, errors=errors)  # fmt: skip


def listeners_json(snap: MeshSnapshot, proxy: ProxyInfo = GATEWAY) -> dict[str, dict[str, Any]]:
    return {listener.name: json_format.MessageToDict(listener, preserving_proto_field_name=True)
            for listener in gateway_listeners(snap, proxy)}  # fmt: skip


def virtual_hosts(chain: dict[str, Any]) -> dict[str, dict[str, Any]]:
    config = chain["filters"][0]["typed_config"]
    return {v["name"]: v for v in config["route_config"].get("virtual_hosts", [])}


# --- truth tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vs_host", "server_host", "shared"),
    [
        ("a.example.com", "a.example.com", "a.example.com"),
        ("a.example.com", "*", "a.example.com"),
        ("*", "a.example.com", "a.example.com"),
        ("a.example.com", "*.example.com", "a.example.com"),
        ("*.example.com", "a.example.com", "a.example.com"),
        ("*.a.example.com", "*.example.com", "*.a.example.com"),
        ("a.example.com", "b.example.com", None),
        ("a.example.com", "*.example.org", None),
        ("example.com", "*.example.com", None),  # `*.` needs a label before the suffix
    ],
)
def test_host_intersection(vs_host: str, server_host: str, shared: str | None) -> None:
    assert intersect_hosts(vs_host, server_host) == shared


def test_router_nodes_are_gateways() -> None:
    assert is_router(GATEWAY)
    assert not is_router(parse_node("sidecar~10.0.0.1~a.b~b.svc.cluster.local", {}))


@pytest.mark.parametrize(
    ("servers", "secrets", "served", "reason"),
    [
        ([server(80, "HTTP", ["*"])], [], [8080], None),  # Service port 80 → targetPort 8080
        ([server(9000, "HTTP", ["*"])], [], [9000], None),  # no Service port: the number
        ([server(31400, "TCP", ["*"])], [], [31400], None),  # xds.gateway_passthrough
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "PASSTHROUGH"})], [], [8443],
         None),
        ([server(443, "TLS", ["a.example.com"], tls={"mode": "AUTO_PASSTHROUGH"})], [], [8443],
         None),  # xds.gateway_auto_passthrough
        ([server(443, "TLS", ["a.example.com"],
                 tls={"mode": "OPTIONAL_MUTUAL", "credentialName": "c"})],
         [], [], "TLS mode 'OPTIONAL_MUTUAL' is not served"),
        ([server(9000, "UDP", ["*"])], [], [], "protocol 'UDP' is not served"),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "SIMPLE", "credentialName": "c"})],
         [], [], "credentialName 'c': no usable TLS Secret of that name in namespace 'edge'"),
        # a Secret elsewhere is never used: the gateway's own namespace only
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "SIMPLE", "credentialName": "c"})],
         [secret("c", "shop", tls_crt=CERT, tls_key=KEY)], [], "no usable TLS Secret"),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "SIMPLE", "credentialName": "c"})],
         [secret("c", tls_crt=CERT, tls_key=KEY)], [8443], None),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "MUTUAL", "credentialName": "c"})],
         [secret("c", tls_crt=CERT, tls_key=KEY)], [], "has no ca.crt/cacert"),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "ISTIO_MUTUAL"})], [], [8443],
         None),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "SIMPLE",
                                                       "serverCertificate": "/etc/c.pem",
                                                       "privateKey": "/etc/k.pem"})],
         [], [], "certificate files (serverCertificate/privateKey) are not supported"),
        # one kind per port, one chain per SNI name
        ([server(80, "HTTP", ["a.example.com"]),
          server(80, "HTTPS", ["b.example.com"], tls={"mode": "ISTIO_MUTUAL"})],
         [], [8080], "port 8080 already serves plain HTTP"),
        ([server(31400, "TCP", ["*"]), server(31400, "TCP", ["*"])],
         [], [31400], "one TCP server per port"),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "ISTIO_MUTUAL"}),
          server(443, "HTTPS", ["a.example.com", "b.example.com"], tls={"mode": "ISTIO_MUTUAL"})],
         [], [8443], "already claims these hosts"),
        ([server(443, "HTTPS", ["a.example.com"], tls={"mode": "ISTIO_MUTUAL"}),
          server(443, "HTTPS", ["b.example.com"], tls={"mode": "ISTIO_MUTUAL"})],
         [], [8443, 8443], None),
    ],
)  # fmt: skip
def test_which_servers_a_gateway_serves(
    servers: list[dict[str, Any]], secrets: list[dict[str, Any]], served: list[int],
    reason: str | None,
) -> None:  # fmt: skip
    plan = plan_gateway(snapshot(gateway("gw", servers), *secrets), GATEWAY)
    assert [b.port for b in plan.servers] == served
    if reason is None:
        assert plan.skipped == ()
    else:
        assert len(plan.skipped) == 1 and reason in plan.skipped[0], plan.skipped
        assert plan.skipped[0].startswith("Gateway edge/gw servers[")


@pytest.mark.parametrize(
    ("selector", "selected"),
    [({"istio": "ingressgateway"}, True), ({"istio": "egressgateway"}, False),
     ({"istio": "ingressgateway", "app": "ingress"}, True), ({}, True)],
)  # fmt: skip
def test_gateway_selection_by_labels(selector: dict[str, str], selected: bool) -> None:
    snap = snapshot(gateway("gw", [server(80, "HTTP", ["*"])], selector=selector,
                            namespace="elsewhere"))  # fmt: skip
    assert bool(plan_gateway(snap, GATEWAY).servers) is selected


# --- routes ------------------------------------------------------------------------------------


def test_bound_virtual_services_become_virtual_hosts() -> None:
    snap = snapshot(
        gateway("gw", [server(80, "HTTP", ["*.example.com"])]),
        virtual_service("a", ["a.example.com"], ["gw"], [to_backend()]),
        virtual_service("b", ["b.example.com"], ["edge/gw"], [to_backend()], namespace="shop"),
        virtual_service("mesh-only", ["c.example.com"], ["mesh"], [to_backend()]),
        virtual_service("other-gw", ["d.example.com"], ["other"], [to_backend()]),
        virtual_service("wrong-domain", ["e.example.org"], ["gw"], [to_backend()]),
    )  # fmt: skip
    listeners = listeners_json(snap)
    assert list(listeners) == ["0.0.0.0_8080"]
    (chain,) = listeners["0.0.0.0_8080"]["filter_chains"]
    hosts = virtual_hosts(chain)
    assert sorted(hosts) == ["a.example.com", "b.example.com"]
    route = hosts["a.example.com"]["routes"][0]["route"]
    assert route["cluster"] == f"outbound|80||{BACKEND}"
    assert hosts["a.example.com"]["domains"] == ["a.example.com"]
    config = chain["filters"][0]["typed_config"]
    assert config["strip_any_host_port"] and config["use_remote_address"]


def test_server_host_namespaces_limit_which_virtual_services_bind() -> None:
    snap = snapshot(
        gateway("gw", [server(80, "HTTP", ["./a.example.com", "shop/b.example.com"])]),
        virtual_service("a-here", ["a.example.com"], ["gw"], [to_backend()]),
        virtual_service("a-shop", ["a.example.com"], ["edge/gw"], [to_backend()], "shop"),
        virtual_service("b-here", ["b.example.com"], ["gw"], [to_backend()]),
        virtual_service("b-shop", ["b.example.com"], ["edge/gw"], [to_backend()], "shop"),
    )  # fmt: skip
    (chain,) = listeners_json(snap)["0.0.0.0_8080"]["filter_chains"]
    hosts = virtual_hosts(chain)
    # one route each: a from edge (`.`), b from shop
    assert {h: len(v["routes"]) for h, v in hosts.items()} == {
        "a.example.com": 1,
        "b.example.com": 1,
    }


@pytest.mark.parametrize(
    ("match", "kept"),
    [
        ({"uri": {"prefix": "/x"}}, True),
        ({"gateways": ["gw"], "uri": {"prefix": "/x"}}, True),
        ({"gateways": ["edge/gw"]}, True),
        ({"gateways": ["mesh"]}, False),
        ({"gateways": ["other"]}, False),
        ({"port": 80}, True),  # the Gateway server's port, not the listener's
        ({"port": 8080}, False),
        ({"sourceLabels": {"istio": "ingressgateway"}}, True),  # judged for the gateway proxy
        ({"sourceLabels": {"app": "web"}}, False),
        ({"sourceNamespace": "edge"}, True),
        ({"sourceNamespace": "shop"}, False),
    ],
)
def test_match_conditions_at_a_gateway(match: dict[str, Any], kept: bool) -> None:
    snap = snapshot(
        gateway("gw", [server(80, "HTTP", ["a.example.com"])]),
        virtual_service("a", ["a.example.com"], ["gw", "mesh"], [to_backend(match=[match])]),
    )  # fmt: skip
    (chain,) = listeners_json(snap)["0.0.0.0_8080"]["filter_chains"]
    routes = virtual_hosts(chain).get("a.example.com", {}).get("routes", [])
    assert bool(routes) is kept


def test_https_redirect_and_tls_termination() -> None:
    snap = snapshot(
        gateway("gw", [
            server(80, "HTTP", ["secure.example.com"], tls={"httpsRedirect": True}),
            server(443, "HTTPS", ["secure.example.com"],
                   tls={"mode": "SIMPLE", "credentialName": "cert",
                        "minProtocolVersion": "TLSV1_2"}),
        ]),
        virtual_service("secure", ["secure.example.com"], ["gw"], [to_backend()]),
        secret("cert", tls_crt=CERT, tls_key=KEY),
    )  # fmt: skip
    listeners = listeners_json(snap)
    (plain,) = listeners["0.0.0.0_8080"]["filter_chains"]
    assert virtual_hosts(plain)["secure.example.com"]["require_tls"] == "ALL"
    (secure,) = listeners["0.0.0.0_8443"]["filter_chains"]
    assert secure["filter_chain_match"]["server_names"] == ["secure.example.com"]
    tls = secure["transport_socket"]["typed_config"]
    common = tls["common_tls_context"]
    assert common["tls_certificates"][0]["certificate_chain"]["inline_string"] == CERT
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert not tls.get("require_client_certificate")
    assert virtual_hosts(secure)["secure.example.com"]["routes"]
    assert [f["name"] for f in listeners["0.0.0.0_8443"]["listener_filters"]] == [
        "envoy.filters.listener.tls_inspector"
    ]


def test_mutual_tls_requires_client_certificates_from_the_secret_ca() -> None:
    snap = snapshot(
        gateway("gw", [server(443, "HTTPS", ["*"], tls={"mode": "MUTUAL", "credentialName": "c",
                                                         "subjectAltNames": ["client.example"]})]),
        secret("c", tls_crt=CERT, tls_key=KEY, ca_crt=OTHER_CERT),
    )  # fmt: skip
    (chain,) = listeners_json(snap)["0.0.0.0_8443"]["filter_chains"]
    assert "filter_chain_match" not in chain or not chain["filter_chain_match"]  # `*`: any SNI
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["inline_string"] == OTHER_CERT
    assert {m["matcher"]["exact"] for m in validation["match_typed_subject_alt_names"]} == {
        "client.example"
    }


# --- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "usable", "problem"),
    [
        (secret("a", tls_crt=CERT, tls_key=KEY), True, None),
        ({"kind": "Secret", "type": "Opaque", "metadata": {"name": "a", "namespace": "edge"},
          "data": {"cert": _b64(CERT), "key": _b64(KEY)}}, True, None),
        ({"kind": "Secret", "type": "kubernetes.io/tls",
          "metadata": {"name": "a", "namespace": "edge"},
          "stringData": {"tls.crt": CERT, "tls.key": KEY}}, True, None),
        ({"kind": "Secret", "type": "Opaque", "metadata": {"name": "a", "namespace": "edge"},
          "data": {"token": _b64("x")}}, False, None),  # not a credential: no complaint
        (secret("a", tls_crt=OTHER_CERT, tls_key=KEY), False, "does not belong"),
        (secret("a", tls_crt="nonsense", tls_key=KEY), False, "not PEM certificates"),
        ({"kind": "Secret", "type": "kubernetes.io/tls",
          "metadata": {"name": "a", "namespace": "edge"},
          "data": {"tls.crt": "!!!", "tls.key": _b64(KEY)}}, False, "not base64"),
        (secret("a", tls_crt=CERT), False, "neither tls.crt/tls.key nor cert/key"),
    ],
)  # fmt: skip
def test_tls_secrets(obj: dict[str, Any], usable: bool, problem: str | None) -> None:
    problems: list[str] = []
    found = credentials_of([obj], problems)
    assert bool(found) is usable
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]
        assert problems[0].startswith("Secret edge/a: ")
        assert "PRIVATE KEY" not in problems[0]
    for credential in found.values():
        assert "PRIVATE" not in repr(credential)  # never in a log line


# --- the reference and the cache agree ---------------------------------------------------------


def test_router_resources_from_the_cache_match_the_reference() -> None:
    snap = snapshot(
        gateway("gw", [server(80, "HTTP", ["a.example.com"]),
                       server(443, "HTTPS", ["a.example.com"], tls={"mode": "ISTIO_MUTUAL"})]),
        virtual_service("a", ["a.example.com"], ["gw"], [to_backend()]),
    )  # fmt: skip
    reference = generate(snap, GATEWAY)
    listener_names = sorted(listener.name for listener in reference.listeners)
    assert listener_names == ["0.0.0.0_8080", "0.0.0.0_8443"]  # no capture listeners
    cached = ResourceCache(snap).resources_for(GATEWAY)
    assert sorted(cached[TYPE_LISTENER].resources) == listener_names
    assert {r.name: r.body for r in cached[TYPE_LISTENER].resources.values()} == {
        listener.name: listener.SerializeToString() for listener in reference.listeners
    }
    assert set(cached[TYPE_CLUSTER].resources) == {c.name for c in reference.clusters}
    assert f"outbound|80||{BACKEND}" in cached[TYPE_CLUSTER].resources
    assert not any(name.startswith("inbound|") for name in cached[TYPE_CLUSTER].resources)


def test_sidecar_resources_do_not_apply_to_gateways() -> None:
    """A mesh-wide Sidecar keeping proxies to their own namespace binds sidecars only."""
    mesh_wide = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                 "metadata": {"name": "default", "namespace": "istio-system"},
                 "spec": {"egress": [{"hosts": ["./*"]}]}}  # fmt: skip
    snap = snapshot(
        mesh_wide,
        gateway("gw", [server(80, "HTTP", ["a.example.com"])]),
        virtual_service("a", ["a.example.com"], ["gw"], [to_backend()]),
    )  # fmt: skip
    backend_cluster = f"outbound|80||{BACKEND}"
    sidecar = parse_node("sidecar~10.0.0.30~client-0.edge~edge.svc.cluster.local",
                         {"NAMESPACE": "edge"})  # fmt: skip
    assert backend_cluster not in {c.name for c in generate(snap, sidecar).clusters}
    assert backend_cluster in {c.name for c in generate(snap, GATEWAY).clusters}
    cached = ResourceCache(snap)
    assert backend_cluster in cached.resources_for(GATEWAY)[TYPE_CLUSTER].resources
    assert backend_cluster not in cached.resources_for(sidecar)[TYPE_CLUSTER].resources
