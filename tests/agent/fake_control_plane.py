"""TEST DOUBLE: a minimal control plane for the agent's tests. Not the real one.

The real control plane (ADS server, CA) is another workstream's code and is never imported
here; this module stands in for it with the least that lets a real Envoy and the real agent
run: one gRPC server over TLS on 127.0.0.1 (like istiod's 15012) serving

* (also without TLS on a second port, like istiod's 15010, for `--xds-plaintext`)
* ADS, State-of-the-World: a fixed CDS (one STATIC cluster) and LDS (one inbound listener that
  answers every HTTP request with a direct 200), version "1", ACKs ignored, NACKs recorded;
* the CA: `istio.v1.auth.IstioCertificateService/CreateCertificate` (the wire protocol from
  `sidemesh.security.protocol`), signing CSRs with a test root made with `cryptography` after
  checking a fixed bearer token; the requested lifetime is honoured, so tests can ask for
  certificates that live four seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

from sidemesh.security import protocol

TOKEN = "test-token-for-the-fake-ca"
CONTROL_PLANE_DNS = "istiod.istio-system.svc"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
UPSTREAM_CLUSTER = "fake-upstream"
INBOUND_LISTENER = "fake-inbound"
LISTENER_REPLY = "hello from the fake control plane"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class TestPki:
    """A test mesh root and what it signs."""

    __test__ = False  # not a pytest test class

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    root: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sidemesh test root")])
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> bytes:
        return _pem(self.root)

    def _leaf(
        self,
        public_key: Any,
        names: list[x509.GeneralName],
        lifetime: datetime.timedelta,
        *,
        critical_names: bool,
    ) -> x509.Certificate:
        start = _now() - datetime.timedelta(seconds=1)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.SubjectAlternativeName(names), critical=critical_names)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def server_credentials(self) -> tuple[bytes, bytes]:
        """(key, cert) PEM for the control plane: DNS istiod.istio-system.svc and IP 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [
            x509.DNSName(CONTROL_PLANE_DNS),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        certificate = self._leaf(
            key.public_key(), names, datetime.timedelta(hours=1), critical_names=False
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, _pem(certificate)

    def sign_csr(self, csr_pem: bytes, lifetime_seconds: int) -> list[str]:
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature is invalid")
        names = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        leaf = self._leaf(
            csr.public_key(),
            names,
            datetime.timedelta(seconds=lifetime_seconds),
            critical_names=True,
        )
        return [_pem(leaf).decode(), self.root_pem.decode()]


def _listener(port: int) -> Any:
    manager = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    document = {
        "name": INBOUND_LISTENER,
        "traffic_direction": "INBOUND",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": f"type.googleapis.com/{manager}",
                            "stat_prefix": "fake_inbound",
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 200,
                                                    "body": {"inline_string": LISTENER_REPLY},
                                                },
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/"
                                        "envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }
    return json_format.ParseDict(document, listener_pb2.Listener())


def _cluster(port: int) -> Any:
    document = {
        "name": UPSTREAM_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": UPSTREAM_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    return json_format.ParseDict(document, cluster_pb2.Cluster())


def _packed(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: FakeControlPlane) -> None:
        self.plane = plane

    async def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        async for request in request_iterator:
            if request.node.id:
                self.plane.nodes.append(request.node)
            if request.HasField("error_detail"):
                self.plane.nacks.append((request.type_url, request.error_detail.message))
                continue
            if request.response_nonce:
                continue  # an ACK
            resources = self.plane.resources.get(request.type_url, [])
            yield discovery_pb2.DiscoveryResponse(
                version_info="1",
                type_url=request.type_url,
                resources=[_packed(resource) for resource in resources],
                nonce=uuid.uuid4().hex,
            )


@dataclass
class FakeControlPlane:
    """ADS + CA on one TLS port of 127.0.0.1. Start with `await plane.start()`."""

    pki: TestPki = field(default_factory=TestPki)
    token: str = TOKEN
    listener_port: int = field(default_factory=free_port)
    upstream_port: int = field(default_factory=free_port)
    fail_next_signings: int = 0  # refuse this many CSRs first (UNAVAILABLE), to test retries
    port: int = 0
    plaintext_port: int = 0  # the same services without TLS (like istiod's 15010)
    nodes: list[Any] = field(default_factory=list)
    nacks: list[tuple[str, str]] = field(default_factory=list)
    issued: list[x509.Certificate] = field(default_factory=list)
    requested_lifetimes: list[int] = field(default_factory=list)
    _server: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def resources(self) -> dict[str, list[Any]]:
        return {
            CLUSTER_TYPE: [_cluster(self.upstream_port)],
            LISTENER_TYPE: [_listener(self.listener_port)],
        }

    def write_root(self, path: Path) -> Path:
        path.write_bytes(self.pki.root_pem)
        return path

    async def _create_certificate(self, request: Any, context: Any) -> Any:
        metadata = dict(context.invocation_metadata())
        if metadata.get(protocol.AUTHORIZATION_HEADER) != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing token")
        if self.fail_next_signings > 0:
            self.fail_next_signings -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the fake CA is told to fail")
        lifetime = int(request.validity_duration) or 3600
        self.requested_lifetimes.append(lifetime)
        try:
            chain = self.pki.sign_csr(request.csr.encode(), lifetime)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self.issued.append(x509.load_pem_x509_certificate(chain[0].encode()))
        return protocol.CertificateResponse(cert_chain=chain)

    async def start(self) -> None:
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(self), server)
        ca = grpc.method_handlers_generic_handler(
            protocol.SERVICE,
            {
                "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                    self._create_certificate,
                    request_deserializer=protocol.CertificateRequest.FromString,
                    response_serializer=protocol.CertificateResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((ca,))
        key_pem, cert_pem = self.pki.server_credentials()
        credentials = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=self.pki.root_pem, require_client_auth=False
        )
        self.port = server.add_secure_port("127.0.0.1:0", credentials)
        self.plaintext_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.2)
            self._server = None


async def wait_for(predicate: Any, *, timeout: float, interval: float = 0.1) -> bool:
    """Poll a sync or async predicate until true or `timeout`; the last result."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result or asyncio.get_running_loop().time() >= deadline:
            return bool(result)
        await asyncio.sleep(interval)
