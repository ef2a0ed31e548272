"""One harness for "a real Envoy accepts (ACKs) this configuration": our control plane serving
a snapshot, an Envoy connected to it over ADS with its certificate from an SDS server, and the
wait until every resource type is SYNCED without a NACK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from xds_testkit import Envoy, SdsServer, bootstrap, eventually, free_port, workload_certificate

from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

NODE = "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local"
SIDECAR_TYPES = ("cds", "eds", "lds")


def sidecar_metadata(**extra: Any) -> dict[str, Any]:
    """A sidecar's node metadata (`web` in `demo`); its capture listeners bind free loopback
    ports, so several Envoys (and the host's own services) never clash."""
    return {
        "NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"},
        "SIDEMESH_OUTBOUND_BIND": f"127.0.0.1:{free_port()}",
        "SIDEMESH_INBOUND_BIND": f"127.0.0.1:{free_port()}",
        **extra,
    }  # fmt: skip


@asynccontextmanager
async def serving(snapshot: MeshSnapshot) -> AsyncIterator[ControlPlaneServer]:
    """Our control plane on loopback (plaintext xDS only), serving `snapshot`."""
    server = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=0, tls_port=None,
                                  monitoring_port=0, instance_id="cp-test"),
        snapshot=snapshot,
    )  # fmt: skip
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def connected_envoy(
    authority: CertificateAuthority,
    server: ControlPlaneServer,
    *,
    node: str = NODE,
    metadata: dict[str, Any] | None = None,
    delta: bool = False,
) -> AsyncIterator[Envoy]:
    """A real Envoy connected to `server` as `node`, holding the certificate of the identity
    its metadata names (namespace and service account), issued by `authority`."""
    metadata = sidecar_metadata() if metadata is None else metadata
    identity = SpiffeId("cluster.local", metadata["NAMESPACE"], metadata["SERVICE_ACCOUNT"])
    chain, key = workload_certificate(authority, identity)
    sds = SdsServer(chain, key, authority.root_pem().encode())
    await sds.server.start()
    admin = free_port()
    envoy = Envoy(bootstrap(node_id=node, metadata=metadata, xds_port=server.ports["xds"],
                            sds_port=sds.port, admin_port=admin, delta=delta), admin)  # fmt: skip
    envoy.start()
    try:
        yield envoy
    finally:
        envoy.stop()
        await sds.server.stop(None)


def synced(server: ControlPlaneServer, *types: str) -> bool:
    """Whether the one connected proxy has ACKed the latest push of every type in `types`."""
    rows = server.ads.status()
    found = rows[0]["types"] if len(rows) == 1 else {}
    return all(found.get(t, {}).get("status") == "SYNCED" for t in types)


async def acked(
    authority: CertificateAuthority,
    snapshot: MeshSnapshot,
    check: Callable[[Envoy], Awaitable[None]],
    *,
    node: str = NODE,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Serve `snapshot` to a real Envoy (Delta ADS), wait until every type is SYNCED without a
    NACK and every cluster warm, then `check` what Envoy runs."""
    async with (
        serving(snapshot) as server,
        connected_envoy(authority, server, node=node, metadata=metadata, delta=True) as envoy,
    ):
        await eventually(lambda: synced(server, *SIDECAR_TYPES), timeout=30)
        assert server.xds_metrics.nacks == {}, server.ads.status()
        await eventually(lambda: envoy.stat_is("cluster_manager.warming_clusters", 0))
        await check(envoy)
