"""Where the CA's key and certificates live: a Kubernetes Secret or a local directory.

Both use Istio's file names. A plugged-in CA (`cacerts`: ca-cert.pem, ca-key.pem,
cert-chain.pem, root-cert.pem) always wins over a self-signed one. Neither backend ever
overwrites material it did not create in this call: a second control-plane replica racing the
first one loses the create and loads the winner's key. Key bytes are never logged or repr'd.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sidemesh.api import names
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.certificates import certificate_to_pem, key_to_pem

log = logging.getLogger("sidemesh.security.store")

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
ROOT_CERT = "root-cert.pem"
SELF_SIGNED_SECRET = "istio-ca-secret"
PLUGGED_SECRET = "cacerts"


@dataclass(frozen=True)
class CaMaterial:
    ca_cert: bytes
    ca_key: bytes = field(repr=False)
    cert_chain: bytes = b""
    root_cert: bytes = b""

    def to_ca(self, trust_domain: str) -> CertificateAuthority:
        return CertificateAuthority.from_pem(
            trust_domain=trust_domain, ca_cert=self.ca_cert, ca_key=self.ca_key,
            cert_chain=self.cert_chain, root_cert=self.root_cert,
        )  # fmt: skip

    @classmethod
    def from_ca(cls, ca: CertificateAuthority) -> CaMaterial:
        chain = b"".join(certificate_to_pem(c) for c in ca.chain[1:])
        return cls(
            ca_cert=certificate_to_pem(ca.signing_cert),
            ca_key=key_to_pem(ca.signing_key),
            cert_chain=chain,
            root_cert=ca.root_pem().encode(),
        )

    def as_files(self) -> dict[str, bytes]:
        return {CA_CERT: self.ca_cert, CA_KEY: self.ca_key, CERT_CHAIN: self.cert_chain,
                ROOT_CERT: self.root_cert}  # fmt: skip


class CaStore(Protocol):
    async def load(self) -> CaMaterial | None:
        """Existing material (plugged-in first), or None."""

    async def create(self, material: CaMaterial) -> CaMaterial:
        """Store `material` unless someone else already has: return what is now stored."""


async def load_or_create_ca(
    store: CaStore, *, trust_domain: str, now: datetime.datetime
) -> CertificateAuthority:
    existing = await store.load()
    if existing is not None:
        ca = existing.to_ca(trust_domain)
        log.info("CA loaded: %r", ca)
        return ca
    created = CertificateAuthority.self_signed(trust_domain=trust_domain, now=now)
    stored = await store.create(CaMaterial.from_ca(created))
    ca = stored.to_ca(trust_domain)
    log.info("CA in use: %r", ca)
    return ca


class DirectoryCaStore:
    """A directory in Istio's `cacerts` layout; for the single-host runtime."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def load(self) -> CaMaterial | None:
        if not (self.directory / CA_CERT).exists():
            return None
        files = {}
        for name in (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT):
            path = self.directory / name
            files[name] = path.read_bytes() if path.exists() else b""
        if not files[CA_KEY]:
            raise ValueError(f"{self.directory / CA_KEY}: missing or empty")
        return CaMaterial(files[CA_CERT], files[CA_KEY], files[CERT_CHAIN], files[ROOT_CERT])

    async def create(self, material: CaMaterial) -> CaMaterial:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The key first, with O_EXCL: whoever creates it owns the directory's material.
        try:
            fd = os.open(self.directory / CA_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            loaded = await self.load()
            if loaded is None:
                raise ValueError(f"{self.directory}: {CA_KEY} exists without {CA_CERT}") from None
            return loaded
        with os.fdopen(fd, "wb") as out:
            out.write(material.ca_key)
        for name, data in material.as_files().items():
            if name != CA_KEY:
                _write_atomically(self.directory / name, data)
        return material


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class KubernetesSecretStore:
    """`cacerts` (plugged in by an admin) or `istio-ca-secret` (self-signed) in istio-system."""

    def __init__(
        self,
        client: Any,  # lightkube.AsyncClient
        *,
        namespace: str = names.CONTROL_PLANE_NAMESPACE,
        name: str = SELF_SIGNED_SECRET,
        plugged_name: str = PLUGGED_SECRET,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.plugged_name = plugged_name

    async def load(self) -> CaMaterial | None:
        for secret_name in (self.plugged_name, self.name):
            data = await self._get(secret_name)
            if data is not None:
                if not data.get(CA_CERT) or not data.get(CA_KEY):
                    raise ValueError(
                        f"Secret {self.namespace}/{secret_name}: needs {CA_CERT} and {CA_KEY}"
                    )
                log.info("CA material from Secret %s/%s", self.namespace, secret_name)
                return CaMaterial(data[CA_CERT], data[CA_KEY], data.get(CERT_CHAIN, b""),
                                  data.get(ROOT_CERT, b""))  # fmt: skip
        return None

    async def create(self, material: CaMaterial) -> CaMaterial:
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.core_v1 import Secret

        secret = Secret(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            type="istio.io/ca-root",
            data={k: base64.b64encode(v).decode() for k, v in material.as_files().items()},
        )
        try:
            await self.client.create(secret)
        except Exception as exc:
            if status_code(exc) != 409:
                raise
            log.info("Secret %s/%s was created by another replica; using it",
                     self.namespace, self.name)  # fmt: skip
            loaded = await self.load()
            if loaded is None:
                raise
            return loaded
        log.info("created Secret %s/%s with a new self-signed root", self.namespace, self.name)
        return material

    async def _get(self, name: str) -> dict[str, bytes] | None:
        from lightkube.resources.core_v1 import Secret

        try:
            secret = await self.client.get(Secret, name, namespace=self.namespace)
        except Exception as exc:
            if status_code(exc) == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a lightkube/httpx error, whichever class carries it."""
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None
