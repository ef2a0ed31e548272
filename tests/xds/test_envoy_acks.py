"""A real Envoy accepts (ACKs) everything the generator makes, over SotW and Delta ADS."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest
from envoy_ack_kit import NODE as NODE  # re-exported: many tests take the node from here
from envoy_ack_kit import SIDECAR_TYPES, connected_envoy, serving, sidecar_metadata, synced
from xds_testkit import eventually

from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.model import (
    Endpoint,
    MeshSnapshot,
    PeerAuthentication,
    Service,
    ServicePort,
)
from sidemesh.xds.server import ControlPlaneServer


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
    async with serving(mixed_snapshot()) as server:
        yield server


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_acks_listeners_clusters_and_endpoints(
    control_plane: ControlPlaneServer, ca: CertificateAuthority, delta: bool
) -> None:
    metadata = sidecar_metadata(ISTIO_VERSION="1.28.0", REVISION="canary")
    async with connected_envoy(ca, control_plane, metadata=metadata, delta=delta) as envoy:
        await eventually(lambda: synced(control_plane, *SIDECAR_TYPES), timeout=30)
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
        await eventually(lambda: synced(control_plane, *SIDECAR_TYPES))
        assert control_plane.xds_metrics.nacks == {}
        metrics = control_plane.render_metrics()
        assert "pilot_xds 1" in metrics and 'pilot_xds_pushes{type="eds"}' in metrics
    assert "error" not in envoy.logs().lower() or "NACK" not in envoy.logs(), envoy.logs()
