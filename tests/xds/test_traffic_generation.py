"""VirtualService and DestinationRule → Envoy routes and clusters: objects in (through the
registries' one builder, so `validate` runs as it does in production), resources out."""

from __future__ import annotations

from typing import Any

import pytest
from test_envoy_acks import NODE
from xds_testkit import to_dict

from sidemesh.api.config import MeshConfig
from sidemesh.xds import generate as gen
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import parse_node
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER

PROXY = parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"}})
HOST = "reviews.demo.svc.cluster.local"
V1, V2 = f"outbound|80|v1|{HOST}", f"outbound|80|v2|{HOST}"
LISTENER = "10.96.0.20_80"


def pod(name: str, ip: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo",
                     "labels": {"app": "reviews", "version": version,
                                "security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": "reviews",
                 "containers": [{"ports": [{"name": "http", "containerPort": 9080}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "demo"},
    "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "reviews"},
             "ports": [{"name": "http", "port": 80, "targetPort": 9080}]},
}  # fmt: skip
SUBSETS = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]


def virtual_service(*http: dict[str, Any], name: str = "reviews") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"hosts": ["reviews"], "http": list(http)}}  # fmt: skip


def destination_rule(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "demo"},
            "spec": {"host": "reviews", **spec}}  # fmt: skip


def to(subset: str, weight: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"destination": {"host": "reviews", "subset": subset}}
    if weight is not None:
        found["weight"] = weight
    return found


def snapshot(*config: dict[str, Any], errors: list[str] | None = None) -> MeshSnapshot:
    objects = [SERVICE, pod("reviews-v1", "10.0.0.21", "v1"), pod("reviews-v2", "10.0.0.22", "v2"),
               *config]  # fmt: skip
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1,
                          errors=errors)  # fmt: skip


def resources(mesh: MeshSnapshot) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    generated = gen.generate(mesh, PROXY)
    listeners = {m.name: to_dict(m) for m in generated.listeners}
    clusters = {m.name: to_dict(m) for m in generated.clusters}
    assignments = {m.cluster_name: to_dict(m) for m in generated.load_assignments}
    return listeners, clusters, assignments


def manager(mesh: MeshSnapshot) -> dict[str, Any]:
    listener = resources(mesh)[0][LISTENER]
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def routes(mesh: MeshSnapshot) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = manager(mesh)["route_config"]["virtual_hosts"][0]["routes"]
    return found


def test_without_a_virtual_service_the_listener_keeps_its_one_default_route() -> None:
    config = manager(snapshot())
    [route] = config["route_config"]["virtual_hosts"][0]["routes"]
    assert route == {"match": {"prefix": "/"},
                     "route": {"cluster": f"outbound|80||{HOST}", "timeout": "0s"}}  # fmt: skip
    names = [f["name"] for f in config["http_filters"]]  # telemetry's filters may come first
    assert "envoy.filters.http.fault" not in names and names[-1] == "envoy.filters.http.router"


def test_weighted_destinations_split_between_subset_clusters() -> None:
    mesh = snapshot(virtual_service({"route": [to("v1", 90), to("v2", 10)]}),
                    destination_rule(subsets=SUBSETS))  # fmt: skip
    [route] = routes(mesh)
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 90},
        {"name": V2, "weight": 10},
    ]
    config = manager(mesh)
    assert config["route_config"]["validate_clusters"] is False
    names = [f["name"] for f in config["http_filters"]]  # telemetry's filters may come first
    assert names[-2:] == ["envoy.filters.http.fault", "envoy.filters.http.router"]


def test_subsets_are_clusters_of_their_own_whose_endpoints_carry_the_labels() -> None:
    _, clusters, assignments = resources(snapshot(destination_rule(subsets=SUBSETS)))
    for name in (f"outbound|80||{HOST}", V1, V2):
        assert clusters[name]["eds_cluster_config"]["service_name"] == name
        # auto mTLS is kept for every subset
        assert clusters[name]["transport_socket_matches"][0]["name"] == "tlsMode-istio"

    def addresses(name: str) -> list[str]:
        return [e["endpoint"]["address"]["socket_address"]["address"]
                for e in assignments[name]["endpoints"][0]["lb_endpoints"]]  # fmt: skip

    assert addresses(f"outbound|80||{HOST}") == ["10.0.0.21", "10.0.0.22"]
    assert addresses(V1) == ["10.0.0.21"]
    assert addresses(V2) == ["10.0.0.22"]


