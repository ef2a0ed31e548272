"""A real Envoy, connected as a gateway (node type `router`), accepts every listener shape
`xds.gateway` writes: plain HTTP with an httpsRedirect virtual host, and HTTPS terminated with
SIMPLE and MUTUAL credentials from Secrets and with ISTIO_MUTUAL (SDS), with TLS parameters;
and it gets no capture listeners."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from envoy_ack_kit import connected_envoy, serving, synced
from test_envoy_acks import ca  # noqa: F401  (the fixture)
from test_gateway_listeners import cluster_objects
from xds_testkit import Envoy, eventually, free_port, workload_certificate

from sidemesh.api.config import MeshConfig
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.server import ControlPlaneServer

ROUTER = "router~127.0.0.1~ingress-0.edge~edge.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def objects(ca: CertificateAuthority, ports: list[int]) -> list[dict[str, Any]]:  # noqa: F811
    chain, key = workload_certificate(ca, SpiffeId("cluster.local", "edge", "ingress"))
    root = ca.root_pem().encode()

    def server(port: int, protocol: str, host: str, **tls: Any) -> dict[str, Any]:
        found = {"port": {"number": port, "name": f"p{port}", "protocol": protocol},
                 "hosts": [host], "bind": "127.0.0.1"}  # fmt: skip
        if tls:
            found["tls"] = tls
        return found

    http, simple, mutual, istio = ports
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "edge"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             server(http, "HTTP", "a.example.com"),
             server(http, "HTTP", "b.example.com", httpsRedirect=True),
             server(simple, "HTTPS", "b.example.com", mode="SIMPLE", credentialName="simple",
                    minProtocolVersion="TLSV1_2", maxProtocolVersion="TLSV1_3",
                    cipherSuites=["ECDHE-ECDSA-AES128-GCM-SHA256"]),
             server(mutual, "HTTPS", "*", mode="MUTUAL", credentialName="mutual",
                    subjectAltNames=["spiffe://cluster.local/ns/edge/sa/client"]),
             server(istio, "HTTPS", "c.example.com", mode="ISTIO_MUTUAL"),
         ]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "routes", "namespace": "edge"},
         "spec": {"hosts": ["a.example.com", "b.example.com", "c.example.com", "*"],
                  "gateways": ["gw"],
                  "http": [{"match": [{"uri": {"prefix": "/old"}}],
                            "redirect": {"uri": "/new"}},
                           {"route": [{"destination": {"host": "web.shop.svc.cluster.local",
                                                       "port": {"number": 80}}}],
                            "retries": {"attempts": 2}, "timeout": "3s"}]}},
        *cluster_objects(),  # the backend web.shop, and a Service in front of a gateway
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "simple", "namespace": "edge"},
         "data": {"tls.crt": _b64(chain), "tls.key": _b64(key)}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": "mutual", "namespace": "edge"},
         "data": {"cert": _b64(chain), "key": _b64(key), "cacert": _b64(root)}},
    ]  # fmt: skip


@asynccontextmanager
async def gateway_envoy(
    authority: CertificateAuthority,
    snapshot: MeshSnapshot,
) -> AsyncIterator[tuple[ControlPlaneServer, Envoy]]:
    """A control plane serving `snapshot` and a real Envoy connected to it as a gateway."""
    metadata = {"NAMESPACE": "edge", "SERVICE_ACCOUNT": "ingress",
                "LABELS": {"istio": "ingressgateway"}}  # fmt: skip
    async with (
        serving(snapshot) as server,
        connected_envoy(authority, server, node=ROUTER, metadata=metadata, delta=True) as envoy,
    ):
        yield server, envoy


async def listener_names(envoy: Envoy) -> list[str]:
    listeners = await envoy.admin_async("/listeners")
    return sorted(line.split("::")[0] for line in listeners.splitlines() if line)


async def test_envoy_acks_every_gateway_listener(ca: CertificateAuthority) -> None:  # noqa: F811
    ports = [free_port() for _ in range(4)]
    errors: list[str] = []
    every = objects(ca, ports)
    snapshot = build_snapshot({object_key(o): o for o in every}, mesh=MeshConfig(), version=1,
                              errors=errors)  # fmt: skip
    assert errors == [] and len(snapshot.credentials) == 2
    async with gateway_envoy(ca, snapshot) as (server, envoy):
        await eventually(lambda: synced(server, "cds", "eds", "lds"), timeout=30)
        assert server.xds_metrics.nacks == {}, server.ads.status()
        await eventually(lambda: envoy.stat_is("listener_manager.total_listeners_active", 4))
        assert await listener_names(envoy) == sorted(f"127.0.0.1_{port}" for port in ports)
        certificates = await envoy.admin_async("/certs")
        assert "spiffe://cluster.local/ns/edge/sa/ingress" in certificates


async def test_a_gateway_no_gateway_selects_is_initialised_and_waits(
    ca: CertificateAuthority,  # noqa: F811
) -> None:
    """Deployed before its Gateway (as often happens): Envoy gets an empty listener set, so
    the agent can call it ready; the Gateway applied later brings the listener."""
    port = free_port()
    gateway = objects(ca, [port, free_port(), free_port(), free_port()])[0]
    gateway["spec"]["servers"] = gateway["spec"]["servers"][:1]  # plain HTTP on `port`
    async with gateway_envoy(ca, build_snapshot({}, mesh=MeshConfig(), version=1)) as (
        server,
        envoy,
    ):
        await eventually(lambda: envoy.stat_is("listener_manager.lds.update_success", 1))
        await eventually(lambda: synced(server, "cds", "lds"))
        assert await listener_names(envoy) == []
        later = build_snapshot({object_key(gateway): gateway}, mesh=MeshConfig(), version=2)
        server.set_snapshot(later)
        await eventually(lambda: envoy.stat_is("listener_manager.total_listeners_active", 1))
        assert await listener_names(envoy) == [f"127.0.0.1_{port}"]
        assert server.xds_metrics.nacks == {}
