"""The SDS server over its Unix socket, with a real gRPC client playing Envoy."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from fake_control_plane import TestPki, wait_for
from google.rpc import status_pb2

from sidemesh.agent.certs import WorkloadCertificate, assemble, build_csr, generate_key
from sidemesh.agent.sds import SECRET_TYPE, SdsServer

SPIFFE_ID = "spiffe://cluster.local/ns/shop/sa/web"


def _certificate(pki: TestPki) -> WorkloadCertificate:
    key = generate_key()
    return assemble(pki.sign_csr(build_csr(key, SPIFFE_ID), 60), key, pki.root_pem)


@pytest.fixture
async def sds() -> AsyncIterator[tuple[SdsServer, TestPki]]:
    directory = Path(tempfile.mkdtemp(prefix="smsds-", dir="/tmp"))
    pki = TestPki()
    server = SdsServer(directory / "SDS", _certificate(pki))
    await server.start()
    try:
        yield server, pki
    finally:
        await server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _request(names: list[str], nonce: str = "", version: str = "", error: str = "") -> Any:
    request = discovery_pb2.DiscoveryRequest(
        resource_names=names, type_url=SECRET_TYPE, response_nonce=nonce, version_info=version
    )
    if error:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def _secrets(response: Any) -> dict[str, Any]:
    secrets = {}
    for resource in response.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        secrets[secret.name] = secret
    return secrets


async def test_stream_serves_and_pushes_rotations(sds: tuple[SdsServer, TestPki]) -> None:
    server, pki = sds
    async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
        stream = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets()
        await stream.write(_request(["default"]))
        first = await stream.read()
        assert first.type_url == SECRET_TYPE
        secret = _secrets(first)["default"]
        assert b"BEGIN CERTIFICATE" in secret.tls_certificate.certificate_chain.inline_bytes
        assert b"PRIVATE KEY" in secret.tls_certificate.private_key.inline_bytes
        # An ACK gets no answer; a rotation pushes a new version at once.
        await stream.write(_request(["default"], first.nonce, first.version_info))
        rotated = _certificate(pki)
        server.publish(rotated)
        second = await stream.read()
        assert second.version_info != first.version_info
        chain = _secrets(second)["default"].tls_certificate.certificate_chain.inline_bytes
        assert chain == rotated.chain_pem
        await stream.done_writing()


async def test_root_ca_and_unknown_names(sds: tuple[SdsServer, TestPki]) -> None:
    server, pki = sds
    async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
        stream = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets()
        await stream.write(_request(["ROOTCA", "file-cert:/nope"]))
        response = await stream.read()
        secrets = _secrets(response)
        assert list(secrets) == ["ROOTCA"]
        assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == pki.root_pem


async def test_nack_is_logged_with_envoys_reason(
    sds: tuple[SdsServer, TestPki], caplog: pytest.LogCaptureFixture
) -> None:
    server, pki = sds
    async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
        stream = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets()
        await stream.write(_request(["default"]))
        first = await stream.read()
        with caplog.at_level(logging.ERROR, logger="sidemesh.agent.sds"):
            await stream.write(_request(["default"], first.nonce, "", "bad key type"))

            def logged() -> bool:
                return any("bad key type" in r.getMessage() for r in caplog.records)

            assert await wait_for(logged, timeout=5)
        # A NACK is not answered with the same version again; the next version still goes out.
        server.publish(_certificate(pki))
        second = await stream.read()
        assert second.version_info != first.version_info


async def test_fetch_secrets(sds: tuple[SdsServer, TestPki]) -> None:
    server, _ = sds
    async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        response = await stub.FetchSecrets(_request(["default", "ROOTCA"]))
    assert set(_secrets(response)) == {"default", "ROOTCA"}


async def test_stale_socket_is_replaced_and_removed_on_stop() -> None:
    directory = Path(tempfile.mkdtemp(prefix="smsds-", dir="/tmp"))
    try:
        path = directory / "SDS"
        path.write_text("left over")
        server = SdsServer(path, _certificate(TestPki()))
        await server.start()
        assert path.is_socket()
        await server.stop()
        assert not path.exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
