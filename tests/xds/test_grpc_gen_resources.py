"""The gRPC generator's resources (gRFC A27's shape) and the ADS rules a gRPC client needs:
named subscriptions, every subscribed listener in every LDS answer."""

from __future__ import annotations

from typing import Any

import pytest
from xds_testkit import to_dict

from sidemesh.api.config import MeshConfig
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.cache import TypedResources
from sidemesh.xds.convert import object_key
from sidemesh.xds.grpc_gen import GrpcGenerator, is_grpc, parse_cluster_name, split_target
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER
from sidemesh.xds.responses import TypeState, sotw_payload

NODE = "sidecar~10.0.0.9~client-0.demo~demo.svc.cluster.local"
CLIENT = parse_node(NODE, {"NAMESPACE": "demo", "GENERATOR": "grpc"})
HOST = "who.demo.svc.cluster.local"
DEFAULT, V1, V2 = (f"outbound|7070||{HOST}", f"outbound|7070|v1|{HOST}",
                   f"outbound|7070|v2|{HOST}")  # fmt: skip


def pod(name: str, ip: str, version: str, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo",
                     "labels": {"app": "who", "version": version,
                                "security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": "who",
                 "containers": [{"ports": [{"name": "grpc", "containerPort": 17070}]}]},
        "status": {"podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "who", "namespace": "demo"},
    "spec": {"clusterIP": "10.96.0.30", "selector": {"app": "who"},
             "ports": [{"name": "grpc", "port": 7070, "targetPort": 17070}]},
}  # fmt: skip


def rule(**policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "who", "namespace": "demo"},
        "spec": {"host": "who", **({"trafficPolicy": policy} if policy else {}),
                 "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                             {"name": "v2", "labels": {"version": "v2"}}]},
    }  # fmt: skip


SPLIT = {
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "who", "namespace": "demo"},
    "spec": {"hosts": ["who"], "http": [
        {"match": [{"uri": {"prefix": "/sidemesh.test.Who/"}}],
         "route": [{"destination": {"host": "who", "subset": "v1"}, "weight": 80},
                   {"destination": {"host": "who", "subset": "v2"}, "weight": 20}]}]},
}  # fmt: skip


def mesh(*config: dict[str, Any]) -> MeshSnapshot:
    objects = [SERVICE, pod("who-v1", "10.0.0.21", "v1"), pod("who-v2", "10.0.0.22", "v2"),
               pod("who-v3", "10.0.0.23", "v2", ready=False), *config]  # fmt: skip
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1)


def answer(
    snapshot: MeshSnapshot, asked: dict[str, frozenset[str] | None]
) -> dict[str, dict[str, Any]]:
    found = GrpcGenerator().resources_for(snapshot, CLIENT, asked)
    return {type_url: {name: _decode(type_url, r.body) for name, r in typed.resources.items()}
            for type_url, typed in found.items()}  # fmt: skip


def _decode(type_url: str, body: bytes) -> dict[str, Any]:
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2

    message = {TYPE_LISTENER: listener_pb2.Listener, TYPE_CLUSTER: cluster_pb2.Cluster,
               TYPE_ENDPOINT: endpoint_pb2.ClusterLoadAssignment}[type_url]()  # fmt: skip
    message.ParseFromString(body)
    return to_dict(message)


def test_only_grpc_nodes_use_the_generator() -> None:
    assert is_grpc(CLIENT)
    assert not is_grpc(parse_node(NODE, {"NAMESPACE": "demo"}))


@pytest.mark.parametrize("name", [f"{HOST}:7070", "who:7070", "who.demo:7070",
                                  "who.demo.svc:7070"])  # fmt: skip
def test_a_listener_is_an_api_listener_under_the_name_asked(name: str) -> None:
    listeners = answer(mesh(), {TYPE_LISTENER: frozenset({name})})[TYPE_LISTENER]
    listener = listeners[name]
    assert set(listener) == {"name", "api_listener"}  # no address, no filter chains
    manager = listener["api_listener"]["api_listener"]
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    (virtual_host,) = manager["route_config"]["virtual_hosts"]
    assert virtual_host["routes"] == [{"match": {"prefix": "/"},
                                       "route": {"cluster": DEFAULT}}]  # fmt: skip


@pytest.mark.parametrize("name", ["who:7071", "nobody:7070", "who", "who:http", "who:0"])
def test_names_that_are_no_service_port_are_left_out(name: str) -> None:
    assert answer(mesh(), {TYPE_LISTENER: frozenset({name})})[TYPE_LISTENER] == {}


def test_virtual_service_weights_become_weighted_clusters() -> None:
    listeners = answer(mesh(rule(), SPLIT), {TYPE_LISTENER: frozenset({"who:7070"})})
    manager = listeners[TYPE_LISTENER]["who:7070"]["api_listener"]["api_listener"]
    (route,) = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"] == {"prefix": "/sidemesh.test.Who/"}
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 80},
        {"name": V2, "weight": 20},
    ]


