"""The workload key, its CSR and the certificate that comes back (pure crypto, no I/O).

The private key is an EC P-256 key generated in memory for every request; it leaves the
process only inline in SDS responses to Envoy over the local Unix socket, or on disk when
`--output-certs` asks for it. It never appears in logs or reprs.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sidemesh.agent.issuing_protocol import CertificateError, WorkloadCertificate
from sidemesh.security.certificates import generate_key
from sidemesh.security.certificates import key_to_pem as private_key_pem

__all__ = ["CertificateError", "WorkloadCertificate", "build_csr", "generate_key",
           "private_key_pem"]  # fmt: skip


def build_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: str) -> bytes:
    """A PEM CSR for `spiffe_id`: empty subject, so the URI SAN is critical (RFC 5280 §4.2.1.6)."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _timestamp(moment: datetime.datetime) -> float:
    return moment.replace(tzinfo=moment.tzinfo or datetime.UTC).timestamp()


def _public_der(public_key: object) -> bytes:
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return b""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _is_self_signed(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject


def assemble(
    chain: Sequence[str], key: ec.EllipticCurvePrivateKey, root_pem: bytes
) -> WorkloadCertificate:
    """Check the CA's `cert_chain` against our key and package it.

    Istio's CA returns leaf, intermediates, then the root; a trailing self-signed root is left
    out of the served chain (peers have the root already).
    """
    if not chain:
        raise CertificateError("the CA returned an empty certificate chain")
    try:
        certificates = [
            certificate
            for pem in chain
            for certificate in x509.load_pem_x509_certificates(pem.encode())
        ]
    except ValueError as exc:
        raise CertificateError(f"the CA returned a chain that is not PEM: {exc}") from exc
    leaf = certificates[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise CertificateError("the CA signed a certificate for a different key")
    served = certificates
    if len(served) > 1 and _is_self_signed(served[-1]):
        served = served[:-1]
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(names.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return WorkloadCertificate(
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in served),
        key_pem=private_key_pem(key),
        root_pem=root_pem,
        serial=leaf.serial_number,
        not_before=_timestamp(leaf.not_valid_before_utc),
        not_after=_timestamp(leaf.not_valid_after_utc),
        uris=uris,
    )
