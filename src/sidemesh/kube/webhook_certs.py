"""The webhook's serving certificate: issued by a small CA the control plane owns.

Pure: keys, certificates and the Secret's data; the caller passes `now`. A CA (valid for
years) signs a short-lived serving certificate for `istiod-REV.istio-system.svc`. Rotating the
serving certificate therefore never changes the `caBundle` the API server trusts, so rotation
is only a file swap the webhook's reloader picks up: no admission is dropped. If the CA itself
must change, the bundle carries the previous CA too until it expires.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidemesh.api import names
from sidemesh.install import naming
from sidemesh.security import certificates

CA_KEY: Final = "ca.crt"
CA_PRIVATE_KEY: Final = "ca.key"
PREVIOUS_CA_KEY: Final = "ca-previous.crt"
CERT_KEY: Final = "tls.crt"
PRIVATE_KEY: Final = "tls.key"
BACKDATE: Final = datetime.timedelta(minutes=5)  # API servers with slow clocks
# The API server checks the serving certificate's names and serverAuth; unlike a workload
# certificate it carries no key usage and no authority key identifier.
SERVING_PROFILE: Final = certificates.LeafProfile(
    extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,)
)


@dataclass(frozen=True)
class CertPolicy:
    ca_validity: datetime.timedelta = datetime.timedelta(days=3650)
    cert_validity: datetime.timedelta = datetime.timedelta(days=90)
    # Renew this long before expiry: replicas reload within seconds, so a renewal that is
    # delayed by an API outage still has weeks of headroom.
    renew_before: datetime.timedelta = datetime.timedelta(days=30)
    # More names the serving certificate carries (Istio's ISTIOD_CUSTOM_HOST): for a webhook
    # the API server reaches by `url:` (istiodRemote.injectionURL). An IP address becomes an
    # IP SAN.
    custom_hosts: tuple[str, ...] = ()


DEFAULT_POLICY = CertPolicy()


def parse_custom_hosts(value: str) -> tuple[str, ...]:
    """ISTIOD_CUSTOM_HOST: host names or addresses separated by commas."""
    return tuple(dict.fromkeys(h.strip() for h in value.split(",") if h.strip()))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class WebhookCertificates:
    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes
    previous_ca_cert: bytes = b""

    def ca_bundle(self) -> str:
        """The `caBundle` value: base64 of the PEM CA(s) that verify the serving certificate."""
        return base64.b64encode(self.ca_cert + self.previous_ca_cert).decode()

    def secret_data(self) -> dict[str, str]:
        data = {
            CA_KEY: self.ca_cert,
            CA_PRIVATE_KEY: self.ca_key,
            CERT_KEY: self.cert,
            PRIVATE_KEY: self.key,
        }
        if self.previous_ca_cert:
            data[PREVIOUS_CA_KEY] = self.previous_ca_cert
        return {k: base64.b64encode(v).decode() for k, v in data.items()}

    @classmethod
    def from_secret_data(cls, data: dict[str, str] | None) -> WebhookCertificates | None:
        """None when the data is incomplete or not base64 (then it is reissued)."""
        if not data:
            return None
        try:
            raw = {k: base64.b64decode(v, validate=True) for k, v in data.items()}
        except (ValueError, TypeError):
            return None
        required = (CA_KEY, CA_PRIVATE_KEY, CERT_KEY, PRIVATE_KEY)
        if not all(raw.get(k) for k in required):
            return None
        return cls(
            ca_cert=raw[CA_KEY],
            ca_key=raw[CA_PRIVATE_KEY],
            cert=raw[CERT_KEY],
            key=raw[PRIVATE_KEY],
            previous_ca_cert=raw.get(PREVIOUS_CA_KEY, b""),
        )


def dns_names(revision: str, namespace: str = naming.NAMESPACE) -> list[str]:
    service = names.service_name(revision)
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]


def issue_ca(revision: str, now: datetime.datetime, policy: CertPolicy) -> tuple[bytes, bytes]:
    key = certificates.generate_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sidemesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{names.service_name(revision)} webhook CA"),
        ]
    )
    cert = certificates.self_signed_ca(
        key, subject=subject, now=now, backdate=BACKDATE, lifetime=policy.ca_validity, path_length=0
    )
    return certificates.certificate_to_pem(cert), certificates.key_to_pem(key)


def issue_serving(
    revision: str, ca_cert: bytes, ca_key: bytes, now: datetime.datetime, policy: CertPolicy
) -> tuple[bytes, bytes]:
    issuer = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = certificates.generate_key()
    hosts = [*dns_names(revision), *policy.custom_hosts]
    cert = certificates.signed_leaf(
        key.public_key(),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]),
        names=[_general_name(h) for h in dict.fromkeys(hosts)],
        profile=SERVING_PROFILE,
        issuer=issuer,
        issuer_key=signer,
        now=now,
        backdate=BACKDATE,
        lifetime=policy.cert_validity,
    )
    return certificates.certificate_to_pem(cert), certificates.key_to_pem(key)


def issue(revision: str, now: datetime.datetime, policy: CertPolicy) -> WebhookCertificates:
    ca_cert, ca_key = issue_ca(revision, now, policy)
    cert, key = issue_serving(revision, ca_cert, ca_key, now, policy)
    return WebhookCertificates(ca_cert=ca_cert, ca_key=ca_key, cert=cert, key=key)


def renewal_reason(
    certs: WebhookCertificates, revision: str, now: datetime.datetime, policy: CertPolicy
) -> str | None:
    """Why the serving certificate (or its CA) must be reissued now; None if it is fine."""
    try:
        ca = x509.load_pem_x509_certificate(certs.ca_cert)
        cert = x509.load_pem_x509_certificate(certs.cert)
        serialization.load_pem_private_key(certs.key, password=None)
        serialization.load_pem_private_key(certs.ca_key, password=None)
    except ValueError as exc:
        return f"unreadable certificate or key: {exc}"
    if ca.not_valid_after_utc - now < policy.cert_validity:
        return f"the webhook CA expires at {ca.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the serving certificate is not signed by the webhook CA"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        named = set(san)
    except x509.ExtensionNotFound:
        named = set()
    wanted = [*dns_names(revision), *policy.custom_hosts]
    missing = [h for h in dict.fromkeys(wanted) if _general_name(h) not in named]
    if missing:
        return f"the serving certificate does not name {', '.join(sorted(missing))}"
    if cert.not_valid_after_utc - now < policy.renew_before:
        return f"the serving certificate expires at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return None


def renew(
    certs: WebhookCertificates, revision: str, now: datetime.datetime, policy: CertPolicy
) -> WebhookCertificates:
    """A new serving certificate; a new CA too if the current one is (nearly) expired, keeping
    the old CA in the bundle so certificates it signed still verify while replicas switch."""
    try:
        ca = x509.load_pem_x509_certificate(certs.ca_cert)
        ca_usable = ca.not_valid_after_utc - now >= policy.cert_validity
        serialization.load_pem_private_key(certs.ca_key, password=None)
    except ValueError:
        ca_usable = False
    if ca_usable:
        cert, key = issue_serving(revision, certs.ca_cert, certs.ca_key, now, policy)
        return WebhookCertificates(certs.ca_cert, certs.ca_key, cert, key, certs.previous_ca_cert)
    fresh = issue(revision, now, policy)
    previous = certs.ca_cert if _still_valid(certs.ca_cert, now) else b""
    return WebhookCertificates(fresh.ca_cert, fresh.ca_key, fresh.cert, fresh.key, previous)


def _still_valid(pem: bytes, now: datetime.datetime) -> bool:
    try:
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc > now
    except ValueError:
        return False