def test_matches_become_routes_in_rule_order_without_a_catch_all_added() -> None:
    mesh = snapshot(virtual_service(
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to("v2")]},
        {"match": [{"uri": {"exact": "/a"}, "method": {"exact": "POST"}},
                   {"uri": {"prefix": "/b"}, "headers": {"x-p": {"prefix": "pre"}}},
                   {"uri": {"regex": "/c/[0-9]+"}, "headers": {"x-r": {"regex": "a.*"}},
                    "ignoreUriCase": True}],
         "route": [to("v1")]},
        {"match": [{"port": 8080}], "route": [to("v2")]},  # another port: no route here
        # for some callers or a gateway only: left out (outbound routes are shared)
        {"match": [{"sourceLabels": {"app": "tester"}}, {"sourceNamespace": "qa"},
                   {"gateways": ["istio-system/ingress"]}], "route": [to("v2")]},
    ))  # fmt: skip
    found = routes(mesh)
    assert [r["match"] for r in found] == [
        {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
        {"path": "/a", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]},
        {"prefix": "/b", "headers": [{"name": "x-p", "string_match": {"prefix": "pre"}}]},
        {"safe_regex": {"regex": "/c/[0-9]+"}, "case_sensitive": False,
         "headers": [{"name": "x-r", "string_match": {"safe_regex": {"regex": "a.*"}}}]},
    ]  # fmt: skip
    assert [r["route"]["cluster"] for r in found] == [V2, V1, V1, V1]


def test_retries_timeout_and_istios_default_retry_policy() -> None:
    mesh = snapshot(virtual_service(
        {"match": [{"uri": {"prefix": "/r"}}], "route": [to("v1")], "timeout": "500ms",
         "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,409"}},
        {"match": [{"uri": {"prefix": "/none"}}], "route": [to("v1")],
         "retries": {"attempts": 0}},
        {"route": [to("v1")]},
    ))  # fmt: skip
    explicit, none, default = (r["route"] for r in routes(mesh))
    assert explicit["timeout"] == "0.500s"
    other_hosts = {
        "host_selection_retry_max_attempts": "5",
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/"
                             "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
    }  # fmt: skip
    assert explicit["retry_policy"] == {
        "retry_on": "5xx,retriable-status-codes", "num_retries": 3,
        "retriable_status_codes": [409], "per_try_timeout": "2s", **other_hosts,
    }  # fmt: skip
    assert "retry_policy" not in none
    assert default["timeout"] == "0s"
    assert default["retry_policy"]["num_retries"] == 2
    assert default["retry_policy"]["retriable_status_codes"] == [503]
    assert default["retry_policy"]["retry_host_predicate"] == other_hosts["retry_host_predicate"]


def test_fault_is_per_route_configuration_of_the_fault_filter() -> None:
    mesh = snapshot(virtual_service({
        "route": [to("v1")],
        "fault": {"delay": {"fixedDelay": "1.5s", "percentage": {"value": 12.5}},
                  "abort": {"httpStatus": 503, "percentage": {"value": 50}}},
    }))  # fmt: skip
    [route] = routes(mesh)
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["@type"] == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    assert fault["delay"] == {
        "fixed_delay": "1.500s",
        "percentage": {"numerator": 125000, "denominator": "MILLION"},
    }
    assert fault["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 500000, "denominator": "MILLION"},
    }


