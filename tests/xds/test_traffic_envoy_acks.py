"""A real Envoy accepts (ACKs) every route and cluster field VirtualService and
DestinationRule produce: matches, weights, retries, timeouts, faults, header operations,
redirects, direct responses, rewrites, mirrors, hash policies, TCP and TLS (SNI) routes;
subsets, load balancing (consistent hash too), connection pools, outlier detection, client TLS;
ServiceEntry clusters (EDS, DNS, original destination) and wildcard listeners under
REGISTRY_ONLY."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy_ack_kit import acked
from test_envoy_acks import ca, mixed_snapshot  # noqa: F401  (ca: the fixture)
from xds_testkit import Envoy

from sidemesh.api import networking
from sidemesh.api.config import MeshConfig
from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot

HOST = "web.demo.svc.cluster.local"


def traffic_snapshot() -> MeshSnapshot:
    def to(subset: str, weight: int) -> dict[str, Any]:
        return {"destination": {"host": "web", "subset": subset}, "weight": weight}

    virtual_service = networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"hosts": ["web"], "http": [
            {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"},
                                                     "x-any": {}},
                                         "method": {"regex": "GET|HEAD"},
                                         "queryParams": {"q": {"prefix": "a"}}}],
             "route": [to("v1", 100)],
             "headers": {"request": {"set": {"x-a": "1"}, "add": {"x-b": "2"},
                                     "remove": ["x-c"]},
                         "response": {"set": {"x-d": "4"}}}},
            {"match": [{"uri": {"prefix": "/moved"}}], "redirect": {"uri": "/new",
                                                                    "redirectCode": 302}},
            {"match": [{"uri": {"exact": "/gone"}}],
             "directResponse": {"status": 410, "body": {"string": "gone"}}},
            {"match": [{"uri": {"regex": "/api/.*"}, "ignoreUriCase": True}],
             "rewrite": {"uri": "/v2/", "authority": "api.internal"}, "route": [to("v1", 100)],
             "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,409"},
             "timeout": "2500ms"},
            {"route": [{**to("v1", 90), "headers": {"request": {"set": {"x-v": "1"}},
                                                    "response": {"remove": ["x-w"]}}},
                       to("v2", 10)],
             "fault": {"delay": {"fixedDelay": "50ms", "percentage": {"value": 0.5}},
                       "abort": {"httpStatus": 503, "percentage": {"value": 1}}}},
        ]},
    })  # fmt: skip
    destination_rule = networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"host": "web", "trafficPolicy": {
            "loadBalancer": {"simple": "LEAST_REQUEST"},
            "connectionPool": {"tcp": {"maxConnections": 10, "connectTimeout": "2s",
                                       "maxConnectionDuration": "1h"},
                               "http": {"http1MaxPendingRequests": 5, "http2MaxRequests": 50,
                                        "maxRequestsPerConnection": 3, "maxRetries": 2,
                                        "idleTimeout": "30s"}},
            "outlierDetection": {"consecutive5xxErrors": 5, "consecutiveGatewayErrors": 2,
                                 "interval": "5s", "baseEjectionTime": "30s",
                                 "maxEjectionPercent": 50, "minHealthPercent": 20},
            "portLevelSettings": [{"port": {"number": 9090},
                                   "loadBalancer": {"simple": "RANDOM"}}],
        }, "subsets": [
            {"name": "v1", "labels": {"app": "web"}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
        ]},
    })  # fmt: skip
    return replace(mixed_snapshot(), virtual_services=(virtual_service,),
                   destination_rules=(destination_rule,))  # fmt: skip


async def test_envoy_acks_every_traffic_field(ca: CertificateAuthority) -> None:  # noqa: F811
    async def check(envoy: Envoy) -> None:
        clusters = await envoy.admin_async("/clusters")
        assert f"outbound|80|v1|{HOST}::10.0.0.5:8080" in clusters
        # no endpoint carries version=v2: the subset's cluster is there, empty
        assert f"outbound|80|v2|{HOST}::observability_name" in clusters
        assert f"outbound|80|v2|{HOST}::10." not in clusters

    await acked(ca, traffic_snapshot(), check)


def entries_and_routing_gaps() -> MeshSnapshot:
    def istio(kind: str, name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "networking.istio.io/v1", "kind": kind,
                "metadata": {"name": name, "namespace": "demo"}, "spec": spec}  # fmt: skip

    http = [{"number": 80, "name": "http", "protocol": "HTTP"}]
    objects = [
        istio("ServiceEntry", "dns", hosts=["api.example.com"], ports=http, resolution="DNS",
              endpoints=[{"address": "127.0.0.1"}]),
        istio("ServiceEntry", "none", hosts=["*.wiki.example"], ports=http, resolution="NONE"),
        istio("ServiceEntry", "sni", hosts=["secure.example.com", "*.cdn.example"],
              ports=[{"number": 8443, "name": "https", "protocol": "HTTPS"}], resolution="NONE"),
        istio("ServiceEntry", "vip", hosts=["db.example.com"], addresses=["192.0.2.10"],
              ports=[{"number": 443, "name": "tls", "protocol": "TLS"}], resolution="STATIC",
              endpoints=[{"address": "192.0.2.11"}]),
        istio("VirtualService", "db", hosts=["db.example.com", "*.db.example.com"], tls=[
            {"match": [{"sniHosts": ["a.db.example.com"]}],
             "route": [{"destination": {"host": "db.example.com"}}]}]),
        istio("VirtualService", "pg", hosts=["db.data.svc.cluster.local"], tcp=[
            {"match": [{"port": 5432}], "route": [
                {"destination": {"host": "db.data.svc.cluster.local"}, "weight": 60},
                {"destination": {"host": "db.example.com", "port": {"number": 443}},
                 "weight": 40}]}]),
        istio("VirtualService", "web", hosts=["web"],
             http=[{"route": [{"destination": {"host": "web", "port": {"number": 80}}}],
                    "mirror": {"host": "api.example.com"},
                    "mirrorPercentage": {"value": 5}}]),
        istio("DestinationRule", "web", host="web", trafficPolicy={
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "s", "ttl": "10s"},
                                                "ringHash": {"minimumRingSize": 1024}}},
            "tls": {"mode": "ISTIO_MUTUAL"}}),
        istio("DestinationRule", "api", host="api.example.com", trafficPolicy={
            "loadBalancer": {"consistentHash": {"useSourceIp": True,
                                                "maglev": {"tableSize": 65537}}},
            "tls": {"mode": "SIMPLE", "sni": "api.example.com"}}),
        istio("DestinationRule", "db", host="db.example.com", trafficPolicy={"tls": {
            "mode": "DISABLE"}}),
    ]  # fmt: skip
    base = mixed_snapshot()
    errors: list[str] = []
    built = build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1,
                           errors=errors)  # fmt: skip
    assert errors == []
    assert len(built.virtual_services) == 3 and len(built.destination_rules) == 3
    services = tuple(sorted((*base.services, *built.services)))
    return replace(base, services=services, endpoints={**base.endpoints, **built.endpoints},
                   virtual_services=built.virtual_services,
                   destination_rules=built.destination_rules,
                   service_entries=built.service_entries,
                   outbound_policy="REGISTRY_ONLY")  # fmt: skip


async def test_envoy_acks_service_entries_and_the_routing_gaps(
    ca: CertificateAuthority,  # noqa: F811
) -> None:
    async def check(envoy: Envoy) -> None:
        listeners = await envoy.admin_async("/listeners")
        for name in ("0.0.0.0_80", "0.0.0.0_8443", "192.0.2.10_443", "10.96.0.11_5432"):
            assert name in listeners, listeners
        clusters = await envoy.admin_async("/clusters")
        assert "outbound|80||api.example.com::127.0.0.1:80" in clusters  # resolved by Envoy

    await acked(ca, entries_and_routing_gaps(), check)
