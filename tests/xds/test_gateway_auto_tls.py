"""Gateway servers that route without a VirtualService or after terminating TLS:
AUTO_PASSTHROUGH (`xds.gateway_auto_passthrough`: the SNI `outbound_.PORT_.SUBSET_.HOST` names
a plain-TCP twin of the mesh's cluster) and TLS servers with SIMPLE/MUTUAL that terminate and
then follow the `tcp` rules; generated, and carried by a real Envoy gateway."""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from gateway_tcp_kit import (
    DATABASE,
    SECURE,
    backend_objects,
    checked_snapshot,
    database_backend,
    gateway_serving,
    routes,
    tls_backend,
    tls_exchange,
    to,
)
from test_envoy_acks import ca  # noqa: F401  (the fixture)
from test_gateway_envoy_acks import gateway_envoy
from test_gateway_listeners import (
    GATEWAY,
    _pem_pair,
    gateway,
    listeners_json,
    secret,
    server,
    snapshot,
)
from xds_testkit import eventually, free_port

from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.gateway_auto_passthrough import sni_dnat_cluster, sni_dnat_name
from sidemesh.xds.resource_names import TYPE_CLUSTER

WEB = "web.shop.svc.cluster.local"  # test_gateway_listeners.cluster_objects' backend
SUBSETS = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"host": WEB, "subsets": [{"name": "v1", "labels": {"app": "web"}}]},
}  # fmt: skip


def _auto(number: int, hosts: list[str]) -> dict[str, Any]:
    return server(number, "TLS", hosts, tls={"mode": "AUTO_PASSTHROUGH"})


def _clusters(snap: Any) -> dict[str, Any]:
    found = ResourceCache(snap).resources_for(GATEWAY)[TYPE_CLUSTER].resources
    return {name: cluster_pb2.Cluster.FromString(r.body) for name, r in found.items()}


# --- generation ---------------------------------------------------------------------------------


def test_sni_dnat_names_follow_istio() -> None:
    assert sni_dnat_name(f"outbound|80||{WEB}") == f"outbound_.80_._.{WEB}"
    assert sni_dnat_name(f"outbound|80|v1|{WEB}") == f"outbound_.80_.v1_.{WEB}"
    assert sni_dnat_name("PassthroughCluster") is None
    assert sni_dnat_name("inbound|8080||") is None


def test_auto_passthrough_matches_exactly_the_sni_of_each_cluster_its_hosts_cover() -> None:
    snap = snapshot(gateway("gw", [_auto(15443, ["*.local"])]), SUBSETS)
    listener = listeners_json(snap)["0.0.0.0_15443"]
    [chain] = listener["filter_chains"]
    # Exact names only, never a wildcard: the SNI becomes a cluster name, and the gateway also
    # holds clusters that carry its own mesh identity.
    ingress = "istio-ingressgateway.edge.svc.cluster.local"  # the gateway's own Service
    assert chain["filter_chain_match"]["server_names"] == [
        f"outbound_.443_._.{ingress}", f"outbound_.80_._.{ingress}",
        f"outbound_.80_._.{WEB}", f"outbound_.80_.v1_.{WEB}"]  # fmt: skip
    assert [f["name"] for f in chain["filters"]] == [
        "envoy.filters.network.sni_cluster", "envoy.filters.network.tcp_proxy"]  # fmt: skip
    assert "transport_socket" not in chain  # the client's TLS passes through
    assert [f["name"] for f in listener["listener_filters"]] == [
        "envoy.filters.listener.tls_inspector"]  # fmt: skip


def test_auto_passthrough_hosts_limit_the_services() -> None:
    snap = snapshot(gateway("gw", [_auto(15443, ["other/*"])]))  # no service in `other`
    assert listeners_json(snap) == {}
    snap = snapshot(gateway("gw", [_auto(15443, ["shop/*"])]))
    [chain] = listeners_json(snap)["0.0.0.0_15443"]["filter_chains"]
    assert chain["filter_chain_match"]["server_names"] == [f"outbound_.80_._.{WEB}"]


def test_sni_dnat_clusters_are_plain_tcp_twins_for_auto_passthrough_gateways_only() -> None:
    plain = _clusters(snapshot(gateway("gw", [server(80, "HTTP", ["*"])])))
    assert not [name for name in plain if name.startswith("outbound_.")]
    clusters = _clusters(snapshot(gateway("gw", [_auto(15443, ["*"])]), SUBSETS))
    for subset in ("", "v1"):
        mesh = clusters[f"outbound|80|{subset}|{WEB}"]
        twin = clusters[f"outbound_.80_.{subset}_.{WEB}"]
        assert mesh.transport_socket_matches  # the mesh's own cluster keeps auto mTLS
        assert not twin.transport_socket_matches and not twin.HasField("transport_socket")
        # the same endpoints: EDS reads the mesh cluster's load assignment
        assert twin.eds_cluster_config.service_name == mesh.name
        assert twin.metadata == mesh.metadata  # telemetry's destination_service
    assert sni_dnat_cluster(clusters["PassthroughCluster"]) is None


