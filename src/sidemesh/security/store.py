"""Where the CA's key and certificates live: a Kubernetes Secret or a local directory.

Both use Istio's file names. A plugged-in CA (`cacerts`: ca-cert.pem, ca-key.pem,
cert-chain.pem, root-cert.pem) always wins over a self-signed one, and is never written. A
create never overwrites: a second control-plane replica racing the first one loses the create
and loads the winner's key. The one overwrite is `replace`, of the control plane's own
self-signed material when its root is renewed, and only if the stored material is still what
the caller read (the Secret's resourceVersion; in a directory, ca-cert.pem's digest, under a
lock): a replica that lost the race reloads instead. Key bytes are never logged or repr'd.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sidemesh.api import names
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.certificates import certificate_to_pem, key_to_pem
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.security.store")

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
ROOT_CERT = "root-cert.pem"
SELF_SIGNED_SECRET = "istio-ca-secret"
PLUGGED_SECRET = "cacerts"
# In a CA directory: present when discovery created the material there (so it may renew it);
# without it the directory is plugged in (e.g. the local runtime's read-only `cacerts` mount).
SELF_SIGNED_MARKER = ".sidemesh-self-signed"


@dataclass(frozen=True)
class CaMaterial:
    ca_cert: bytes
    ca_key: bytes = field(repr=False)
    cert_chain: bytes = b""
    root_cert: bytes = b""
    # The control plane's own self-signed material (istio-ca-secret), which it may renew;
    # False for a plugged-in CA (cacerts), which only its operator changes.
    managed: bool = False
    # What `replace` checks is still stored: the Secret's resourceVersion, the file's digest.
    version: str = field(default="", compare=False)

    def to_ca(self, trust_domain: str) -> CertificateAuthority:
        return CertificateAuthority.from_pem(
            trust_domain=trust_domain, ca_cert=self.ca_cert, ca_key=self.ca_key,
            cert_chain=self.cert_chain, root_cert=self.root_cert,
        )  # fmt: skip

    @classmethod
    def from_ca(cls, ca: CertificateAuthority, *, managed: bool = True) -> CaMaterial:
        chain = b"".join(certificate_to_pem(c) for c in ca.chain[1:])
        return cls(
            ca_cert=certificate_to_pem(ca.signing_cert),
            ca_key=key_to_pem(ca.signing_key),
            cert_chain=chain,
            root_cert=ca.root_pem().encode(),
            managed=managed,
        )

    def as_files(self) -> dict[str, bytes]:
        return {CA_CERT: self.ca_cert, CA_KEY: self.ca_key, CERT_CHAIN: self.cert_chain,
                ROOT_CERT: self.root_cert}  # fmt: skip


class CaStore(Protocol):
    async def load(self) -> CaMaterial | None:
        """Existing material (plugged-in first), or None."""

    async def create(self, material: CaMaterial) -> CaMaterial:
        """Store `material` unless someone else already has: return what is now stored."""

    async def replace(self, material: CaMaterial, *, previous: CaMaterial) -> CaMaterial | None:
        """Store `material` in place of the self-signed `previous` (as loaded), if that is still
        what is stored: return what is now stored, or None when it changed meanwhile."""


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
    """A directory in Istio's `cacerts` layout; for the single-host runtime.

    Readers take a shared lock on the directory, writers an exclusive one (flock on the
    directory itself, so a read-only directory needs no lock file); each file is replaced in
    one rename.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def load(self) -> CaMaterial | None:
        if not self.directory.is_dir():
            return None
        with self._locked(fcntl.LOCK_SH):
            return self._read()

    async def create(self, material: CaMaterial) -> CaMaterial:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked(fcntl.LOCK_EX):
            # The key first, with O_EXCL: whoever creates it owns the directory's material.
            try:
                fd = os.open(self.directory / CA_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                loaded = self._read()
                if loaded is None:
                    raise ValueError(
                        f"{self.directory}: {CA_KEY} exists without {CA_CERT}"
                    ) from None
                return loaded
            with os.fdopen(fd, "wb") as out:
                out.write(material.ca_key)
            self._write(material)
            if material.managed:
                write_atomically(self.directory / SELF_SIGNED_MARKER, _MARKER_TEXT, 0o644)
        return dataclasses.replace(material, version=_digest(material.ca_cert))

    async def replace(self, material: CaMaterial, *, previous: CaMaterial) -> CaMaterial | None:
        if not previous.managed:
            raise ValueError(f"{self.directory}: plugged-in CA material is never replaced")
        with self._locked(fcntl.LOCK_EX):
            current = self._read()
            if current is None or current.version != previous.version or not current.managed:
                return None
            self._write(material)
        return dataclasses.replace(material, managed=True, version=_digest(material.ca_cert))

    def _read(self) -> CaMaterial | None:
        if not (self.directory / CA_CERT).exists():
            return None
        files = {}
        for name in (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT):
            path = self.directory / name
            files[name] = path.read_bytes() if path.exists() else b""
        if not files[CA_KEY]:
            raise ValueError(f"{self.directory / CA_KEY}: missing or empty")
        return CaMaterial(
            files[CA_CERT], files[CA_KEY], files[CERT_CHAIN], files[ROOT_CERT],
            managed=(self.directory / SELF_SIGNED_MARKER).exists(),
            version=_digest(files[CA_CERT]),
        )  # fmt: skip

    def _write(self, material: CaMaterial) -> None:
        # ca-cert.pem last: a reader that takes no lock may see the old ca-cert.pem with the
        # new root-cert.pem (which still holds the old root), never a ca-cert.pem that the
        # root-cert.pem beside it lacks.
        for name in (ROOT_CERT, CERT_CHAIN, CA_KEY, CA_CERT):
            mode = 0o600 if name == CA_KEY else 0o644
            write_atomically(self.directory / name, material.as_files()[name], mode)

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(descriptor, operation)
            yield
        finally:
            os.close(descriptor)  # releases the lock


_MARKER_TEXT = (
    b"sidemesh discovery created this CA and renews its root before it expires.\n"
    b"Remove this file to treat the directory as a plugged-in CA that is never written.\n"
)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
            secret = await self._get(secret_name)
            if secret is not None:
                data = _decoded(secret)
                if not data.get(CA_CERT) or not data.get(CA_KEY):
                    raise ValueError(
                        f"Secret {self.namespace}/{secret_name}: needs {CA_CERT} and {CA_KEY}"
                    )
                log.debug("CA material from Secret %s/%s", self.namespace, secret_name)
                return CaMaterial(
                    data[CA_CERT], data[CA_KEY], data.get(CERT_CHAIN, b""),
                    data.get(ROOT_CERT, b""), managed=secret_name == self.name,
                    version=_resource_version(secret),
                )  # fmt: skip
        return None

    async def create(self, material: CaMaterial) -> CaMaterial:
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.core_v1 import Secret

        secret = Secret(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            type="istio.io/ca-root",
            data=_encoded(material),
        )
        try:
            created = await self.client.create(secret)
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
        return dataclasses.replace(material, managed=True, version=_resource_version(created))

    async def replace(self, material: CaMaterial, *, previous: CaMaterial) -> CaMaterial | None:
        """A merge patch of the data carrying `previous.version` as resourceVersion: the API
        server refuses it (409 Conflict) if another replica wrote the Secret since."""
        from lightkube.resources.core_v1 import Secret
        from lightkube.types import PatchType

        if not previous.managed or not previous.version:
            raise ValueError(f"only a loaded Secret {self.namespace}/{self.name} is replaced")
        patch = {"metadata": {"resourceVersion": previous.version}, "data": _encoded(material)}
        try:
            replaced = await self.client.patch(
                Secret, self.name, patch, namespace=self.namespace, patch_type=PatchType.MERGE
            )
        except Exception as exc:
            if status_code(exc) not in (404, 409):
                raise
            log.info("Secret %s/%s changed meanwhile (%s); not replaced",
                     self.namespace, self.name, status_code(exc))  # fmt: skip
            return None
        return dataclasses.replace(material, managed=True, version=_resource_version(replaced))

    async def _get(self, name: str) -> Any:
        from lightkube.resources.core_v1 import Secret

        try:
            return await self.client.get(Secret, name, namespace=self.namespace)
        except Exception as exc:
            if status_code(exc) == 404:
                return None
            raise


def _encoded(material: CaMaterial) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in material.as_files().items()}


def _decoded(secret: Any) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _resource_version(obj: Any) -> str:
    metadata = getattr(obj, "metadata", None)
    return str(getattr(metadata, "resourceVersion", None) or "")


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a lightkube/httpx error, whichever class carries it."""
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None
