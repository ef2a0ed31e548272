"""Helpers for the security tests: CSRs, a lightkube client on kmock."""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def fix_kmock_namespaces() -> None:
    """kmock 0.8 cannot parse /api/v1/namespaces[/NAME] (it takes `namespaces` as the
    namespaced-path prefix); teach it that these paths name the Namespace resource."""
    from kmock._internal import parsing

    original = getattr(parsing, "_sidemesh_original", parsing.parse_path)

    def parse_path(path: str) -> Any:
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
        return original(path)

    parsing._sidemesh_original = original  # type: ignore[attr-defined]
    parsing.parse_path = parse_path


def kube_client(kmock: Any) -> Any:
    from lightkube import AsyncClient, KubeConfig

    fix_kmock_namespaces()
    config = KubeConfig.from_dict({
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "current-context": "kmock",
    })  # fmt: skip
    return AsyncClient(config)
