"""Helpers for the security tests: CSRs, a lightkube client on kmock, the in-memory API server
with resourceVersion, a clock the tests move."""

from __future__ import annotations

import contextlib
import datetime
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
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


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[Any]:
    """tests/kube's in-memory API server: kmock with resourceVersion and 409 on a stale one."""
    kube_tests = str(Path(__file__).resolve().parents[1] / "kube")
    if kube_tests not in sys.path:
        sys.path.append(kube_tests)
    from cluster_emulator import ApiServer

    async with ApiServer() as api, kmock.Server(api):
        yield api


@dataclass
class FakeClock:
    """`clock()` is `now`; `sleep(seconds)` moves it on at once."""

    now: datetime.datetime = NOW

    def __call__(self) -> datetime.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)
