"""ADS on :15012 is authenticated: a mesh-CA client certificate or a service-account token, and
the proxy's claimed namespace (and service account) must be the caller's own."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from grpc import aio
from test_envoy_acks import mixed_snapshot
from xds_testkit import Envoy, SdsServer, bootstrap, eventually, free_port, workload_certificate

from sidemesh.security.authn import LocalTokenAuthenticator, issue_local_token
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds import generate as gen
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

SERVER_NAME = "istiod.istio-system.svc"
WEB_NODE = "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local"
DB_NODE = "sidecar~10.0.0.6~db-0.data~data.svc.cluster.local"
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


@dataclass
class Plane:
    server: ControlPlaneServer
    ca: CertificateAuthority
    token: str  # for demo/web

    @property
    def port(self) -> int:
        return self.server.ports["xds-tls"]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.self_signed(
        trust_domain="cluster.local", now=datetime.datetime.now(datetime.UTC)
    )


@pytest.fixture
async def plane(ca: CertificateAuthority, tmp_path: Path) -> AsyncIterator[Plane]:
    tokens = tmp_path / "tokens.yaml"
    token = issue_local_token(tokens, namespace="demo", service_account="web")
    server = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", tls_port=0, monitoring_port=None,
                                  instance_id="cp-authn"),
        snapshot=mixed_snapshot(), ca=ca, authenticator=LocalTokenAuthenticator(tokens),
    )  # fmt: skip
    await server.start()
    yield Plane(server, ca, token)
    await server.stop()


async def first_response(
    plane: Plane,
    *,
    certificate: SpiffeId | None = None,
    issuer: CertificateAuthority | None = None,
    token: str | None = None,
    node_id: str = WEB_NODE,
    namespace: str = "demo",
    service_account: str = "web",
) -> discovery_pb2.DiscoveryResponse | grpc.StatusCode:
    """The first CDS response for a proxy, or the status the stream was refused with."""
    key = chain = None
    if certificate is not None:
        chain, key = workload_certificate(issuer or plane.ca, certificate)
    credentials = grpc.ssl_channel_credentials(plane.ca.root_pem().encode(), key, chain)
    async with aio.secure_channel(
        f"127.0.0.1:{plane.port}", credentials,
        options=[("grpc.ssl_target_name_override", SERVER_NAME)],
    ) as channel:  # fmt: skip
        call = channel.stream_stream(
            ADS, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )(metadata=[("authorization", f"Bearer {token}")] if token else None)  # fmt: skip
        request = discovery_pb2.DiscoveryRequest(type_url=gen.TYPE_CLUSTER)
        request.node.id = node_id
        metadata = struct_pb2.Struct()
        metadata.update({"NAMESPACE": namespace, "SERVICE_ACCOUNT": service_account})
        request.node.metadata.CopyFrom(metadata)
        try:
            await call.write(request)
            response: discovery_pb2.DiscoveryResponse = await asyncio.wait_for(call.read(), 5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        call.cancel()
        return response


WEB = SpiffeId("cluster.local", "demo", "web")


async def test_a_proxy_with_a_mesh_certificate_gets_its_configuration(plane: Plane) -> None:
    response = await first_response(plane, certificate=WEB)
    assert isinstance(response, discovery_pb2.DiscoveryResponse)
    assert response.type_url == gen.TYPE_CLUSTER and len(response.resources) > 3
    [row] = plane.server.ads.status()
    assert row["identity"] == WEB.uri


async def test_a_proxy_with_neither_certificate_nor_token_is_unauthenticated(plane: Plane) -> None:
    assert await first_response(plane) == grpc.StatusCode.UNAUTHENTICATED
    assert plane.server.xds_metrics.refusals == {"UNAUTHENTICATED": 1}
    assert 'sidemesh_xds_streams_refused_total{code="UNAUTHENTICATED"} 1' in (
        plane.server.render_metrics()
    )


@pytest.mark.parametrize(
    ("node_id", "namespace", "service_account"),
    [(DB_NODE, "data", "web"),  # another namespace, everywhere
     (WEB_NODE, "data", "web"),  # metadata says another namespace
     (DB_NODE, "demo", "web"),  # the node id says another namespace
     (WEB_NODE, "demo", "db")],  # another service account
    ids=["namespace", "metadata-namespace", "node-id-namespace", "service-account"],
)  # fmt: skip
async def test_a_certificate_for_one_workload_cannot_ask_as_another(
    plane: Plane, node_id: str, namespace: str, service_account: str
) -> None:
    refused = await first_response(plane, certificate=WEB, node_id=node_id, namespace=namespace,
                                   service_account=service_account)  # fmt: skip
    assert refused == grpc.StatusCode.PERMISSION_DENIED
    assert plane.server.ads.status() == []


async def test_the_refusal_says_why(plane: Plane) -> None:
    credentials = grpc.ssl_channel_credentials(plane.ca.root_pem().encode())
    async with aio.secure_channel(f"127.0.0.1:{plane.port}", credentials,
                                  options=[("grpc.ssl_target_name_override", SERVER_NAME)]
                                  ) as channel:  # fmt: skip
        call = channel.stream_stream(ADS)()
        with pytest.raises(grpc.RpcError) as refused:
            await call.read()
    assert "no client certificate from the mesh CA" in str(refused.value.details())


async def test_a_service_account_token_is_accepted_for_its_own_namespace(plane: Plane) -> None:
    response = await first_response(plane, token=plane.token)
    assert isinstance(response, discovery_pb2.DiscoveryResponse)
    refused = await first_response(plane, token=plane.token, node_id=DB_NODE, namespace="data")
    assert refused == grpc.StatusCode.PERMISSION_DENIED
    unknown = await first_response(plane, token="x" * 43)
    assert unknown == grpc.StatusCode.UNAUTHENTICATED


async def test_a_certificate_from_another_ca_fails_the_handshake(plane: Plane) -> None:
    stranger = CertificateAuthority.self_signed(
        trust_domain="cluster.local", now=datetime.datetime.now(datetime.UTC)
    )
    refused = await first_response(plane, certificate=WEB, issuer=stranger)
    assert refused == grpc.StatusCode.UNAVAILABLE
    assert plane.server.front is not None and plane.server.front.handshake_failures >= 1


def test_plaintext_xds_is_off_unless_asked_for() -> None:
    assert ControlPlaneConfig().plaintext_port is None


@pytest.mark.parametrize("namespace", ["demo", "data"], ids=["own", "foreign"])
async def test_envoy_authenticates_with_its_sds_certificate(plane: Plane, namespace: str) -> None:
    """A real Envoy, its xds-grpc cluster over TLS as the agent's bootstrap configures it."""
    sds = SdsServer(*workload_certificate(plane.ca, SpiffeId("cluster.local", namespace, "web")),
                    plane.ca.root_pem().encode())  # fmt: skip
    await sds.server.start()
    admin = free_port()
    metadata = {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web",
                "SIDEMESH_OUTBOUND_BIND": f"127.0.0.1:{free_port()}",
                "SIDEMESH_INBOUND_BIND": f"127.0.0.1:{free_port()}"}  # fmt: skip
    config = bootstrap(node_id=WEB_NODE, metadata=metadata, xds_port=plane.port,
                       sds_port=sds.port, admin_port=admin,
                       control_plane_name=SERVER_NAME)  # fmt: skip
    envoy = Envoy(config, admin)
    envoy.start()
    try:
        if namespace == "demo":
            await eventually(lambda: envoy.stat_is("listener_manager.total_listeners_active", 6))
            [row] = plane.server.ads.status()
            assert row["identity"] == WEB.uri
        else:
            await eventually(lambda: plane.server.xds_metrics.refusals.get("PERMISSION_DENIED"))
            assert await envoy.stat("listener_manager.total_listeners_active") in (0, -1)
    finally:
        envoy.stop()
        await sds.server.stop(None)
