"""Client-side (outbound) telemetry, pure: the client plan of MeshConfig and the Telemetry API
reaches the outbound listeners, proxies share listener bytes exactly when their plans agree,
OpenTelemetry names the span service from the environment, and TCP series learn the
destination workload from the endpoint's metadata."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from sidemesh.api import telemetry
from sidemesh.api.config import MeshConfig
from sidemesh.api.telemetry import peer
from sidemesh.api.telemetry.mesh import mesh_telemetry
from sidemesh.xds import convert, outbound, wildcard_listeners
from sidemesh.xds import generate as gen
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, ServicePort
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.telemetry import NO_PLAN
from sidemesh.xds.telemetry_policy import telemetry_policy
from sidemesh.xds.telemetry_tracing import ENVIRONMENT_DETECTOR

WEB = Service("demo", "web", "10.96.0.20", (ServicePort(80, "http", "HTTP", 8080),
                                             ServicePort(9000, "tcp", "TCP", 9090)))  # fmt: skip
OTEL = Service("istio-system", "otel", "10.96.0.51", (ServicePort(4317, "grpc", "GRPC"),))
MESH = MeshConfig.model_validate({
    "accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON",
    "extensionProviders": [{"name": "otel", "opentelemetry": {
        "service": "otel.istio-system.svc.cluster.local", "port": 4317}}],
    "defaultProviders": {"tracing": ["otel"]},
})  # fmt: skip
WEB_POD = Endpoint("10.0.0.5", 8080, 80, namespace="demo", workload_name="web-v1",
                   has_sidecar=True,
                   labels=(("app", "web"), ("security.istio.io/tlsMode", "istio"),
                           ("version", "v1")))  # fmt: skip
WEB_TCP = replace(WEB_POD, port=9090, service_port=9000)


def telemetry_object(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": name, "namespace": "demo"}, "spec": spec}  # fmt: skip


def snapshot(*telemetries: dict[str, Any], mesh: MeshConfig = MESH) -> MeshSnapshot:
    return MeshSnapshot(
        version=1, services=(WEB, OTEL), endpoints={WEB.hostname: (WEB_POD, WEB_TCP)},
        telemetries=tuple(telemetry.validate(t) for t in telemetries),
        mesh_telemetry=mesh_telemetry(mesh),
    )  # fmt: skip


def proxy(name: str, ip: str, app: str) -> ProxyInfo:
    return ProxyInfo(node_id=f"sidecar~{ip}~{name}.demo~demo.svc.cluster.local", ip=ip,
                     pod_name=name, namespace="demo", labels=(("app", app),))  # fmt: skip


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    return config


def counters(config: dict[str, Any]) -> list[str]:
    return [c["stat"]["name"] for log in config.get("access_log", [])
            if log["name"].endswith(".stats")
            for c in log["typed_config"].get("counters", [])]  # fmt: skip


def files(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [log for log in config.get("access_log", []) if log["name"].endswith(".file")]


def cached_listener(cache: ResourceCache, who: ProxyInfo, name: str) -> dict[str, Any]:
    listeners = cache.resources_for(who)[gen.TYPE_LISTENER]
    return as_dict(listener_pb2.Listener.FromString(listeners.resources[name].body))


def test_the_default_plan_adds_nothing_to_the_outbound_bytes() -> None:
    quiet = snapshot(mesh=MeshConfig())
    assert telemetry_policy(quiet, "demo", {"app": "web"}).client == NO_PLAN
    cache = ResourceCache(quiet)
    for port in (80, 9000):
        plain = outbound.service_listener(WEB, port).SerializeToString()
        name = f"10.96.0.20_{port}"
        body = cache.resources_for(proxy("a", "10.0.0.9", "a"))[gen.TYPE_LISTENER]
        assert body.resources[name].body == plain
    config = manager(as_dict(outbound.service_listener(WEB, 80)))
    assert not files(config) and "tracing" not in config


def test_mesh_access_log_and_tracing_reach_the_client_side() -> None:
    cache = ResourceCache(snapshot())
    config = manager(cached_listener(cache, proxy("a", "10.0.0.9", "a"), "10.96.0.20_80"))
    [log] = files(config)
    assert log["typed_config"]["path"] == "/dev/stdout"
    assert "json_format" in log["typed_config"]["log_format"]
    tracing = config["tracing"]
    assert tracing["random_sampling"]["value"] == 1.0  # the client decides, Istio's default
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    tcp = cached_listener(cache, proxy("a", "10.0.0.9", "a"), "10.96.0.20_9000")
    tcp_logs = files(tcp["filter_chains"][0]["filters"][0]["typed_config"])
    assert tcp_logs[0]["filter"]["log_type_filter"]["types"] == ["TcpConnectionEnd"]


def test_opentelemetry_takes_the_service_name_from_the_environment() -> None:
    config = manager(cached_listener(ResourceCache(snapshot()), proxy("a", "10.0.0.9", "a"),
                                     "10.96.0.20_80"))  # fmt: skip
    otel = config["tracing"]["provider"]["typed_config"]
    assert "service_name" not in otel  # static: it would differ per workload
    assert [d["name"] for d in otel["resource_detectors"]] == [ENVIRONMENT_DETECTOR]
    metadata = peer.workload_metadata(workload="web-v1", namespace="demo",
                                      labels={"app": "web"})  # fmt: skip
    assert peer.otel_resource_attributes(metadata) == {
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=web.demo"
    }
    odd = peer.WorkloadMetadata(canonical_service="a,b=c", namespace="demo")
    assert peer.otel_resource_attributes(odd)["OTEL_RESOURCE_ATTRIBUTES"] == (
        "service.name=abc.demo"
    )


CLIENT_ONLY = telemetry_object("client-metrics", {
    "selector": {"matchLabels": {"app": "quiet"}},
    "metrics": [{"overrides": [
        {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": True}]}],
    "accessLogging": [{"match": {"mode": "CLIENT"}, "disabled": True}],
})  # fmt: skip


def test_client_mode_overrides_change_the_client_side_only() -> None:
    objects = snapshot(CLIENT_ONLY)
    cache = ResourceCache(objects)
    # the quiet workload serves web's port 8080 (its address is web's endpoint)
    quiet, loud = proxy("quiet-0", "10.0.0.5", "quiet"), proxy("loud-0", "10.0.0.8", "loud")
    quiet_out = manager(cached_listener(cache, quiet, "10.96.0.20_80"))
    loud_out = manager(cached_listener(cache, loud, "10.96.0.20_80"))
    assert "requests_total" not in counters(quiet_out) and not files(quiet_out)
    assert "requests_total" in counters(loud_out) and files(loud_out)
    inbound = cached_listener(cache, quiet, "virtualInbound")
    [quiet_in] = [chain["filters"][-1]["typed_config"] for chain in inbound["filter_chains"]
                  if chain["name"] == "inbound|8080||-mtls"]  # fmt: skip
    assert "requests_total" in counters(quiet_in)  # the server side keeps it
    assert files(quiet_in)


def test_proxies_share_listeners_exactly_when_their_client_plans_agree() -> None:
    objects = snapshot(CLIENT_ONLY)
    cache = ResourceCache(objects)
    quiet, loud = proxy("quiet-0", "10.0.0.7", "quiet"), proxy("loud-0", "10.0.0.8", "loud")
    twin = proxy("loud-1", "10.0.0.9", "loud")
    listeners = {p.pod_name: cache.resources_for(p)[gen.TYPE_LISTENER] for p in
                 (quiet, loud, twin)}  # fmt: skip
    assert listeners["loud-0"].base is listeners["loud-1"].base  # same plan: same objects
    assert listeners["quiet-0"].base is not listeners["loud-0"].base
    name = "10.96.0.20_80"
    assert (listeners["quiet-0"].resources[name].body
            != listeners["loud-0"].resources[name].body)  # fmt: skip
    # clusters and endpoints do not depend on the plan
    assert (
        cache.resources_for(quiet)[gen.TYPE_ENDPOINT]
        is cache.resources_for(loud)[gen.TYPE_ENDPOINT]
    )
    for who in (quiet, loud):  # the cache agrees with the reference assembly
        direct = {m.name: as_dict(m) for m in gen.generate(objects, who).listeners}
        cached = {
            n: as_dict(listener_pb2.Listener.FromString(r.body))
            for n, r in cache.resources_for(who)[gen.TYPE_LISTENER].resources.items()
        }
        assert cached == direct


def test_wildcard_listeners_carry_the_client_logs_and_tracing_but_no_peer_headers() -> None:
    external = Service("demo", "api.example.com", None, (ServicePort(80, "http", "HTTP"),),
                       host="api.example.com")  # fmt: skip
    plan = telemetry_policy(snapshot(), "demo", {"app": "web"}).client
    hosts = [(external, "", False)]
    plain = as_dict(wildcard_listeners.wildcard_listener(80, hosts, registry_only=False))
    assert not files(manager(plain)) and "tracing" not in manager(plain)
    logged = manager(as_dict(wildcard_listeners.wildcard_listener(
        80, hosts, registry_only=False, telemetry=plan)))  # fmt: skip
    assert files(logged) and logged["tracing"]["random_sampling"]["value"] == 1.0
    assert not counters(logged)
    assert "request_headers_to_add" not in logged["route_config"]


def test_tcp_series_name_the_destination_workload_from_the_endpoint() -> None:
    cache = ResourceCache(snapshot(mesh=MeshConfig()))
    assignments = cache.resources_for(proxy("a", "10.0.0.9", "a"))[gen.TYPE_ENDPOINT]

    def metadata(name: str) -> dict[str, Any]:
        found = as_dict(endpoint_pb2.ClusterLoadAssignment.FromString(
            assignments.resources[name].body))  # fmt: skip
        return dict(found["endpoints"][0]["lb_endpoints"][0]["metadata"]["filter_metadata"])

    tcp = metadata(f"outbound|9000||{WEB.hostname}")
    assert tcp[peer.METADATA_NAMESPACE] == {
        "workload": "web-v1", "namespace": "demo", "app": "web", "version": "v1",
        "canonical_service": "web", "canonical_revision": "v1",
    }  # fmt: skip
    # HTTP series learn the workload from the response: those endpoints' bytes are as before
    assert peer.METADATA_NAMESPACE not in metadata(f"outbound|80||{WEB.hostname}")
    plaintext = outbound.load_assignment_dict("tcp", [(WEB_TCP, False)], workload_labels=True)
    assert "metadata" not in plaintext["endpoints"][0]["lb_endpoints"][0]  # no mTLS: unknown
    tcp = as_dict(outbound.service_listener(WEB, 9000))
    logger = tcp["filter_chains"][0]["filters"][0]["typed_config"]["access_log"][0]
    tags = {t["name"]: t["value_format"]
            for t in logger["typed_config"]["counters"][0]["stat"]["tags"]}  # fmt: skip
    assert tags["destination_workload"] == "%METADATA(UPSTREAM_HOST:sidemesh.peer:workload)%"
    assert tags["destination_app"] == "%METADATA(UPSTREAM_HOST:sidemesh.peer:app)%"


def test_an_endpoint_names_its_deployment_as_the_injector_does() -> None:
    """The registry's workload is the pod's controller's (a Deployment through its ReplicaSet),
    as the sidecar's own `WORKLOAD_NAME` is, so both sides of a series agree."""
    pod = {"metadata": {"name": "web-7d9f8-abcde", "namespace": "demo",
                        "labels": {"app": "web", "pod-template-hash": "7d9f8"},
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8",
                                             "apiVersion": "apps/v1", "controller": True}]},
           "spec": {"containers": [{"name": "app", "ports": [{"name": "http",
                                                               "containerPort": 8080}]}]},
           "status": {"podIP": "10.0.0.5"}}  # fmt: skip
    service = Service("demo", "web", "10.96.0.20", (ServicePort(80, "http", "HTTP", 8080),))
    [endpoint] = convert.selected_endpoints(service, {"app": "web"}, [pod], [])
    assert endpoint.workload_name == "web"
