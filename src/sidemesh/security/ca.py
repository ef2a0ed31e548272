"""The mesh certificate authority: a root (self-signed or plugged in) that signs workload certs.

Pure apart from key generation: every function takes `now` instead of reading a clock, and
storage is elsewhere (`store.py`).

Keys are EC P-256. Signing is roughly 20x cheaper than RSA 2048 (a control plane that restarts
thousands of sidecars at once signs thousands of CSRs), certificates are a third the size (they
travel in every TLS handshake), and BoringSSL in Envoy, Go's crypto and `cryptography` all
support it. Plugged-in Istio `cacerts` with RSA keys also work: the CA signs with whatever key
it was given.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidemesh.api.telemetry.peer import WorkloadMetadata
from sidemesh.api.telemetry.peer_certificate import subject_unit
from sidemesh.api.text import untrusted_list
from sidemesh.security import certificates
from sidemesh.security.certificates import SigningKey as SigningKey
from sidemesh.security.certificates import generate_key as generate_key
from sidemesh.security.certificates import key_to_pem as key_to_pem
from sidemesh.security.identity import SpiffeId

ROOT_VALIDITY = datetime.timedelta(days=3650)
DEFAULT_WORKLOAD_TTL = datetime.timedelta(hours=24)
MAX_WORKLOAD_TTL = datetime.timedelta(days=90)  # Istio's MAX_WORKLOAD_CERT_TTL
CLOCK_SKEW = datetime.timedelta(minutes=1)  # backdate notBefore for peers with slow clocks
ORGANIZATION = "sidemesh"
WORKLOAD_PROFILE = certificates.LeafProfile(
    key_usage=certificates.TLS_KEY_USAGE,
    extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    authority_key_identifier=True,
)


class CsrError(ValueError):
    """A CSR that cannot be signed; the message says why in words a user can act on."""


def _pem(cert: x509.Certificate) -> str:
    return certificates.certificate_to_pem(cert).decode()


def load_pem_certificates(data: bytes | str, source: str) -> list[x509.Certificate]:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return x509.load_pem_x509_certificates(raw) if raw.strip() else []
    except ValueError as exc:
        raise ValueError(f"{source}: not a PEM certificate list: {exc}") from exc


@dataclass(frozen=True)
class TrustBundle:
    """The roots sidecars trust. During a root rotation it holds the old and the new root, and
    the old one is dropped only after it has expired. A renewed self-signed root (same key and
    subject, see `root_rotation.py`) may sign at once: what it signs verifies under the old
    root too. A root with a new key must be published, and picked up by every sidecar, before
    it signs anything."""

    roots: tuple[x509.Certificate, ...]

    def with_root(self, root: x509.Certificate) -> TrustBundle:
        if any(
            r.fingerprint(hashes.SHA256()) == root.fingerprint(hashes.SHA256()) for r in self.roots
        ):
            return self
        return TrustBundle((*self.roots, root))

    def without_expired(self, now: datetime.datetime) -> TrustBundle:
        return TrustBundle(tuple(r for r in self.roots if r.not_valid_after_utc > now))

    def pem(self) -> str:
        """The `trusted roots` output: every root, PEM, concatenated (root-cert.pem)."""
        return "".join(_pem(r) for r in self.roots)


@dataclass(frozen=True)
class CertificateAuthority:
    """Signs workload certificates with `signing_key`/`signing_cert`.

    `chain` is the path from the signing cert up to and including the root (for a self-signed
    root it is just the root); issued chains are [leaf, *chain].
    """

    trust_domain: str
    signing_key: SigningKey
    signing_cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    bundle: TrustBundle
    max_ttl: datetime.timedelta = MAX_WORKLOAD_TTL
    default_ttl: datetime.timedelta = DEFAULT_WORKLOAD_TTL
    _chain_pem: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_chain_pem", tuple(_pem(c) for c in self.chain))

    def __repr__(self) -> str:  # never show the key
        return (
            f"CertificateAuthority(trust_domain={self.trust_domain!r}, "
            f"subject={self.signing_cert.subject.rfc4514_string()!r})"
        )

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    def root_pem(self) -> str:
        return self.bundle.pem()

    @classmethod
    def self_signed(
        cls,
        *,
        trust_domain: str,
        now: datetime.datetime,
        key: SigningKey | None = None,
        validity: datetime.timedelta = ROOT_VALIDITY,
    ) -> CertificateAuthority:
        key = key or generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        cert = certificates.self_signed_ca(
            key, subject=name, now=now, backdate=CLOCK_SKEW, lifetime=validity, path_length=None
        )
        return cls(trust_domain, key, cert, (cert,), TrustBundle((cert,)))

    @classmethod
    def from_pem(
        cls,
        *,
        trust_domain: str,
        ca_cert: bytes,
        ca_key: bytes,
        cert_chain: bytes = b"",
        root_cert: bytes = b"",
    ) -> CertificateAuthority:
        """Istio's `cacerts` layout: ca-cert.pem signs, cert-chain.pem is the path to the root
        (it may or may not start with ca-cert.pem), root-cert.pem is the trust anchor (several
        roots during a rotation)."""
        certs = load_pem_certificates(ca_cert, "ca-cert.pem")
        if len(certs) != 1:
            raise ValueError(f"ca-cert.pem: expected one certificate, found {len(certs)}")
        signing = certs[0]
        try:
            key = serialization.load_pem_private_key(ca_key, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"ca-key.pem: not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("ca-key.pem: only EC and RSA keys are supported")
        if key.public_key().public_numbers() != signing.public_key().public_numbers():  # type: ignore[union-attr]
            raise ValueError("ca-key.pem does not match the public key of ca-cert.pem")
        roots = load_pem_certificates(root_cert, "root-cert.pem")
        path = [c for c in load_pem_certificates(cert_chain, "cert-chain.pem") if c != signing]
        if not roots:  # a self-signed ca-cert.pem is its own root
            roots = [path[-1] if path else signing]
        chain = (signing, *path)
        if chain[-1].subject != chain[-1].issuer:
            chain = (*chain, roots[0])
        _check_path(chain)
        if chain[-1] not in roots:
            raise ValueError("the root of cert-chain.pem is not in root-cert.pem")
        return cls(trust_domain, key, signing, chain, TrustBundle(tuple(roots)))

    def sign_csr(
        self,
        csr_pem: str | bytes,
        *,
        identity: SpiffeId,
        now: datetime.datetime,
        ttl: datetime.timedelta | None = None,
        workload: WorkloadMetadata | None = None,
    ) -> list[str]:
        """Sign a workload CSR whose only identity is `identity`; the PEM chain, leaf first.
        `workload` (checked by the caller, `peer_certificate.claimed_workload`) goes into the
        subject for the server side of TCP telemetry; the SAN stays the only identity."""
        csr = parse_csr(csr_pem)
        check_csr_identity(csr, identity)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, subject_unit(workload))]
            if workload is not None
            else []
        )
        leaf = self._issue(
            csr.public_key(), uris=[identity.uri], dns_names=(), now=now, ttl=ttl,
            subject=subject,
        )  # fmt: skip
        return [_pem(leaf), *self._chain_pem]

    def issue_serving_certificate(
        self,
        *,
        dns_names: Sequence[str],
        identity: SpiffeId,
        now: datetime.datetime,
        ttl: datetime.timedelta,
    ) -> tuple[str, bytes]:
        """A certificate and key for the control plane itself (DNS names + its SPIFFE id)."""
        key = generate_key()
        cert = self._issue(key.public_key(), uris=[identity.uri], dns_names=dns_names,
                           now=now, ttl=ttl)  # fmt: skip
        return _pem(cert) + "".join(self._chain_pem), key_to_pem(key)

    def _issue(
        self,
        public_key: CertificatePublicKeyTypes,
        *,
        uris: Iterable[str],
        dns_names: Iterable[str],
        now: datetime.datetime,
        ttl: datetime.timedelta | None,
        subject: x509.Name | None = None,
    ) -> x509.Certificate:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns_names]
        return certificates.signed_leaf(
            public_key,
            subject=subject or x509.Name([]),  # the identity lives in the SAN
            names=names,
            profile=WORKLOAD_PROFILE,
            issuer=self.signing_cert,
            issuer_key=self.signing_key,
            now=now,
            backdate=CLOCK_SKEW,
            lifetime=min(ttl or self.default_ttl, self.max_ttl),
        )


def parse_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if not raw.strip():
        raise CsrError("the CSR is empty")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as exc:
        raise CsrError(f"the CSR is not a PEM certificate request: {exc}") from exc
    if not csr.is_signature_valid:
        raise CsrError("the CSR signature does not verify against its public key")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise CsrError(f"RSA keys must be at least 2048 bits, got {key.key_size}")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CsrError("only RSA and EC public keys are accepted")
    return csr


def csr_identities(csr: x509.CertificateSigningRequest) -> list[str]:
    """Every identity the CSR asks for: SAN entries of any kind and a subject common name."""
    found: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for general_name in san:
            value = general_name.value
            found.append(value if isinstance(value, str) else str(value))
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        found.append(value if isinstance(value, str) else value.decode(errors="replace"))
    return found


def check_csr_identity(csr: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
    """The CSR's only identity must be the caller's; raises PermissionError naming both."""
    requested = csr_identities(csr)
    if not requested:
        raise CsrError("the CSR carries no identity (expected a URI SAN)")
    others = sorted({r for r in requested if r != identity.uri})
    if others:
        # What a CSR claims is the caller's text: quoted, escaped and bounded before it reaches
        # a log line or the answer.
        raise PermissionError(
            f"the CSR asks for {untrusted_list(others)} but the caller is {identity.uri}"
        )


def _check_path(chain: Sequence[x509.Certificate]) -> None:
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ValueError(
                f"cert-chain.pem: {child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()}: {exc}"
            ) from exc


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]
