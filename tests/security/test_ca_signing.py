"""The CA signs workload CSRs for the caller's SPIFFE id only, and chains verify to the root."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from security_testkit import NOW, make_csr

from sidemesh.security.ca import (
    MAX_WORKLOAD_TTL,
    CertificateAuthority,
    CsrError,
    TrustBundle,
)
from sidemesh.security.identity import SpiffeId

WEB = SpiffeId("cluster.local", "demo", "web")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.self_signed(trust_domain="cluster.local", now=NOW)


def verify_chain(chain_pem: list[str], roots: list[x509.Certificate], when: datetime.datetime):
    leaf, *intermediates = [x509.load_pem_x509_certificate(p.encode()) for p in chain_pem]
    store = verification.Store(roots)
    verifier = verification.PolicyBuilder().store(store).time(when).build_client_verifier()
    return verifier.verify(leaf, intermediates)


def test_signs_the_callers_identity_and_the_chain_verifies(ca: CertificateAuthority) -> None:
    chain = ca.sign_csr(make_csr(WEB.uri), identity=WEB, now=NOW)
    assert len(chain) == 2  # leaf, root
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [WEB.uri]
    assert leaf.not_valid_after_utc - NOW == datetime.timedelta(hours=24)
    verified = verify_chain(chain, [ca.root], NOW + datetime.timedelta(hours=1))
    assert [s.value for s in verified.subjects or ()] == [WEB.uri]


def test_ttl_is_configurable_and_capped(ca: CertificateAuthority) -> None:
    short = ca.sign_csr(make_csr(WEB.uri), identity=WEB, now=NOW, ttl=datetime.timedelta(hours=1))
    long = ca.sign_csr(make_csr(WEB.uri), identity=WEB, now=NOW, ttl=datetime.timedelta(days=999))
    expiry = [
        x509.load_pem_x509_certificate(c[0].encode()).not_valid_after_utc for c in (short, long)
    ]
    assert expiry[0] - NOW == datetime.timedelta(hours=1)
    assert expiry[1] - NOW == MAX_WORKLOAD_TTL


@pytest.mark.parametrize(
    ("csr_kwargs", "needle"),
    [
        ({"uris": ("spiffe://cluster.local/ns/demo/sa/admin",)}, "ns/demo/sa/admin"),
        ({"uris": (WEB.uri,), "dns": ("evil.example.com",)}, "evil.example.com"),
        ({"uris": (WEB.uri,), "common_name": "root"}, "root"),
    ],
)
def test_refuses_any_other_identity_naming_both(
    ca: CertificateAuthority, csr_kwargs: dict[str, object], needle: str
) -> None:
    uris = csr_kwargs.pop("uris")
    csr = make_csr(*uris, **csr_kwargs)  # type: ignore[arg-type]
    with pytest.raises(PermissionError) as refused:
        ca.sign_csr(csr, identity=WEB, now=NOW)
    assert needle in str(refused.value) and WEB.uri in str(refused.value)


@pytest.mark.parametrize(
    ("csr", "reason"),
    [
        ("", "empty"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n", "PEM"),
        (make_csr(), "no identity"),
    ],
)
def test_refuses_malformed_csrs_with_a_reason(
    ca: CertificateAuthority, csr: str, reason: str
) -> None:
    with pytest.raises(CsrError, match=reason):
        ca.sign_csr(csr, identity=WEB, now=NOW)


def test_refuses_a_csr_whose_signature_does_not_verify(ca: CertificateAuthority) -> None:
    good = x509.load_pem_x509_csr(make_csr(WEB.uri).encode())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # flip a bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature"):
        ca.sign_csr(tampered, identity=WEB, now=NOW)


def _intermediate(root: CertificateAuthority) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "intermediate")]))
        .issuer_name(root.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.signing_key.public_key()),
            False,
        )
        .sign(root.signing_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_plugged_in_intermediate_signs_and_chains_to_the_root(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = _intermediate(ca)
    root_pem = ca.root_pem().encode()
    plugged = CertificateAuthority.from_pem(
        trust_domain="cluster.local", ca_cert=cert_pem, ca_key=key_pem,
        cert_chain=cert_pem + root_pem, root_cert=root_pem,
    )  # fmt: skip
    chain = plugged.sign_csr(make_csr(WEB.uri), identity=WEB, now=NOW)
    assert len(chain) == 3  # leaf, intermediate, root
    assert chain[1].encode() == cert_pem
    verify_chain(chain, [ca.root], NOW + datetime.timedelta(hours=1))


def test_plugged_in_material_is_checked(ca: CertificateAuthority) -> None:
    cert_pem, _ = _intermediate(ca)
    _, other_key = _intermediate(ca)
    with pytest.raises(ValueError, match="does not match"):
        CertificateAuthority.from_pem(
            trust_domain="cluster.local", ca_cert=cert_pem, ca_key=other_key,
            root_cert=ca.root_pem().encode(),
        )  # fmt: skip


def test_trust_bundle_publishes_old_and_new_roots(ca: CertificateAuthority) -> None:
    new = CertificateAuthority.self_signed(trust_domain="cluster.local", now=NOW)
    bundle = ca.bundle.with_root(new.root).with_root(new.root)
    assert len(bundle.roots) == 2
    pem = bundle.pem()
    assert len(x509.load_pem_x509_certificates(pem.encode())) == 2
    # A leaf from the old root and one from the new both verify against the bundle.
    for signer in (ca, new):
        chain = signer.sign_csr(make_csr(WEB.uri), identity=WEB, now=NOW)
        verify_chain(chain, list(bundle.roots), NOW + datetime.timedelta(hours=1))
    later = NOW + datetime.timedelta(days=20 * 365)
    assert TrustBundle(bundle.roots).without_expired(later).roots == ()


def test_repr_never_shows_the_key(ca: CertificateAuthority) -> None:
    assert "PRIVATE" not in repr(ca) and "signing_key" not in repr(ca)


def test_serving_certificate_has_dns_names_and_spiffe_id(ca: CertificateAuthority) -> None:
    identity = SpiffeId("cluster.local", "istio-system", "istiod")
    chain_pem, key_pem = ca.issue_serving_certificate(
        dns_names=["istiod.istio-system.svc"], identity=identity, now=NOW,
        ttl=datetime.timedelta(days=1),
    )  # fmt: skip
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity.uri]
    assert b"PRIVATE KEY" in key_pem
