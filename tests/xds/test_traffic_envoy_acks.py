"""A real Envoy accepts (ACKs) every route and cluster field VirtualService and
DestinationRule produce: matches, weights, retries, timeouts, faults, header operations,
redirects, direct responses, rewrites; subsets, load balancing, connection pools, outlier
detection."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_envoy_acks import NODE, ca, mixed_snapshot  # noqa: F401  (ca: the fixture)
from xds_testkit import Envoy, SdsServer, bootstrap, eventually, free_port, workload_certificate

from sidemesh.api import networking
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

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
    server = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=0, tls_port=None,
                                  monitoring_port=0, instance_id="cp-test"),
        snapshot=traffic_snapshot(),
    )  # fmt: skip
    await server.start()
    chain, key = workload_certificate(ca, SpiffeId("cluster.local", "demo", "web"))
    sds = SdsServer(chain, key, ca.root_pem().encode())
    await sds.server.start()
    admin = free_port()
    metadata = {
        "NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"},
        "SIDEMESH_OUTBOUND_BIND": f"127.0.0.1:{free_port()}",
        "SIDEMESH_INBOUND_BIND": f"127.0.0.1:{free_port()}",
    }  # fmt: skip
    envoy = Envoy(bootstrap(node_id=NODE, metadata=metadata, xds_port=server.ports["xds"],
                            sds_port=sds.port, admin_port=admin, delta=True), admin)  # fmt: skip
    envoy.start()
    try:

        def synced() -> bool:
            rows = server.ads.status()
            types = rows[0]["types"] if len(rows) == 1 else {}
            return all(types.get(t, {}).get("status") == "SYNCED" for t in ("cds", "eds", "lds"))

        await eventually(synced, timeout=30)
        assert server.xds_metrics.nacks == {}, server.ads.status()
        await eventually(lambda: envoy.stat_is("cluster_manager.warming_clusters", 0))
        clusters = await envoy.admin_async("/clusters")
        assert f"outbound|80|v1|{HOST}::10.0.0.5:8080" in clusters
        # no endpoint carries version=v2: the subset's cluster is there, empty
        assert f"outbound|80|v2|{HOST}::observability_name" in clusters
        assert f"outbound|80|v2|{HOST}::10." not in clusters
    finally:
        envoy.stop()
        await sds.server.stop(None)
        await server.stop()
