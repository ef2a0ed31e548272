"""A proxyless gRPC server's own listener (gRFC A36): which ports get one, mTLS by the
workload's PeerAuthentication (Istio's table), and its AuthorizationPolicy."""

from __future__ import annotations

from typing import Any

import pytest
from grpc_server_kit import NAME, mesh, server
from xds_testkit import to_dict

from sidemesh.agent import grpc_bootstrap
from sidemesh.xds import grpc_gen, grpc_gen_inbound
from sidemesh.xds.grpc_gen_inbound import listen_address, server_listener
from sidemesh.xds.proxy import parse_node


def peer_authentication(mode: str) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "demo"},
            "spec": {"mtls": {"mode": mode}}}  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "labels", "mtls"),
    [
        (None, {"app": "who"}, False),  # PERMISSIVE: gRPC cannot serve both, so plaintext
        (None, {"app": "who", "security.istio.io/tlsMode": "istio"}, True),  # auto mTLS
        ("STRICT", {"app": "who"}, True),
        ("DISABLE", {"app": "who", "security.istio.io/tlsMode": "istio"}, False),
    ],
)
def test_mtls_follows_peer_authentication(
    mode: str | None, labels: dict[str, str], mtls: bool
) -> None:
    snapshot = mesh(*([peer_authentication(mode)] if mode else []))
    listener = to_dict(server_listener(NAME, snapshot, server(labels)))
    assert listener["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 17070}}
    (chain,) = listener["filter_chains"]
    manager = chain["filters"][0]["typed_config"]
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    (route,) = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert "non_forwarding_action" in route
    assert ("transport_socket" in chain) is mtls
    if mtls:
        context = chain["transport_socket"]["typed_config"]
        assert context["require_client_certificate"] is True
        assert context["common_tls_context"]["tls_certificate_provider_instance"] == {
            "instance_name": "default"
        }


def test_a_port_the_pod_does_not_serve_gets_no_listener() -> None:
    proxy = server({"app": "who"})
    assert server_listener("xds.istio.io/grpc/lds/inbound/0.0.0.0:9999", mesh(), proxy) is None
    other = parse_node("sidecar~10.0.0.99~x.demo~demo.svc.cluster.local", {"NAMESPACE": "demo"})
    assert server_listener(NAME, mesh(), other) is None


def test_an_authorization_policy_becomes_the_servers_rbac_filter() -> None:
    # More in test_grpc_gen_authz.py.
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "who", "namespace": "demo"},
              "spec": {"selector": {"matchLabels": {"app": "who"}},
                       "rules": [{"from": [{"source": {"namespaces": ["demo"]}}]}]}}  # fmt: skip
    listener = to_dict(server_listener(NAME, mesh(policy), server({"app": "who"})))
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.rbac.ALLOW",
                                            "envoy.filters.http.router"]  # fmt: skip
    assert list(filters[0]["typed_config"]["rules"]["policies"]) == ["ns[demo]-policy[who]-rule[0]"]


def test_the_server_listener_is_answered_through_the_generator() -> None:
    found = grpc_gen.GrpcGenerator().resources_for(
        mesh(), server({"app": "who"}), {grpc_gen.TYPE_LISTENER: frozenset({NAME})}
    )
    assert set(found[grpc_gen.TYPE_LISTENER].resources) == {NAME}


@pytest.mark.parametrize(
    ("name", "address"),
    [(NAME, ("0.0.0.0", 17070)), ("xds.istio.io/grpc/lds/inbound/[::]:80", ("::", 80)),
     ("xds.istio.io/grpc/lds/inbound/0.0.0.0", None), ("who:7070", None)],
)  # fmt: skip
def test_listen_addresses_parse(name: str, address: tuple[str, int] | None) -> None:
    assert listen_address(name) == address


def test_the_agent_and_the_discovery_agree_on_names() -> None:
    """The agent may not import the xDS side (its footprint), so each keeps its copy."""
    assert grpc_bootstrap.GRPC_GENERATOR == grpc_gen.GRPC_GENERATOR
    assert grpc_bootstrap.SERVER_LISTENER_TEMPLATE == grpc_gen_inbound.SERVER_LISTENER_TEMPLATE
