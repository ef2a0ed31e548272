"""Asks the control plane's CA to sign a CSR: Istio's `IstioCertificateService/CreateCertificate`
over gRPC with TLS, verified against the mesh root, authenticated by the pod's projected
service-account token in `authorization: Bearer …`.

A fresh channel per request: renewals are rare (hours apart), and a new channel picks up a
rotated mesh root, a re-resolved address and a refreshed token without any cache to invalidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]

from sidemesh.agent import certs, parsing
from sidemesh.agent.issuing_protocol import CaError, WorkloadCertificate
from sidemesh.api.telemetry.peer_certificate import CSR_METADATA_KEY
from sidemesh.security import protocol

__all__ = ["CaClient", "CaError", "channel_options", "read_token"]


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CaError(f"service-account token {path} does not exist") from None
    except OSError as exc:
        raise CaError(f"cannot read service-account token {path}: {exc.strerror}") from None
    if not token:
        raise CaError(f"service-account token {path} is empty")
    return token


def channel_options(address: str, server_name: str) -> list[tuple[str, Any]]:
    """gRPC options making TLS verify `server_name` when it is not the dialled host."""
    host, _ = parsing.split_host_port(address)
    return [] if server_name == host else [("grpc.ssl_target_name_override", server_name)]


@dataclass(frozen=True)
class CaClient:
    address: str
    server_name: str
    token_path: Path
    cluster_id: str
    timeout: float = 10.0
    workload: Mapping[str, str] | None = None  # the workload the certificate's subject names

    async def sign(self, csr_pem: bytes, *, ttl_seconds: int, root_pem: bytes) -> Sequence[str]:
        """The signed chain (PEM strings: leaf, intermediates, root) for `csr_pem`."""
        token = read_token(self.token_path)
        credentials = grpc.ssl_channel_credentials(root_certificates=root_pem)
        options = channel_options(self.address, self.server_name)
        request = protocol.CertificateRequest(
            csr=csr_pem.decode("ascii"), validity_duration=ttl_seconds
        )
        if self.workload is not None:
            request.metadata.update({CSR_METADATA_KEY: dict(self.workload)})
        metadata = (
            (protocol.AUTHORIZATION_HEADER, f"Bearer {token}"),
            (protocol.CLUSTER_ID_HEADER, self.cluster_id),
        )
        async with grpc.aio.secure_channel(self.address, credentials, options=options) as channel:
            create_certificate = channel.unary_unary(
                protocol.METHOD,
                request_serializer=protocol.CertificateRequest.SerializeToString,
                response_deserializer=protocol.CertificateResponse.FromString,
            )
            try:
                response = await create_certificate(
                    request, metadata=metadata, timeout=self.timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise CaError(f"CA at {self.address}: {exc.code().name}: {exc.details()}") from None
        return [str(pem) for pem in response.cert_chain]

    async def issue(
        self, *, spiffe_id: str, ttl_seconds: int, root_pem: bytes
    ) -> WorkloadCertificate:
        """A new key, its CSR signed by the CA, checked against the key (`issuing.Issuer`)."""
        key = certs.generate_key()
        chain = await self.sign(
            certs.build_csr(key, spiffe_id), ttl_seconds=ttl_seconds, root_pem=root_pem
        )
        return certs.assemble(chain, key, root_pem)