def test_a_terminating_tls_server_forwards_by_the_first_tcp_rule() -> None:
    certificate, key = _pem_pair("db.example.com")
    snap = snapshot(
        gateway("gw", [server(9443, "TLS", ["db.example.com"],
                              tls={"mode": "SIMPLE", "credentialName": "db"})]),
        secret("db", tls_crt=certificate, tls_key=key),
        routes("db", ["db.example.com"], tcp=[to(DATABASE, 5432, port=1), to(WEB, 80)]),
    )  # fmt: skip
    [chain] = listeners_json(snap)["0.0.0.0_9443"]["filter_chains"]
    assert chain["filter_chain_match"] == {"server_names": ["db.example.com"]}
    context = chain["transport_socket"]["typed_config"]
    assert "alpn_protocols" not in context["common_tls_context"]  # opaque bytes, not HTTP
    assert not context.get("require_client_certificate")  # SIMPLE
    [proxy] = chain["filters"]
    assert proxy["typed_config"]["cluster"] == f"outbound|80||{WEB}"  # port 1 does not apply


def test_a_terminating_tls_server_without_a_tcp_rule_opens_nothing() -> None:
    certificate, key = _pem_pair("db.example.com")
    snap = snapshot(
        gateway("gw", [server(9443, "TLS", ["db.example.com"],
                              tls={"mode": "SIMPLE", "credentialName": "db"})]),
        secret("db", tls_crt=certificate, tls_key=key),
    )  # fmt: skip
    assert listeners_json(snap) == {}


# --- a real Envoy gateway -----------------------------------------------------------------------


async def test_envoy_routes_auto_passthrough_by_the_mesh_sni(
    ca: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
) -> None:
    port = free_port()
    async with tls_backend(tmp_path, "secure.example.com") as (backend_port, der):
        every = [
            *backend_objects("secure", backend_port, "https"),
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "secure", "namespace": "shop"},
             "spec": {"host": SECURE, "subsets": [{"name": "v1", "labels": {"app": "secure"}}]}},
            gateway("gw", [{**_auto(port, ["*.local"]), "bind": "127.0.0.1"}]),
        ]  # fmt: skip
        snap = checked_snapshot(every)
        trust = ssl.DER_cert_to_PEM_cert(der)
        async with gateway_envoy(ca, snap) as (control_plane, envoy):
            await gateway_serving(control_plane, envoy, 1)
            for subset in ("", "v1"):
                sni = f"outbound_.443_.{subset}_.{SECURE}"
                peer, answer = await eventually(
                    lambda sni=sni: tls_exchange(port, sni, trust, verify_name=False), timeout=30
                )
                # The backend's own certificate: the gateway never terminated the TLS.
                assert peer == der
                assert answer == b"secure.example.com: hello\n"
            # Names that are not an SNI-DNAT cluster the hosts cover find no chain, even when
            # they name a cluster the gateway has (the ORIGINAL_DST one).
            for sni in ("PassthroughCluster", f"outbound_.443_._.{SECURE}.evil", "secure.local"):
                assert await tls_exchange(port, sni, trust, verify_name=False) is None


async def test_envoy_terminates_tls_then_follows_the_tcp_rule(
    ca: CertificateAuthority,  # noqa: F811
) -> None:
    async with database_backend() as database_port:
        certificate, key = _pem_pair("db.example.com")
        port = free_port()
        every = [
            *backend_objects("db", database_port, "tcp"),
            gateway("gw", [{**server(port, "TLS", ["db.example.com"],
                                     tls={"mode": "SIMPLE", "credentialName": "db"}),
                            "bind": "127.0.0.1"}]),
            secret("db", tls_crt=certificate, tls_key=key),
            routes("db", ["db.example.com"], tcp=[to(DATABASE, 5432)]),
        ]  # fmt: skip
        snap = checked_snapshot(every)
        async with gateway_envoy(ca, snap) as (control_plane, envoy):
            await gateway_serving(control_plane, envoy, 1)
            peer, answer = await eventually(
                lambda: tls_exchange(port, "db.example.com", certificate, verify_name=True),
                timeout=30,
            )
            # The gateway's certificate from the Secret; the backend got the plain bytes.
            assert peer == ssl.PEM_cert_to_DER_cert(certificate)
            assert answer == b"db: hello\n"


def test_a_mutual_tls_server_requires_client_certificates_then_routes_tcp() -> None:
    certificate, key = _pem_pair("db.example.com")
    snap = snapshot(
        gateway("gw", [server(9443, "TLS", ["db.example.com"],
                              tls={"mode": "MUTUAL", "credentialName": "db"})]),
        secret("db", tls_crt=certificate, tls_key=key, ca_crt=certificate),
        routes("db", ["db.example.com"], tcp=[to(WEB, 80)]),
    )  # fmt: skip
    [chain] = listeners_json(snap)["0.0.0.0_9443"]["filter_chains"]
    context = chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    assert context["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "inline_string": certificate}  # fmt: skip
    assert chain["filters"][0]["typed_config"]["cluster"] == f"outbound|80||{WEB}"
