"""The standard-metrics, access-log and tracing configuration the generator writes (pure), and
the precedence of MeshConfig and Telemetry resources for one workload."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from sidemesh.api import telemetry
from sidemesh.api.config import MeshConfig
from sidemesh.api.telemetry.mesh import DEFAULT_JSON_FORMAT, mesh_access_log, mesh_telemetry
from sidemesh.xds import inbound, outbound
from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, ServicePort
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.telemetry_policy import telemetry_policy

WEB = Service("demo", "web", "10.96.0.20", (ServicePort(80, "http", "HTTP", 8080),
                                             ServicePort(9000, "tcp", "TCP", 9090)))  # fmt: skip
ZIPKIN = Service("istio-system", "zipkin", "10.96.0.50", (ServicePort(9411, "http", "HTTP"),))
MESH = MeshConfig.model_validate({
    "accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON",
    "extensionProviders": [{"name": "zipkin", "zipkin": {
        "service": "zipkin.istio-system.svc.cluster.local", "port": 9411}}],
    "defaultProviders": {"tracing": ["zipkin"]},
})  # fmt: skip


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def manager(listener: dict[str, Any], chain: int = 0) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][chain]["filters"][-1]["typed_config"]
    return config


def stats_tags(config: dict[str, Any]) -> dict[str, str]:
    logger = next(log for log in config["access_log"] if log["name"].endswith(".stats"))
    counter = logger["typed_config"]["counters"][0]
    return {tag["name"]: tag["value_format"] for tag in counter["stat"]["tags"]}


def test_outbound_http_counts_as_source_and_exchanges_peer_metadata() -> None:
    config = manager(as_dict(outbound.service_listener(WEB, 80)))
    tags = stats_tags(config)
    assert tags["reporter"] == "source"
    assert tags["source_workload"] == "%ENVIRONMENT(SIDEMESH_PEER_WORKLOAD)%"
    assert tags["destination_workload"] == "%METADATA(DYNAMIC:sidemesh.peer:workload)%"
    assert tags["destination_principal"] == "%UPSTREAM_PEER_URI_SAN%"
    assert tags["destination_service"] == "%METADATA(CLUSTER:sidemesh:service)%"
    assert list(tags)[:3] == ["reporter", "source_workload", "source_workload_namespace"]
    sent = {h["header"]["key"]: h["append_action"]
            for h in config["route_config"]["request_headers_to_add"]}  # fmt: skip
    assert set(sent.values()) == {"OVERWRITE_IF_EXISTS_OR_ADD"}  # an app cannot forge them
    assert "x-sidemesh-peer-workload" in sent
    first = config["http_filters"][0]
    assert first["name"] == "envoy.filters.http.header_to_metadata"
    assert all(rule["remove"] for rule in first["typed_config"]["response_rules"])


def test_outbound_tcp_counts_connections_and_bytes() -> None:
    proxy = as_dict(outbound.service_listener(WEB, 9000))["filter_chains"][0]["filters"][0]
    config = proxy["typed_config"]
    assert config["access_log_options"] == {"flush_access_log_on_connected": True}
    names = [c["stat"]["name"] for log in config["access_log"]
             for c in log["typed_config"]["counters"]]  # fmt: skip
    assert names == ["tcp_connections_opened_total", "tcp_sent_bytes_total",
                     "tcp_received_bytes_total", "tcp_connections_closed_total"]  # fmt: skip


def snapshot(*telemetries: dict[str, Any], mesh: MeshConfig = MESH) -> MeshSnapshot:
    endpoint = Endpoint("10.0.0.5", 8080, 80, namespace="demo", has_sidecar=True,
                        labels=(("app", "web"),))  # fmt: skip
    return MeshSnapshot(
        version=1, services=(WEB, ZIPKIN), endpoints={WEB.hostname: (endpoint,)},
        telemetries=tuple(telemetry.validate(t) for t in telemetries),
        mesh_telemetry=mesh_telemetry(mesh),
    )  # fmt: skip


def web_proxy() -> ProxyInfo:
    return ProxyInfo(node_id="sidecar~10.0.0.5~web-0.demo~demo.svc.cluster.local",
                     ip="10.0.0.5", pod_name="web-0", namespace="demo",
                     labels=(("app", "web"),))  # fmt: skip


def test_inbound_chains_trust_peer_headers_over_mtls_only() -> None:
    shape = inbound.proxy_shape(snapshot(), web_proxy())
    listener = as_dict(inbound.inbound_listener(shape, "cluster.local"))
    chains = {c["name"]: c for c in listener["filter_chains"]}
    mtls = manager({"filter_chains": [chains["inbound|8080||-mtls"]]})
    plaintext = manager({"filter_chains": [chains["inbound|8080||-plaintext"]]})
    assert stats_tags(mtls)["connection_security_policy"] == "mutual_tls"
    assert stats_tags(mtls)["source_workload"] == "%METADATA(DYNAMIC:sidemesh.peer:workload)%"
    assert stats_tags(mtls)["destination_service"] == WEB.hostname
    assert "response_headers_to_add" in mtls["route_config"]
    assert stats_tags(plaintext)["connection_security_policy"] == "none"
    assert stats_tags(plaintext)["source_workload"] == "unknown"
    assert "x-sidemesh-peer-workload" in plaintext["route_config"]["request_headers_to_remove"]
    assert "response_headers_to_add" not in plaintext["route_config"]  # nothing told strangers
    # MeshConfig: JSON access logs to stdout, tracing to its default provider
    files = [log for log in mtls["access_log"] if log["name"].endswith(".file")]
    assert files[0]["typed_config"]["log_format"]["json_format"] == dict(DEFAULT_JSON_FORMAT)
    assert mtls["tracing"]["provider"]["name"] == "envoy.tracers.zipkin"
    assert mtls["tracing"]["random_sampling"]["value"] == 1.0


def telemetry_object(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


MESH_WIDE = telemetry_object("istio-system", "mesh", {
    "accessLogging": [{"providers": [{"name": "envoy"}]}],
    "tracing": [{"randomSamplingPercentage": 10}]})  # fmt: skip
NAMESPACE_OFF = telemetry_object("demo", "quiet", {
    "accessLogging": [{"disabled": True}],
    "tracing": [{"disableSpanReporting": True}]})  # fmt: skip
WORKLOAD_ON = telemetry_object("demo", "web", {
    "selector": {"matchLabels": {"app": "web"}},
    "accessLogging": [{"match": {"mode": "SERVER"}, "providers": [{"name": "envoy"}]}],
    "tracing": [{"randomSamplingPercentage": 100}]})  # fmt: skip
OTHER_WORKLOAD = telemetry_object("demo", "other", {
    "selector": {"matchLabels": {"app": "other"}}, "tracing": [{"randomSamplingPercentage": 50}]})
NO_METRICS = telemetry_object("demo", "metrics", {"metrics": [{"overrides": [
    {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": True},
    {"tagOverrides": {"request_protocol": {"operation": "REMOVE"}}}]}]})  # fmt: skip


# (Telemetries, client logs?, server logs?, client sampling, server sampling): workload >
# namespace > mesh > MeshConfig; a selector for another workload changes nothing.
PRECEDENCE = [
    ((), True, True, 1.0, 1.0),
    ((MESH_WIDE,), True, True, 10.0, 10.0),
    ((MESH_WIDE, NAMESPACE_OFF), False, False, None, None),
    ((MESH_WIDE, NAMESPACE_OFF, WORKLOAD_ON), False, True, 100.0, 100.0),
    ((MESH_WIDE, OTHER_WORKLOAD), True, True, 10.0, 10.0),
]  # fmt: skip


@pytest.mark.parametrize(("objects", "client_logs", "server_logs", "client", "server"),
                         PRECEDENCE)  # fmt: skip
def test_precedence(objects: tuple[dict[str, Any], ...], client_logs: bool, server_logs: bool,
                    client: float | None, server: float | None) -> None:  # fmt: skip
    policy = telemetry_policy(snapshot(*objects), "demo", {"app": "web"})
    assert (bool(policy.client.access_logs), bool(policy.server.access_logs)) == (
        client_logs, server_logs
    )
    sampling = [p.tracing.sampling if p.tracing else None for p in (policy.client, policy.server)]
    assert sampling == [client, server]


def test_metric_overrides_disable_and_remove_tags() -> None:
    policy = telemetry_policy(snapshot(NO_METRICS), "demo", {"app": "web"})
    assert policy.client.disabled_metrics == frozenset({"requests_total"})
    assert policy.server.disabled_metrics == frozenset()
    assert ("requests_total", "request_protocol") in policy.server.removed_tags
    shape = inbound.proxy_shape(snapshot(NO_METRICS), web_proxy())
    config = manager(as_dict(inbound.inbound_listener(shape, "cluster.local")))
    assert "request_protocol" not in stats_tags(config)


def test_a_provider_without_its_service_is_left_out_with_the_reason() -> None:
    mesh = MeshConfig.model_validate({"extensionProviders": [{"name": "zipkin", "zipkin": {
        "service": "zipkin.elsewhere.svc.cluster.local", "port": 9411}}],
        "defaultProviders": {"tracing": ["zipkin"]}})  # fmt: skip
    policy = telemetry_policy(snapshot(mesh=mesh), "demo", {"app": "web"})
    assert policy.server.tracing is None
    assert "no service zipkin.elsewhere.svc.cluster.local" in policy.skipped[0]


@pytest.mark.parametrize(("encoding", "log_format", "expected"), [
    ("TEXT", "", "text"), ("TEXT", "%RESPONSE_CODE%", "text"), ("JSON", "", "json"),
    ("JSON", '{"code": "%RESPONSE_CODE%"}', "json"),
])  # fmt: skip
def test_mesh_access_log_formats(encoding: str, log_format: str, expected: str) -> None:
    log = mesh_access_log("/dev/stdout", encoding, log_format)
    assert (log.json is not None, log.text is not None) == (expected == "json", expected == "text")
    if log.text is not None:
        assert log.text.endswith("\n")


def test_a_json_format_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        mesh_access_log("/dev/stdout", "JSON", "[1]")


def test_inbound_tcp_over_mtls_reads_the_clients_workload_from_its_certificate() -> None:
    """Over mTLS: the peer filter first, the labels read its filter state, and the app's
    connection waits for the handshake (so the opened series knows the peer); in plaintext none
    of it: no certificate, `unknown`, connect at once."""
    shape = inbound.proxy_shape(snapshot(), web_proxy())
    listener = as_dict(inbound.inbound_listener(shape, "cluster.local"))
    chains = {c["name"]: c for c in listener["filter_chains"]}
    # the passthrough chains: TCP to any port the services do not declare
    mtls = chains["InboundPassthroughCluster-mtls"]
    plaintext = chains["InboundPassthroughCluster-plaintext"]
    assert [f["name"] for f in mtls["filters"]][-2:] == [
        "envoy.filters.network.set_filter_state", "envoy.filters.network.tcp_proxy"]  # fmt: skip
    peer_filter = mtls["filters"][-2]["typed_config"]
    assert peer_filter["type_url"].endswith("network.set_filter_state.v3.Config")
    keys = [v["object_key"] for v in peer_filter["value"]["on_downstream_tls_handshake"]]
    assert keys == [f"sidemesh.peer.{name}" for name in (
        "workload", "namespace", "app", "version", "canonical_service", "canonical_revision")]
    proxy = mtls["filters"][-1]["typed_config"]
    assert stats_tags(proxy)["source_workload"] == "%FILTER_STATE(sidemesh.peer.workload:PLAIN)%"
    assert proxy["upstream_connect_mode"] == "ON_DOWNSTREAM_TLS_HANDSHAKE"
    assert int(proxy["max_early_data_bytes"]) > 0
    assert [f["name"] for f in plaintext["filters"]] == ["envoy.filters.network.tcp_proxy"]
    proxy = plaintext["filters"][0]["typed_config"]
    assert stats_tags(proxy)["source_workload"] == "unknown"
    assert "upstream_connect_mode" not in proxy
