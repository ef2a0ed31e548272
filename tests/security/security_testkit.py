"""Helpers for the security tests: CSRs, a lightkube client on kmock."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmock_support import fix_kmock_namespaces as fix_kmock_namespaces
from kmock_support import kube_client as kube_client

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def make_csr(*uris: str, dns: tuple[str, ...] = (), common_name: str | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    general: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    general += [x509.DNSName(d) for d in dns]
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=True)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()