def test_header_operations() -> None:
    mesh = snapshot(virtual_service({
        "route": [to("v1")],
        "headers": {"request": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]},
                    "response": {"remove": ["server"]}},
    }))  # fmt: skip
    [route] = routes(mesh)
    assert route["request_headers_to_add"] == [
        {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-b", "value": "2"}},  # APPEND_IF_EXISTS_OR_ADD, the default
    ]
    assert route["request_headers_to_remove"] == ["x-c"]
    assert route["response_headers_to_remove"] == ["server"]


def test_destination_header_operations_go_with_their_destination() -> None:
    v1 = {**to("v1", 50), "headers": {"request": {"set": {"x-v": "1"}}}}
    v2 = {**to("v2", 50), "headers": {"response": {"remove": ["x-w"]}}}
    [split] = routes(snapshot(virtual_service({"route": [v1, v2]})))
    assert split["route"]["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 50, "request_headers_to_add": [
            {"header": {"key": "x-v", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ]},
        {"name": V2, "weight": 50, "response_headers_to_remove": ["x-w"]},
    ]  # fmt: skip
    single = {**to("v1", 100), "headers": {"request": {"remove": ["x-d"]}}}
    rule = {"route": [single], "headers": {"request": {"remove": ["x-r"]}}}
    [route] = routes(snapshot(virtual_service(rule)))
    assert route["request_headers_to_remove"] == ["x-r", "x-d"]


def test_a_zero_weight_destination_gets_nothing() -> None:
    [some] = routes(snapshot(virtual_service({"route": [to("v1", 100), to("v2", 0)]})))
    assert some["route"]["weighted_clusters"]["clusters"] == [{"name": V1, "weight": 100}]
    errors: list[str] = []  # all zero: refused by validation, the default route stays
    [none] = routes(snapshot(virtual_service({"route": [to("v1", 0), to("v2", 0)]}),
                             errors=errors))  # fmt: skip
    assert none["route"]["cluster"] == f"outbound|80||{HOST}"
    assert "total destination weight = 0" in errors[0]


def test_destination_rule_policies_become_cluster_fields_subsets_override() -> None:
    policy = {
        "loadBalancer": {"simple": "LEAST_CONN"},
        "connectionPool": {"tcp": {"maxConnections": 1, "connectTimeout": "3s"},
                           "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 5,
                                    "maxRetries": 4}},
        "outlierDetection": {"consecutive5xxErrors": 7, "interval": "10s",
                             "baseEjectionTime": "30s", "maxEjectionPercent": 50},
    }  # fmt: skip
    subsets = [SUBSETS[0], {**SUBSETS[1], "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]
    _, clusters, _ = resources(snapshot(destination_rule(trafficPolicy=policy, subsets=subsets)))
    main = clusters[f"outbound|80||{HOST}"]
    assert main["lb_policy"] == "LEAST_REQUEST"
    assert main["connect_timeout"] == "3s"
    assert main["circuit_breakers"]["thresholds"] == [{
        "max_connections": 1, "max_pending_requests": 1, "max_requests": 4294967295,
        "max_retries": 4, "track_remaining": True,
    }]  # fmt: skip
    options = main["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["common_http_protocol_options"] == {"max_requests_per_connection": 5}
    assert options["explicit_http_config"] == {"http_protocol_options": {}}
    assert main["outlier_detection"] == {
        "consecutive_5xx": 7, "enforcing_consecutive_5xx": 100, "enforcing_success_rate": 0,
        "interval": "10s", "base_ejection_time": "30s", "max_ejection_percent": 50,
    }  # fmt: skip
    assert clusters[V1]["lb_policy"] == "LEAST_REQUEST"  # inherited
    assert clusters[V2]["lb_policy"] == "RANDOM"  # the subset's own
    assert clusters[V2]["circuit_breakers"] == main["circuit_breakers"]


def test_port_level_settings_override_for_their_port() -> None:
    policy = {"loadBalancer": {"simple": "RANDOM"},
              "portLevelSettings": [{"port": {"number": 80},
                                     "loadBalancer": {"simple": "ROUND_ROBIN"}}]}  # fmt: skip
    _, clusters, _ = resources(snapshot(destination_rule(trafficPolicy=policy)))
    assert clusters[f"outbound|80||{HOST}"].get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"


def test_an_invalid_virtual_service_is_skipped_with_its_reason() -> None:
    errors: list[str] = []
    bad = virtual_service({"route": [to("v1")], "timeout": "soon"})
    mesh = snapshot(bad, errors=errors)
    assert mesh.virtual_services == ()
    assert len(errors) == 1
    assert "VirtualService demo/reviews" in errors[0] and "spec.http[0].timeout" in errors[0]
    assert routes(mesh)[0]["route"]["cluster"] == f"outbound|80||{HOST}"  # the default


@pytest.mark.parametrize("gateways", [["mesh"], [], ["istio-system/ingress", "mesh"]])
def test_virtual_services_bound_to_the_mesh_apply(gateways: list[str]) -> None:
    spec = virtual_service({"route": [to("v2")]})
    spec["spec"]["gateways"] = gateways
    assert routes(snapshot(spec))[0]["route"]["cluster"] == V2


def test_a_gateway_only_virtual_service_does_not_touch_sidecars() -> None:
    spec = virtual_service({"route": [to("v2")]})
    spec["spec"]["gateways"] = ["istio-system/ingress"]
    assert routes(snapshot(spec))[0]["route"]["cluster"] == f"outbound|80||{HOST}"


def test_the_cache_agrees_with_the_reference_and_rebuilds_only_what_changed() -> None:
    first = snapshot(virtual_service({"route": [to("v1", 90), to("v2", 10)]}),
                     destination_rule(subsets=SUBSETS))  # fmt: skip
    cache = ResourceCache(first)
    built = cache.resources_for(PROXY)
    reference = gen.generate(first, PROXY)
    assert set(built[TYPE_LISTENER].resources) == {m.name for m in reference.listeners}
    assert set(built[TYPE_CLUSTER].resources) == {m.name for m in reference.clusters}
    assert set(built[TYPE_ENDPOINT].resources) == {
        m.cluster_name for m in reference.load_assignments
    }
    for message in reference.listeners:
        assert built[TYPE_LISTENER].resources[message.name].body == message.SerializeToString()
    for message in reference.clusters:
        assert built[TYPE_CLUSTER].resources[message.name].body == message.SerializeToString()

    second = snapshot(virtual_service({"route": [to("v1", 50), to("v2", 50)]}),
                      destination_rule(subsets=SUBSETS))  # fmt: skip
    cache.set_snapshot(second)
    after = cache.resources_for(PROXY)
    changed, removed = cache.diff(built[TYPE_LISTENER], after[TYPE_LISTENER]).as_tuple()
    assert (changed, removed) == ((LISTENER,), ())
    assert cache.diff(built[TYPE_CLUSTER], after[TYPE_CLUSTER]).as_tuple() == ((), ())


def rule_in(namespace: str, host: str, balancer: str) -> dict[str, Any]:
    name = "r-" + balancer.lower().replace("_", "-")
    policy = {"loadBalancer": {"simple": balancer}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"host": host, "trafficPolicy": policy}}  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([rule_in("istio-system", HOST, "RANDOM"), rule_in("demo", "reviews", "LEAST_REQUEST")],
         "LEAST_REQUEST"),  # the service's namespace before the root namespace
        ([rule_in("other", HOST, "LEAST_REQUEST"), rule_in("istio-system", HOST, "RANDOM")],
         "RANDOM"),  # the root namespace before any other
        ([rule_in("demo", "*.demo.svc.cluster.local", "RANDOM")], "RANDOM"),  # a wildcard host
        ([rule_in("demo", "*.demo.svc.cluster.local", "RANDOM"),
          rule_in("other", HOST, "LEAST_REQUEST")], "LEAST_REQUEST"),  # exact before wildcard
    ],
)  # fmt: skip
def test_which_destination_rule_applies(rules: list[dict[str, Any]], expected: str) -> None:
    _, clusters, _ = resources(snapshot(*rules))
    assert clusters[f"outbound|80||{HOST}"]["lb_policy"] == expected
