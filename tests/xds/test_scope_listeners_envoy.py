"""A real Envoy of a Sidecar-scoped proxy under REGISTRY_ONLY runs (ACKs, warm) a cluster for the
VirtualService's destination `reviews-v2` but no listener for its address, next to the
listeners of the hosts its egress imports."""

from __future__ import annotations

from envoy_ack_kit import acked, sidecar_metadata
from test_envoy_acks import ca  # noqa: F401  (the fixture)
from test_scope_listeners import snapshot
from test_scoping_vs_destinations import REVIEWS, REVIEWS_V2, hosts, routes_to, sidecar, to
from xds_testkit import Envoy

from sidemesh.security.ca import CertificateAuthority

NODE = "sidecar~10.1.0.1~p-0.shop~shop.svc.cluster.local"


async def test_envoy_runs_the_destinations_cluster_without_a_listener(
    ca: CertificateAuthority,  # noqa: F811
) -> None:
    mesh = snapshot(sidecar(hosts("./*")), routes_to(to(REVIEWS_V2, 9080)), mode="REGISTRY_ONLY")

    async def check(envoy: Envoy) -> None:
        listeners = await envoy.admin_async("/listeners")
        assert "10.96.0.2_9080" in listeners  # reviews: the VirtualService's host
        assert "10.96.0.1_80" in listeners  # productpage: imported by the egress hosts
        assert "10.96.0.3_9080" not in listeners, listeners  # reviews-v2 by address: none
        clusters = await envoy.admin_async("/clusters?format=json")
        assert f'"outbound|9080||{REVIEWS_V2}"' in clusters  # reached through the route
        assert f'"outbound|9080||{REVIEWS}"' in clusters

    metadata = sidecar_metadata(NAMESPACE="shop", SERVICE_ACCOUNT="p", LABELS={"app": "p"})
    await acked(ca, mesh, check, node=NODE, metadata=metadata)
