"""The CSR gRPC service: authenticate, check identity, sign, count, refuse with reasons."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio
from security_testkit import NOW, make_csr

from sidemesh.security import protocol
from sidemesh.security.authn import LocalTokenAuthenticator, issue_local_token
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.server import CertificateService

WEB_URI = "spiffe://cluster.local/ns/demo/sa/web"


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tokens = tmp_path / "tokens.json"
        self.now = NOW
        self.ca = CertificateAuthority.self_signed(trust_domain="cluster.local", now=NOW)
        self.service = CertificateService(
            ca=self.ca,
            authenticator=LocalTokenAuthenticator(self.tokens, clock=lambda: self.now),
            clock=lambda: self.now,
        )
        self.web_token = issue_local_token(
            self.tokens,
            namespace="demo",
            service_account="web",
            expires=NOW + datetime.timedelta(hours=1),
        )
        self.server = aio.server()
        self.server.add_generic_rpc_handlers((self.service.handler(),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.channel = aio.insecure_channel(f"127.0.0.1:{port}")
        self.call = self.channel.unary_unary(
            protocol.METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protocol.CertificateResponse.FromString,
        )

    async def ask(self, csr: str, token: str | None, validity: int = 3600) -> object:
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        metadata.append(("clusterid", "Kubernetes"))
        return await self.call(
            protocol.CertificateRequest(csr=csr, validity_duration=validity), metadata=metadata
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    await h.server.start()
    yield h
    await h.channel.close()
    await h.server.stop(None)


async def test_signs_a_valid_csr_for_the_caller(harness: Harness) -> None:
    response = await harness.ask(make_csr(WEB_URI), harness.web_token)
    chain = list(response.cert_chain)  # type: ignore[attr-defined]
    assert len(chain) == 2
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert leaf.not_valid_after_utc - NOW == datetime.timedelta(hours=1)
    assert harness.service.metrics.signed == 1


async def expect_refusal(
    harness: Harness, csr: str, token: str | None, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await harness.ask(csr, token)
    assert refused.value.code() == code
    assert reason in (refused.value.details() or "")


async def test_refuses_a_csr_for_another_identity(harness: Harness) -> None:
    other = "spiffe://cluster.local/ns/demo/sa/admin"
    await expect_refusal(
        harness,
        make_csr(other),
        harness.web_token,
        grpc.StatusCode.PERMISSION_DENIED,
        f"{other!r} but the caller is {WEB_URI}",
    )
    assert harness.service.metrics.refused == {"identity": 1}


async def test_refuses_a_malformed_csr(harness: Harness) -> None:
    await expect_refusal(
        harness, "not a csr", harness.web_token, grpc.StatusCode.INVALID_ARGUMENT, "invalid CSR"
    )


async def test_refuses_missing_unknown_forged_and_expired_tokens(harness: Harness) -> None:
    csr = make_csr(WEB_URI)
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    await expect_refusal(harness, csr, None, unauthenticated, "no 'authorization")
    await expect_refusal(harness, csr, "x" * 43, unauthenticated, "unknown token")
    forged = harness.web_token[:-1] + ("A" if harness.web_token[-1] != "A" else "B")
    await expect_refusal(harness, csr, forged, unauthenticated, "unknown token")
    harness.now = NOW + datetime.timedelta(hours=2)
    await expect_refusal(harness, csr, harness.web_token, unauthenticated, "token expired")
    assert harness.service.metrics.refused == {"no_token": 1, "authentication": 3}
    assert harness.service.metrics.signed == 0
    assert "citadel_server_csr_count 4" in harness.service.metrics.render()


async def test_a_huge_requested_validity_is_capped_not_an_error(harness: Harness) -> None:
    response = await harness.ask(make_csr(WEB_URI), harness.web_token, validity=2**63 - 1)
    leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())  # type: ignore[attr-defined]
    assert leaf.not_valid_after_utc - NOW == harness.ca.max_ttl


@pytest.mark.parametrize(
    "claimed",
    [
        "spiffe://cluster.local/ns/shop/sa/payments\nINFO signed a certificate for admin",
        "spiffe://cluster.local/ns/x/sa/" + "a" * 200_000,
    ],
    ids=["newline", "200k"],
)
async def test_what_a_csr_claims_is_escaped_and_bounded(
    harness: Harness, claimed: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level("WARNING", logger="sidemesh"),
        pytest.raises(aio.AioRpcError) as refused,
    ):
        await harness.ask(make_csr(claimed), harness.web_token)
    details = refused.value.details() or ""
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "\n" not in details and len(details) < 500
    assert claimed[:40] in details  # still says what was asked for
    logged = [r.getMessage() for r in caplog.records if "CSR refused" in r.getMessage()]
    assert len(logged) == 1
    assert "\n" not in logged[0] and len(logged[0]) < 600
