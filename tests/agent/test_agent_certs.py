"""The workload key, its CSR, and checking the CA's answer."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fake_control_plane import TestPki

from sidemesh.agent.certs import (
    CertificateError,
    WorkloadCertificate,
    assemble,
    build_csr,
    generate_key,
)

SPIFFE_ID = "spiffe://cluster.local/ns/shop/sa/web"


def test_csr_names_the_spiffe_identity_with_a_p256_key() -> None:
    key = generate_key()
    csr = x509.load_pem_x509_csr(build_csr(key, SPIFFE_ID))
    assert csr.is_signature_valid
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert extension.critical  # the subject is empty, so the SAN must be critical
    assert extension.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_ID]
    assert extension.value.get_values_for_type(x509.DNSName) == []
    assert len(csr.subject) == 0


def test_a_signed_chain_is_assembled() -> None:
    pki = TestPki()
    key = generate_key()
    chain = pki.sign_csr(build_csr(key, SPIFFE_ID), 60)
    certificate = assemble(chain, key, pki.root_pem)
    assert certificate.uris == (SPIFFE_ID,)
    assert 59 <= certificate.not_after - certificate.not_before <= 62
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert certificate.serial == leaf.serial_number
    # The trailing self-signed root is not served as part of the chain.
    assert x509.load_pem_x509_certificates(certificate.chain_pem) == [leaf]
    assert b"PRIVATE KEY" in certificate.key_pem
    assert "PRIVATE" not in repr(certificate)
    assert certificate.renew_at(0.5) == pytest.approx(
        certificate.not_before + (certificate.not_after - certificate.not_before) / 2
    )


def test_a_certificate_for_another_key_is_refused() -> None:
    pki = TestPki()
    chain = pki.sign_csr(build_csr(generate_key(), SPIFFE_ID), 60)
    with pytest.raises(CertificateError, match="different key"):
        assemble(chain, generate_key(), pki.root_pem)


@pytest.mark.parametrize(("chain", "message"), [([], "empty"), (["garbage"], "not PEM")])
def test_malformed_answers_are_refused(chain: list[str], message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        assemble(chain, generate_key(), b"")


def test_renewal_counts_from_arrival_not_from_a_backdated_not_before() -> None:
    # CAs backdate notBefore (ours by a minute): a 10 s certificate that arrived at t=1000
    # is renewed at t=1005 with fraction 0.5, not "35 s ago" (which renewed in a tight loop).
    certificate = WorkloadCertificate(
        chain_pem=b"", key_pem=b"", root_pem=b"", serial=1, not_before=940.0, not_after=1010.0
    )
    assert certificate.renew_at(0.5, received_at=1000.0) == pytest.approx(1005.0)
    assert certificate.renew_at(0.5, received_at=900.0) == pytest.approx(975.0)
