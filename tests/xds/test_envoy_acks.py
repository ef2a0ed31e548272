"""A real Envoy accepts (ACKs) everything the generator makes, over SotW and Delta ADS."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest
from xds_testkit import (
    Envoy,
    SdsServer,
    bootstrap,
    eventually,
    free_port,
    workload_certificate,
)

from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.model import (
    Endpoint,
    MeshSnapshot,
    PeerAuthentication,
    Service,
    ServicePort,
)
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

NODE = "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local"


def mixed_snapshot(version: int = 1) -> MeshSnapshot:
    web = Service(
        "demo",
        "web",
        "10.96.0.10",
        (ServicePort(80, "http", "HTTP", 8080), ServicePort(9090, "grpc-api", "GRPC", 9090)),
    )
    db = Service("data", "db", "10.96.0.11", (ServicePort(5432, "tcp-pg", "TCP", 5432),))
    legacy = Service("legacy", "old", "10.96.0.12", (ServicePort(80, "http", "HTTP", 80),))
    endpoints = {
        web.hostname: (
            Endpoint("10.0.0.5", 8080, 80, True, "web", "demo", "web-abc", True, (("app", "web"),)),
            Endpoint("10.0.0.5", 9090, 9090, True, "web", "demo", "web-abc", True),
            Endpoint("10.0.0.7", 8080, 80, False, "web", "demo", "web-def", True),
        ),
        db.hostname: (Endpoint("10.0.0.6", 5432, 5432, True, "db", "data", "db-0", True),),
        legacy.hostname: (Endpoint("10.0.0.9", 80, 80, True, "default", "legacy", "old", False),),
    }
    policies = (
        PeerAuthentication("data", "default", "STRICT"),
        PeerAuthentication("demo", "default", "PERMISSIVE"),
        PeerAuthentication("demo", "web-grpc", None, (("app", "web"),), ((9090, "STRICT"),)),
    )
    return MeshSnapshot(version, (web, db, legacy), endpoints, policies)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.self_signed(
        trust_domain="cluster.local", now=datetime.datetime.now(datetime.UTC)
    )


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlaneServer]:
    server = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=0, tls_port=None,
                                  monitoring_port=0, instance_id="cp-test"),
        snapshot=mixed_snapshot(),
    )  # fmt: skip
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_acks_listeners_clusters_and_endpoints(
    control_plane: ControlPlaneServer, ca: CertificateAuthority, delta: bool
) -> None:
    chain, key = workload_certificate(ca, SpiffeId("cluster.local", "demo", "web"))
    sds = SdsServer(chain, key, ca.root_pem().encode())
    await sds.server.start()
    admin = free_port()
    metadata = {
        "NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"},
        "ISTIO_VERSION": "1.28.0", "REVISION": "canary",
        "SIDEMESH_OUTBOUND_BIND": f"127.0.0.1:{free_port()}",
        "SIDEMESH_INBOUND_BIND": f"127.0.0.1:{free_port()}",
    }  # fmt: skip
    envoy = Envoy(bootstrap(node_id=NODE, metadata=metadata, xds_port=control_plane.ports["xds"],
                            sds_port=sds.port, admin_port=admin, delta=delta), admin)  # fmt: skip
    envoy.start()
    try:

        def synced() -> bool:
            rows = control_plane.ads.status()
            if len(rows) != 1:
                return False
            types = rows[0]["types"]
            return all(types.get(t, {}).get("status") == "SYNCED" for t in ("cds", "eds", "lds"))

        await eventually(synced, timeout=30)
        row = control_plane.ads.status()[0]
        assert row["revision"] == "canary"
        assert row["protocol"] == ("delta" if delta else "sotw")
        assert all(t["error"] is None for t in row["types"].values())
        assert control_plane.xds_metrics.nacks == {}
        # Envoy really runs them: the two virtual listeners and one per service VIP:port are
        # active, clusters warmed with their endpoints.
        await eventually(lambda: envoy.stat_is("listener_manager.total_listeners_active", 6))
        listeners = await envoy.admin_async("/listeners")
        for name in ("virtualOutbound", "virtualInbound", "10.96.0.10_80", "10.96.0.10_9090",
                     "10.96.0.11_5432", "10.96.0.12_80"):  # fmt: skip
            assert name in listeners
        await eventually(lambda: envoy.stat_is("cluster_manager.warming_clusters", 0))
        clusters = await envoy.admin_async("/clusters")
        assert "outbound|5432||db.data.svc.cluster.local::10.0.0.6:5432" in clusters
        assert "inbound|8080||::127.0.0.1:8080" in clusters
        # A change is pushed and ACKed again.
        snapshot = mixed_snapshot(2)
        web = snapshot.services[0]
        extra = Endpoint("10.0.0.8", 8080, 80, True, "web", "demo", "web-ghi", True)
        endpoints = dict(snapshot.endpoints)
        endpoints[web.hostname] = (*endpoints[web.hostname], extra)
        control_plane.set_snapshot(MeshSnapshot(2, snapshot.services, endpoints,
                                                snapshot.peer_authentications))  # fmt: skip

        async def has_new_endpoint() -> bool:
            return "10.0.0.8:8080" in await envoy.admin_async("/clusters")

        await eventually(has_new_endpoint)
        await eventually(synced)
        assert control_plane.xds_metrics.nacks == {}
        metrics = control_plane.render_metrics()
        assert "pilot_xds 1" in metrics and 'pilot_xds_pushes{type="eds"}' in metrics
    finally:
        envoy.stop()
        await sds.server.stop(None)
    assert "error" not in envoy.logs().lower() or "NACK" not in envoy.logs(), envoy.logs()
