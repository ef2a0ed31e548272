"""Client-side telemetry on gateways (#13): as Istio's gateways do, every HTTP connection
manager and TCP proxy of a gateway counts `reporter="source"` series naming the gateway as the
source workload, and writes the access logs and trace spans its Telemetry/meshConfig ask for.
Generated, then seen from a real Envoy gateway: an access log line and the
`istio_requests_total{reporter="source",source_workload=<gateway>}` series."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from gateway_tcp_kit import DATABASE, backend_objects, checked_snapshot, gateway_serving, routes, to
from google.protobuf import json_format
from test_envoy_acks import ca  # noqa: F401  (the fixture)
from test_gateway_envoy_acks import gateway_envoy
from test_gateway_listeners import cluster_objects, gateway, server, to_backend, virtual_service
from xds_testkit import eventually, free_port

from sidemesh.api.config import MeshConfig
from sidemesh.api.telemetry import peer
from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.gateway import gateway_listeners
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import parse_node
from sidemesh.xds.resource_names import TYPE_LISTENER

GATEWAY_IP = "10.0.0.20"  # test_gateway_listeners' gateway pod
GATEWAY = parse_node(f"router~{GATEWAY_IP}~ingress-0.edge~edge.svc.cluster.local",
                     {"LABELS": {"istio": "ingressgateway", "app": "ingress"}})  # fmt: skip
OTEL = {"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "otel", "namespace": "istio-system"},
        "spec": {"clusterIP": "10.96.0.51",
                 "ports": [{"name": "grpc", "port": 4317, "protocol": "TCP"}]}}  # fmt: skip
IO_TIMEOUT = 10.0


def _mesh(log: str, *, tracing: bool = False) -> MeshConfig:
    config: dict[str, Any] = {"accessLogFile": log, "accessLogEncoding": "JSON"}
    if tracing:
        config["extensionProviders"] = [{"name": "otel", "opentelemetry": {
            "service": "otel.istio-system.svc.cluster.local", "port": 4317}}]  # fmt: skip
        config["defaultProviders"] = {"tracing": ["otel"]}
    return MeshConfig.model_validate(config)


def _snapshot(mesh: MeshConfig, *objects: dict[str, Any]) -> MeshSnapshot:
    every = [*cluster_objects(), OTEL, *objects]
    snap = checked_snapshot(every, mesh=mesh)
    return snap


def _listeners(snap: MeshSnapshot) -> dict[str, dict[str, Any]]:
    found = {}
    for listener in gateway_listeners(snap, GATEWAY):
        found[listener.name] = json_format.MessageToDict(listener, preserving_proto_field_name=True)
    served = ResourceCache(snap).resources_for(GATEWAY)[TYPE_LISTENER].resources
    assert sorted(served) == sorted(found)  # the ADS cache serves the same listeners
    return found


def _stats_tags(config: dict[str, Any], counter: str) -> dict[str, str]:
    for log in config.get("access_log", []):
        for entry in log["typed_config"].get("counters", []):
            if entry["stat"]["name"] == counter:
                return {t["name"]: t["value_format"] for t in entry["stat"]["tags"]}
    raise AssertionError(f"no {counter} counter in {config.get('access_log')}")


def _file_paths(config: dict[str, Any]) -> list[str]:
    return [log["typed_config"]["path"] for log in config.get("access_log", [])
            if log["name"] == "envoy.access_loggers.file"]  # fmt: skip


def test_gateway_http_managers_report_as_the_source_with_logs_and_tracing() -> None:
    snap = _snapshot(
        _mesh("/dev/stdout", tracing=True),
        gateway("gw", [server(80, "HTTP", ["*"])]),
        virtual_service("web", ["*"], ["gw"], [to_backend()]),
    )  # fmt: skip
    [chain] = _listeners(snap)["0.0.0.0_8080"]["filter_chains"]
    config = chain["filters"][0]["typed_config"]
    tags = _stats_tags(config, "requests_total")
    assert tags["reporter"] == "source"
    assert tags["source_workload"] == peer.own("workload")  # the gateway's own environment
    assert tags["destination_workload"] == peer.received("workload")  # from the response
    assert _file_paths(config) == ["/dev/stdout"]
    assert config["tracing"]["provider"]["name"] == "envoy.tracers.opentelemetry"
    # The peer headers: overwritten towards the backend (an outside client cannot forge
    # them), read and removed from its responses (an outside client never sees them).
    assert config["http_filters"][0]["name"] == "envoy.filters.http.header_to_metadata"
    sent = {h["header"]["key"] for h in config["route_config"]["request_headers_to_add"]}
    assert {header for _, header, _ in peer.KEYS} <= sent


def test_gateway_tcp_proxies_report_connections_as_the_source() -> None:
    snap = _snapshot(
        _mesh("/dev/stdout"),
        gateway("gw", [server(31400, "TCP", ["*"])]),
        routes("db", ["*"], tcp=[to(DATABASE, 5432)]),
    )  # fmt: skip
    [chain] = _listeners(snap)["0.0.0.0_31400"]["filter_chains"]
    config = chain["filters"][0]["typed_config"]
    assert _stats_tags(config, "tcp_connections_opened_total")["reporter"] == "source"
    assert _file_paths(config) == ["/dev/stdout"]


def test_without_a_plan_gateways_still_count_standard_metrics() -> None:
    snap = _snapshot(MeshConfig(), gateway("gw", [server(80, "HTTP", ["*"])]),
                     virtual_service("web", ["*"], ["gw"], [to_backend()]))  # fmt: skip
    config = _listeners(snap)["0.0.0.0_8080"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert _stats_tags(config, "requests_total")["reporter"] == "source"
    assert _file_paths(config) == [] and "tracing" not in config


# --- a real Envoy gateway -----------------------------------------------------------------------


async def _get(port: int, host: str) -> bytes | None:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())  # fmt: skip
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    try:
        answer = await asyncio.wait_for(exchange(), IO_TIMEOUT)
    except (OSError, TimeoutError):
        return None
    return answer if answer.startswith(b"HTTP/1.1 200") else None


def _series(exposition: str, name: str, **labels: str) -> list[str]:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return [line for line in exposition.splitlines()
            if line.startswith(name + "{") and all(w in line for w in wanted)]  # fmt: skip


async def test_envoy_gateway_writes_access_logs_and_source_metrics(
    ca: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # the request's head; a GET has no body
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    web = await asyncio.start_server(backend, "127.0.0.1", 0)
    web_port = web.sockets[0].getsockname()[1]
    port = free_port()
    log = tmp_path / "access.log"
    # The gateway's own workload, as the agent hands it to Envoy (`peer.envoy_environment`).
    metadata = peer.workload_metadata(workload="ingress", namespace="edge",
                                      labels={"app": "ingress"})  # fmt: skip
    for variable, value in peer.envoy_environment(metadata).items():
        monkeypatch.setenv(variable, value)
    every = [
        *backend_objects("web", web_port, "http"),
        gateway("gw", [{**server(port, "HTTP", ["web.example.com"]), "bind": "127.0.0.1"}]),
        virtual_service("web", ["web.example.com"], ["gw"], [
            {"route": [{"destination": {"host": "web.shop.svc.cluster.local",
                                        "port": {"number": 5432}}}]}]),
    ]  # fmt: skip
    snap = checked_snapshot(every, mesh=_mesh(str(log)))
    try:
        async with gateway_envoy(ca, snap) as (control_plane, envoy):
            await gateway_serving(control_plane, envoy, 1)
            answer = await eventually(lambda: _get(port, "web.example.com"), timeout=30)
            assert answer.endswith(b"ok")

            def logged() -> list[dict[str, Any]]:
                text = log.read_text() if log.exists() else ""
                return [json.loads(line) for line in text.splitlines() if line]

            [entry, *_] = await eventually(logged, timeout=30)  # Envoy flushes each second
            assert entry["path"] == "/hello" and entry["response_code"] == 200
            assert entry["authority"] == "web.example.com"

            async def series() -> list[str]:
                exposition = await envoy.admin_async("/stats/prometheus")
                return _series(exposition, "envoy_istio_requests_total", reporter="source",
                               source_workload="ingress", source_workload_namespace="edge",
                               response_code="200")  # fmt: skip

            [line] = await eventually(series, timeout=30)
            assert 'destination_service="web.shop.svc.cluster.local"' in line
            assert line.rsplit(" ", 1)[1] == "1"
    finally:
        web.close()
        await web.wait_closed()
