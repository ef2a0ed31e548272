"""Building X.509 certificates and keys: the one place sidemesh drives `cryptography`'s builder.

Pure apart from key generation and random serial numbers: callers pass `now`. Two kinds are
built: self-signed CAs (the mesh root, the webhook CA; a root is renewed by re-issuing it with
the same key) and leaves a CA signs (workload certificates, the control plane's and the
webhook's serving certificates). What differs
between leaves is their `LeafProfile`; every certificate is signed with SHA-256.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 key (why P-256: see `sidemesh.security.ca`)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: SigningKey) -> bytes:
    """Unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(
    *, key_encipherment: bool = False, signs_certificates: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=signs_certificates,
        crl_sign=signs_certificates, encipher_only=False, decipher_only=False,
    )  # fmt: skip


CA_KEY_USAGE: Final = _key_usage(signs_certificates=True)
TLS_KEY_USAGE: Final = _key_usage(key_encipherment=True)


@dataclass(frozen=True)
class LeafProfile:
    """The extensions in which the leaves sidemesh issues differ."""

    extended_key_usage: tuple[x509.ObjectIdentifier, ...]
    key_usage: x509.KeyUsage | None = None
    authority_key_identifier: bool = False


def self_signed_ca(
    key: SigningKey,
    *,
    subject: x509.Name,
    now: datetime.datetime,
    backdate: datetime.timedelta,
    lifetime: datetime.timedelta,
    path_length: int | None,
) -> x509.Certificate:
    """A root valid from `now - backdate` (for peers with slow clocks) to `now + lifetime`."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def reissued_self_signed(
    cert: x509.Certificate,
    key: SigningKey,
    *,
    now: datetime.datetime,
    backdate: datetime.timedelta,
    lifetime: datetime.timedelta,
) -> x509.Certificate:
    """`cert` again, signed by its own `key`, with a new serial number and validity (from
    `now - backdate` to `now + lifetime`) and everything else kept: subject, key and extensions
    (so the subject key identifier too). What the old certificate signed names this one's
    subject as its issuer and verifies under this one's key, so it verifies under either."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + lifetime)
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, hashes.SHA256())


def signed_leaf(
    public_key: CertificatePublicKeyTypes,
    *,
    subject: x509.Name,
    names: Sequence[x509.GeneralName],
    profile: LeafProfile,
    issuer: x509.Certificate,
    issuer_key: SigningKey,
    now: datetime.datetime,
    backdate: datetime.timedelta,
    lifetime: datetime.timedelta,
) -> x509.Certificate:
    """A leaf for `public_key` naming `names`, valid from `now - backdate` to `now + lifetime`
    but never past its issuer."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(min(now + lifetime, issuer.not_valid_after_utc))
        # RFC 5280 4.2.1.6: with an empty subject the identity is the SAN, which must be critical.
        .add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if profile.key_usage is not None:
        builder = builder.add_extension(profile.key_usage, critical=True)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage(profile.extended_key_usage), critical=False
    )
    if profile.authority_key_identifier:
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(authority, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())
