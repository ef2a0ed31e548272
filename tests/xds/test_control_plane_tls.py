"""ControlPlaneServer: CSR and ADS over TLS on one port, the serving cert from the mesh CA for
istiod's DNS names, and the monitoring endpoint."""

from __future__ import annotations

import asyncio
import datetime
import urllib.request
from pathlib import Path

import grpc
from cryptography import x509
from envoy.service.discovery.v3 import discovery_pb2
from grpc import aio
from test_envoy_acks import mixed_snapshot
from xds_testkit import csr_for

from sidemesh.security import protocol
from sidemesh.security.authn import LocalTokenAuthenticator, issue_local_token
from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds import generate as gen
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer


async def test_csr_and_ads_share_the_tls_port(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca = CertificateAuthority.self_signed(trust_domain="cluster.local", now=now)
    tokens = tmp_path / "tokens.json"
    token = issue_local_token(tokens, namespace="demo", service_account="web")
    server = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=None, tls_port=0,
                                  monitoring_port=0, revision="canary", instance_id="cp-tls"),
        snapshot=mixed_snapshot(), ca=ca, authenticator=LocalTokenAuthenticator(tokens),
    )  # fmt: skip
    await server.start()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.root_pem().encode())
    channel = aio.secure_channel(
        f"127.0.0.1:{server.ports['xds-tls']}", credentials,
        options=[("grpc.ssl_target_name_override", "istiod-canary.istio-system.svc")],
    )  # fmt: skip
    try:
        create = channel.unary_unary(
            protocol.METHOD, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protocol.CertificateResponse.FromString,
        )  # fmt: skip
        uri = "spiffe://cluster.local/ns/demo/sa/web"
        response = await create(protocol.CertificateRequest(csr=csr_for(uri)),
                                metadata=[("authorization", f"Bearer {token}")])  # fmt: skip
        leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
        assert leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier) == [uri]  # fmt: skip

        stream = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )(metadata=[("authorization", f"Bearer {token}")])  # fmt: skip
        first = discovery_pb2.DiscoveryRequest(type_url=gen.TYPE_CLUSTER)
        first.node.id = "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local"
        await stream.write(first)
        answer = await asyncio.wait_for(stream.read(), 5)
        assert answer.type_url == gen.TYPE_CLUSTER and len(answer.resources) > 3
        stream.cancel()

        url = f"http://127.0.0.1:{server.ports['monitoring']}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert b"citadel_server_success_cert_issuance_count 1" in text
        assert b"pilot_xds_pushes" in text
    finally:
        await channel.close()
        await server.stop()


def test_serving_names_follow_the_revision() -> None:
    names = ControlPlaneConfig(revision="canary").dns_names()
    assert "istiod-canary.istio-system.svc" in names
    assert ControlPlaneConfig().dns_names()[0] == "istiod"
