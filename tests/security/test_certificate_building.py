"""The one certificate builder: what every CA and leaf sidemesh issues carries."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from security_testkit import NOW, make_csr

from sidemesh.security import certificates
from sidemesh.security.ca import CLOCK_SKEW, CertificateAuthority
from sidemesh.security.identity import SpiffeId

WEB = SpiffeId("cluster.local", "demo", "web")
ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test root")])


def _extensions(cert: x509.Certificate) -> list[tuple[str, bool]]:
    return [(e.oid.dotted_string, e.critical) for e in cert.extensions]


def _root(key: certificates.SigningKey, *, path_length: int | None = None) -> x509.Certificate:
    return certificates.self_signed_ca(
        key, subject=ROOT_NAME, now=NOW, backdate=datetime.timedelta(minutes=2),
        lifetime=datetime.timedelta(days=10), path_length=path_length,
    )  # fmt: skip


@pytest.mark.parametrize("path_length", [None, 0])
def test_self_signed_ca(path_length: int | None) -> None:
    key = certificates.generate_key()
    root = _root(key, path_length=path_length)
    root.verify_directly_issued_by(root)
    assert root.subject == root.issuer == ROOT_NAME
    assert root.not_valid_before_utc == NOW - datetime.timedelta(minutes=2)
    assert root.not_valid_after_utc == NOW + datetime.timedelta(days=10)
    assert _extensions(root) == [
        (ExtensionOID.BASIC_CONSTRAINTS.dotted_string, True),
        (ExtensionOID.KEY_USAGE.dotted_string, True),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string, False),
    ]
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints == x509.BasicConstraints(ca=True, path_length=path_length)
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    assert not usage.key_encipherment
    identifier = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert identifier == x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def test_workload_certificate_profile() -> None:
    ca = CertificateAuthority.self_signed(trust_domain="cluster.local", now=NOW)
    leaf = x509.load_pem_x509_certificate(
        ca.sign_csr(make_csr(WEB.uri), identity=WEB, now=NOW)[0].encode()
    )
    assert len(leaf.subject) == 0
    assert leaf.not_valid_before_utc == NOW - CLOCK_SKEW
    assert _extensions(leaf) == [
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string, True),  # the subject is empty
        (ExtensionOID.BASIC_CONSTRAINTS.dotted_string, True),
        (ExtensionOID.KEY_USAGE.dotted_string, True),
        (ExtensionOID.EXTENDED_KEY_USAGE.dotted_string, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string, False),
    ]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    authority = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert authority == x509.AuthorityKeyIdentifier.from_issuer_public_key(
        ca.signing_key.public_key()
    )


def test_leaf_never_outlives_its_issuer_and_names_it() -> None:
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _root(issuer_key)
    key = certificates.generate_key()
    leaf = certificates.signed_leaf(
        key.public_key(),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]),
        names=[x509.DNSName("svc"), x509.DNSName("svc.ns")],
        profile=certificates.LeafProfile(extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        issuer=root,
        issuer_key=issuer_key,
        now=NOW,
        backdate=datetime.timedelta(minutes=3),
        lifetime=datetime.timedelta(days=365),
    )
    leaf.verify_directly_issued_by(root)
    assert leaf.issuer == root.subject
    assert leaf.not_valid_before_utc == NOW - datetime.timedelta(minutes=3)
    assert leaf.not_valid_after_utc == root.not_valid_after_utc
    assert _extensions(leaf) == [
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string, False),  # the subject names it
        (ExtensionOID.BASIC_CONSTRAINTS.dotted_string, True),
        (ExtensionOID.EXTENDED_KEY_USAGE.dotted_string, False),
    ]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["svc", "svc.ns"]


def test_keys_are_p256_in_unencrypted_pkcs8() -> None:
    key = certificates.generate_key()
    assert isinstance(key.curve, ec.SECP256R1)
    pem = certificates.key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    root = _root(key)
    assert x509.load_pem_x509_certificate(certificates.certificate_to_pem(root)) == root
