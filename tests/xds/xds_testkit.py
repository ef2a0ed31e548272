"""Helpers for xDS tests: a real Envoy process, a tiny SDS server standing in for the agent,
free ports, polling, workload certificates."""

from __future__ import annotations

import asyncio
import datetime
import importlib.resources
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format
from grpc import aio

import async_waits
from kmock_support import fix_kmock_namespaces as fix_kmock_namespaces
from kmock_support import kube_client as kube_client
from sidemesh.security.ca import CertificateAuthority, key_to_pem
from sidemesh.security.identity import SpiffeId

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ENVOY = str(importlib.resources.files("envoy") / "_bin" / "envoy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """`async_waits.eventually` with this kit's defaults (30 s, polled every 0.1 s)."""
    return await async_waits.eventually(check, timeout, every)


def csr_for(uri: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def workload_certificate(ca: CertificateAuthority, identity: SpiffeId) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    chain = ca.sign_csr(csr_for(identity.uri, key), identity=identity, now=now)
    return "".join(chain[:-1]).encode(), key_to_pem(key)


class SdsServer:
    """Serves `default` (the workload cert) and `ROOTCA` like the sidecar agent does."""

    def __init__(self, chain: bytes, key: bytes, root: bytes) -> None:
        default = secret_pb2.Secret(name="default")
        default.tls_certificate.certificate_chain.inline_bytes = chain
        default.tls_certificate.private_key.inline_bytes = key
        rootca = secret_pb2.Secret(name="ROOTCA")
        rootca.validation_context.trusted_ca.inline_bytes = root
        self.secrets = {"default": default, "ROOTCA": rootca}
        self.server = aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "envoy.service.secret.v3.SecretDiscoveryService", {"StreamSecrets": handler}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _stream(self, requests: Any, context: Any) -> None:
        nonce = 0
        async for request in requests:
            if request.response_nonce:
                continue  # ACK/NACK
            nonce += 1
            response = discovery_pb2.DiscoveryResponse(
                version_info="1", type_url=SECRET_TYPE, nonce=str(nonce)
            )
            for name in request.resource_names:
                packed = any_pb2.Any()
                packed.Pack(self.secrets[name])
                response.resources.append(packed)
            await context.write(response)


def bootstrap(
    *,
    node_id: str,
    metadata: dict[str, Any],
    xds_port: int,
    sds_port: int,
    admin_port: int,
    delta: bool = False,
    control_plane_name: str | None = None,
) -> dict[str, Any]:
    """An Envoy bootstrap like the agent's. With `control_plane_name`, xDS goes over TLS: Envoy
    presents its SDS `default` certificate and requires the control plane's to name that host."""

    def grpc_cluster(name: str, port: int) -> dict[str, Any]:
        return {
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]},
        }  # fmt: skip

    ads = {"ads": {}, "resource_api_version": "V3"}
    xds_cluster = grpc_cluster("xds-grpc", xds_port)
    if control_plane_name is not None:

        def secret(name: str) -> dict[str, Any]:
            source = {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
            }
            return {
                "name": name,
                "sds_config": {"resource_api_version": "V3", "api_config_source": source},
            }

        xds_cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext",
            "sni": control_plane_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [secret("default")],
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": control_plane_name}}]},
                    "validation_context_sds_secret_config": secret("ROOTCA"),
                },
            },
        }}  # fmt: skip
    return {
        "node": {"id": node_id, "cluster": "test", "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"clusters": [xds_cluster, grpc_cluster("sds-grpc", sds_port)]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
    }  # fmt: skip


class Envoy:
    def __init__(self, config: dict[str, Any], admin_port: int) -> None:
        self.admin_port = admin_port
        self.directory = Path(tempfile.mkdtemp(prefix="sidemesh-envoy-"))
        (self.directory / "bootstrap.json").write_text(json.dumps(config))
        self.log = self.directory / "envoy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [ENVOY, "-c", str(self.directory / "bootstrap.json"), "--disable-hot-restart",
                 "--concurrency", "1", "-l", "warning"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ},
            )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._final_logs = self.logs()
        shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        if self.log.exists():
            return self.log.read_text(errors="replace")
        return getattr(self, "_final_logs", "")

    def admin(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body.decode()

    async def admin_async(self, path: str) -> str:
        return await asyncio.to_thread(self.admin, path)

    async def stat_is(self, name: str, value: int) -> bool:
        return await self.stat(name) == value

    async def stat(self, name: str) -> int:
        try:
            text = await self.admin_async(f"/stats?filter=^{name}$")
        except OSError:
            return -1
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return -1


def to_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result
