"""The webhook certificate, pure: issuing, judging, renewing, and serving it over TLS."""

from __future__ import annotations

import base64
import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from sidemesh.kube.cert_store import write_atomically
from sidemesh.kube.webhook_certs import (
    CertPolicy,
    WebhookCertificates,
    dns_names,
    issue,
    renew,
    renewal_reason,
)
from sidemesh.webhook.tls import CertificateReloader, build_server_context

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
POLICY = CertPolicy(
    ca_validity=datetime.timedelta(days=365),
    cert_validity=datetime.timedelta(days=30),
    renew_before=datetime.timedelta(days=10),
)


def _sans(pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def test_serving_certificate_names_the_revision_service() -> None:
    certs = issue("asm-173-3", NOW, POLICY)
    assert {"istiod-asm-173-3.istio-system.svc",
            "istiod-asm-173-3.istio-system.svc.cluster.local"} <= _sans(certs.cert)  # fmt: skip
    assert _sans(issue("default", NOW, POLICY).cert) >= {"istiod.istio-system.svc"}
    assert renewal_reason(certs, "asm-173-3", NOW, POLICY) is None


def _outline(pem: bytes) -> tuple[str, datetime.timedelta, datetime.timedelta, list[Any]]:
    """Subject, validity before and after NOW, and each extension with its criticality."""
    cert = x509.load_pem_x509_certificate(pem)
    extensions = [(e.oid, e.critical) for e in cert.extensions]
    before, after = NOW - cert.not_valid_before_utc, cert.not_valid_after_utc - NOW
    return cert.subject.rfc4514_string(), before, after, extensions


def test_webhook_ca_and_serving_certificate_extensions() -> None:
    """The CA may sign only leaves; the serving certificate names the service and serverAuth,
    nothing else. Both are backdated five minutes for API servers with slow clocks."""
    certs = issue("blue", NOW, POLICY)
    backdate = datetime.timedelta(minutes=5)
    ca_extensions = [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
    ]
    serving_extensions = [
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False),
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
    ]
    assert [_outline(certs.ca_cert), _outline(certs.cert)] == [
        ("CN=istiod-blue webhook CA,O=sidemesh", backdate, POLICY.ca_validity, ca_extensions),
        ("CN=istiod-blue.istio-system.svc", backdate, POLICY.cert_validity, serving_extensions),
    ]
    ca = x509.load_pem_x509_certificate(certs.ca_cert)
    serving = x509.load_pem_x509_certificate(certs.cert)
    serving.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for pem in (certs.ca_key, certs.key):
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_certificate_for_another_revision_is_refused() -> None:
    certs = issue("blue", NOW, POLICY)
    reason = renewal_reason(certs, "green", NOW, POLICY)
    assert reason is not None and "istiod-green.istio-system.svc" in reason


def test_due_well_before_expiry() -> None:
    certs = issue("blue", NOW, POLICY)
    assert renewal_reason(certs, "blue", NOW + datetime.timedelta(days=19), POLICY) is None
    reason = renewal_reason(certs, "blue", NOW + datetime.timedelta(days=21), POLICY)
    assert reason is not None and "expires" in reason


def test_renewal_keeps_the_ca_so_the_bundle_does_not_change() -> None:
    certs = issue("blue", NOW, POLICY)
    later = NOW + datetime.timedelta(days=25)
    renewed = renew(certs, "blue", later, POLICY)
    assert renewed.ca_bundle() == certs.ca_bundle()
    assert renewed.cert != certs.cert
    assert renewal_reason(renewed, "blue", later, POLICY) is None


def test_expiring_ca_is_replaced_and_the_old_one_stays_in_the_bundle() -> None:
    certs = issue("blue", NOW, POLICY)
    late = NOW + datetime.timedelta(days=340)  # CA has 25 days left < cert validity
    assert "CA expires" in (renewal_reason(certs, "blue", late, POLICY) or "")
    renewed = renew(certs, "blue", late, POLICY)
    assert renewed.ca_cert != certs.ca_cert
    bundle = base64.b64decode(renewed.ca_bundle())
    assert certs.ca_cert in bundle and renewed.ca_cert in bundle
    assert renewal_reason(renewed, "blue", late, POLICY) is None


def test_secret_data_round_trip_and_corruption() -> None:
    certs = issue("blue", NOW, POLICY)
    assert WebhookCertificates.from_secret_data(certs.secret_data()) == certs
    assert WebhookCertificates.from_secret_data(None) is None
    assert WebhookCertificates.from_secret_data({"ca.crt": "not base64!"}) is None
    partial = dict(certs.secret_data())
    del partial["tls.key"]
    assert WebhookCertificates.from_secret_data(partial) is None
    garbage = {**certs.secret_data(), "tls.crt": base64.b64encode(b"junk").decode()}
    broken = WebhookCertificates.from_secret_data(garbage)
    assert broken is not None and "unreadable" in (
        renewal_reason(broken, "blue", NOW, POLICY) or ""
    )


def _handshake(server: ssl.SSLContext, bundle_pem: bytes, host: str) -> None:
    """A complete TLS handshake in memory, as the API server makes it (verifying the bundle)."""
    client = ssl.create_default_context(cadata=bundle_pem.decode())
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=host)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, outgoing, incoming in (
            ("client", client_side, c_out, s_in), ("server", server_side, s_out, c_in)
        ):  # fmt: skip
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_rotation_is_a_hot_reload_trusted_by_the_same_bundle(tmp_path: Path) -> None:
    """The API server keeps one caBundle; before and after the files change, new handshakes
    verify against it, so no admission is dropped by a serving-certificate rotation."""
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    now = datetime.datetime.now(tz=datetime.UTC)  # a real handshake checks validity dates
    certs = issue("blue", now, POLICY)
    write_atomically(key_file, certs.key, 0o600)
    write_atomically(cert_file, certs.cert, 0o644)
    context = build_server_context(cert_file, key_file)
    reloader = CertificateReloader(context, cert_file, key_file)
    bundle = base64.b64decode(certs.ca_bundle())
    host = "istiod-blue.istio-system.svc"
    _handshake(context, bundle, host)

    renewed = renew(certs, "blue", now, POLICY)
    write_atomically(key_file, renewed.key, 0o600)
    write_atomically(cert_file, renewed.cert, 0o644)
    assert reloader.check()  # the same live context now serves the new pair
    assert base64.b64decode(renewed.ca_bundle()) == bundle
    _handshake(context, bundle, host)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, bundle, "istiod-green.istio-system.svc")


def test_write_atomically_skips_identical_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f"
    assert write_atomically(path, b"x", 0o600)
    assert not write_atomically(path, b"x", 0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    assert dns_names("blue")[0] == "istiod-blue.istio-system.svc"