def test_clusters_and_assignments_only_as_asked_with_subsets() -> None:
    asked = frozenset({V2, "outbound|7070||nobody.demo.svc.cluster.local", "junk"})
    found = answer(mesh(rule()), {TYPE_CLUSTER: asked, TYPE_ENDPOINT: asked})
    assert set(found[TYPE_CLUSTER]) == {V2}
    cluster = found[TYPE_CLUSTER][V2]
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"] == {
        "eds_config": {"ads": {}, "resource_api_version": "V3"}, "service_name": V2
    }  # fmt: skip
    assert "transport_socket" not in cluster  # mTLS only when a rule asks for it
    (locality,) = found[TYPE_ENDPOINT][V2]["endpoints"]
    assert locality["load_balancing_weight"] == 1  # gRPC ignores localities without
    addresses = [e["endpoint"]["address"]["socket_address"] for e in locality["lb_endpoints"]]
    assert addresses == [{"address": "10.0.0.22", "port_value": 17070}]  # ready ones only


def test_istio_mutual_uses_the_bootstraps_certificate_provider() -> None:
    policy = rule(tls={"mode": "ISTIO_MUTUAL"}, loadBalancer={"simple": "LEAST_REQUEST"})
    found = answer(mesh(policy), {TYPE_CLUSTER: frozenset({DEFAULT})})
    cluster = found[TYPE_CLUSTER][DEFAULT]
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["tls_certificate_provider_instance"] == {"instance_name": "default"}
    validation = context["validation_context"]
    assert validation["ca_certificate_provider_instance"] == {"instance_name": "default"}
    assert validation["match_subject_alt_names"] == [
        {"exact": "spiffe://cluster.local/ns/demo/sa/who"}
    ]


def test_load_balancers_grpc_lacks_fall_back_to_its_default() -> None:
    found = answer(mesh(rule(loadBalancer={"simple": "RANDOM"})),
                   {TYPE_CLUSTER: frozenset({DEFAULT})})  # fmt: skip
    assert "lb_policy" not in found[TYPE_CLUSTER][DEFAULT]


def test_answers_are_shared_until_the_snapshot_changes() -> None:
    generator = GrpcGenerator()
    snapshot = mesh()
    asked: dict[str, frozenset[str] | None] = {TYPE_LISTENER: frozenset({"who:7070"})}
    first = generator.resources_for(snapshot, CLIENT, asked)
    assert generator.resources_for(snapshot, CLIENT, asked)[TYPE_LISTENER] is first[TYPE_LISTENER]
    again = generator.resources_for(mesh(), CLIENT, asked)[TYPE_LISTENER]
    assert again is not first[TYPE_LISTENER]
    assert again.version == first[TYPE_LISTENER].version  # same bytes, same version


def _names_in(payload: bytes, typed: TypedResources) -> set[str]:
    return {name for name, r in typed.resources.items() if r.any_field in payload}


def test_a_named_lds_answer_carries_every_subscribed_listener() -> None:
    """gRPC drops a listener an LDS answer leaves out: adding a name resends the first."""
    generator = GrpcGenerator()
    snapshot = mesh()
    one = generator.resources_for(snapshot, CLIENT, {TYPE_LISTENER: frozenset({"who:7070"})})
    names = frozenset({"who:7070", f"{HOST}:7070"})
    both = generator.resources_for(snapshot, CLIENT, {TYPE_LISTENER: names})[TYPE_LISTENER]
    state = TypeState(subscribed=names, sent=one[TYPE_LISTENER], pending={f"{HOST}:7070"})
    changed = tuple(n for n in both.resources if n not in one[TYPE_LISTENER].resources)
    payload = sotw_payload(state, both, changed, (), initial=False, control_plane=b"", nonce="2")
    assert payload is not None and _names_in(payload, both) == set(names)
    state = TypeState(subscribed=names, sent=both)
    assert sotw_payload(state, both, (), (), initial=False, control_plane=b"", nonce="3") is None


def test_target_and_cluster_names_parse() -> None:
    assert split_target("who:7070") == ("who", 7070)
    assert split_target("who") is None
    assert parse_cluster_name(V1) == (7070, "v1", HOST)
    assert parse_cluster_name("inbound|7070||") is None


def test_a_request_naming_nothing_gets_nothing() -> None:
    """gRPC names nothing only when it stops watching: no wildcard of the whole mesh."""
    found = answer(mesh(rule()), {TYPE_LISTENER: None, TYPE_CLUSTER: None})
    assert found == {TYPE_LISTENER: {}, TYPE_CLUSTER: {}, TYPE_ENDPOINT: {}}
