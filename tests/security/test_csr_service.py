"""The CSR gRPC service: authenticate, check identity, sign, count, refuse with reasons."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc import aio
from security_testkit import NOW, make_csr

from sidemesh.api.telemetry.peer import WorkloadMetadata
from sidemesh.api.telemetry.peer_certificate import CSR_METADATA_KEY, claim, subject_unit
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

    async def ask(
        self, csr: str, token: str | None, validity: int = 3600, claim: object = None
    ) -> object:
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        metadata.append(("clusterid", "Kubernetes"))
        request = protocol.CertificateRequest(csr=csr, validity_duration=validity)
        if claim is not None:  # the workload the agent names for the certificate's subject
            request.metadata.update({CSR_METADATA_KEY: claim})
        return await self.call(request, metadata=metadata)


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


# The workload a request claims goes into the leaf's subject, for the server side of TCP
# telemetry (api/telemetry/peer_certificate.py); the URI SAN stays the only identity.
WEB = WorkloadMetadata(
    workload="web-v2", namespace="demo", app="web", version="v2",
    canonical_service="web", canonical_revision="v2",
)  # fmt: skip


def _leaf(response: object) -> x509.Certificate:
    chain = list(response.cert_chain)  # type: ignore[attr-defined]
    return x509.load_pem_x509_certificate(chain[0].encode())


def _only_identity_is_the_callers(leaf: x509.Certificate, harness: Harness) -> None:
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB_URI]
    assert len(list(san)) == 1  # no DNS name, no other URI
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    leaf.verify_directly_issued_by(harness.ca.signing_cert)


async def test_a_claim_for_the_callers_namespace_is_the_subjects_only_unit(
    harness: Harness,
) -> None:
    leaf = _leaf(await harness.ask(make_csr(WEB_URI), harness.web_token, claim=claim(WEB)))
    assert [(a.oid, a.value) for a in leaf.subject] == [
        (NameOID.ORGANIZATIONAL_UNIT_NAME, subject_unit(WEB))
    ]
    assert leaf.subject.rfc4514_string() == f"OU={subject_unit(WEB)}"
    _only_identity_is_the_callers(leaf, harness)
    assert harness.service.metrics.signed == 1


async def test_a_claim_with_a_value_that_is_not_a_label_writes_unknown(harness: Harness) -> None:
    claimed = {**claim(WEB), "version": "v2, OU=admin", "app": 7}
    leaf = _leaf(await harness.ask(make_csr(WEB_URI), harness.web_token, claim=claimed))
    expected = WorkloadMetadata(**{**claim(WEB), "version": "unknown", "app": "unknown"})
    assert leaf.subject.rfc4514_string() == f"OU={subject_unit(expected)}"
    _only_identity_is_the_callers(leaf, harness)


@pytest.mark.parametrize(
    "claimed",
    [
        {**claim(WEB), "namespace": "shop"},
        {k: v for k, v in claim(WEB).items() if k != "namespace"},
        "web-v2",
        ["web-v2", "demo"],
        None,
    ],
    ids=["other-namespace", "no-namespace", "string", "list", "no-claim"],
)
async def test_without_a_claim_for_the_callers_namespace_the_subject_is_empty(
    harness: Harness, claimed: object
) -> None:
    """Telemetry only: a claim that does not hold is left out, the request is still signed."""
    leaf = _leaf(await harness.ask(make_csr(WEB_URI), harness.web_token, claim=claimed))
    assert len(leaf.subject) == 0
    # RFC 5280 4.2.1.6: with an empty subject the SAN is critical.
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    _only_identity_is_the_callers(leaf, harness)
    assert harness.service.metrics.signed == 1
    assert harness.service.metrics.refused == {}


async def test_a_claim_does_not_change_what_is_refused(harness: Harness) -> None:
    other = "spiffe://cluster.local/ns/demo/sa/admin"
    with pytest.raises(aio.AioRpcError) as refused:
        await harness.ask(make_csr(other), harness.web_token, claim=claim(WEB))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert harness.service.metrics.signed == 0
