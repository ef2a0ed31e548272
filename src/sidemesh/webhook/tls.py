"""Serving TLS for the webhook, with certificate hot-reload.

The serving certificate is rotated by whoever writes the files (cert-manager, a Kubernetes
Secret volume, our own CA). Reloading means loading the new pair into the SAME SSLContext
the listening socket uses: OpenSSL copies the certificate into each connection when it is
created, so new handshakes get the new pair while established connections keep theirs, and
nothing has to be restarted or dropped.

One trap: `SSLContext.load_cert_chain` is not atomic. If the new certificate loads and the
key then fails (a half-written or mismatched pair), the context is left holding the new
certificate with the old key and every later handshake fails. So a candidate pair is read
once, checked on a scratch context, and only then loaded into the live one from the very same
bytes (an in-memory file where the platform has one). A bad pair is logged once per distinct
file state and retried every tick; the old pair keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

RELOAD_INTERVAL_SECONDS: Final = 1.0

# (mtime_ns, size, inode) of the certificate file and of the key file
Fingerprint = tuple[tuple[int, int, int], tuple[int, int, int]]


def build_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS ≥ 1.2 server context serving the given pair; raises OSError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return context


class CertificateReloader:
    """Polls the certificate and key files and reloads `context` when they change."""

    def __init__(
        self,
        context: ssl.SSLContext,
        cert_file: Path,
        key_file: Path,
        *,
        interval: float = RELOAD_INTERVAL_SECONDS,
    ) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.interval = interval
        self._loaded = self._fingerprint()  # the pair the context was built from
        self._reported: Fingerprint | None = None  # the last bad state we logged

    async def run(self) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # a reloader bug must not stop future reloads
                log.exception("TLS certificate reload check failed")

    def check(self) -> bool:
        """Reload if the files changed since the last good load; True when a new pair is live."""
        current = self._fingerprint()
        if current is None or current == self._loaded:
            return False
        try:
            cert_pem = self.cert_file.read_bytes()
            key_pem = self.key_file.read_bytes()
            with _pem_paths(cert_pem, key_pem) as (cert_path, key_path):
                scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                scratch.load_cert_chain(certfile=cert_path, keyfile=key_path)
                self.context.load_cert_chain(certfile=cert_path, keyfile=key_path)
        except OSError as exc:  # ssl.SSLError is an OSError
            if current != self._reported:
                self._reported = current
                # The reason comes from OpenSSL or the OS; it never contains key material.
                log.warning(
                    "not reloading TLS certificate %s / key %s, keeping the current pair: %s",
                    self.cert_file,
                    self.key_file,
                    _describe(exc),
                )
            return False
        self._loaded = current
        self._reported = None
        log.info("reloaded TLS certificate %s", self.cert_file)
        return True

    def _fingerprint(self) -> Fingerprint | None:
        try:
            cert = os.stat(self.cert_file)
            key = os.stat(self.key_file)
        except OSError:
            return None  # mid-rotation (a Secret volume swaps a symlink); look again next tick
        return (
            (cert.st_mtime_ns, cert.st_size, cert.st_ino),
            (key.st_mtime_ns, key.st_size, key.st_ino),
        )


@contextlib.contextmanager
def _pem_paths(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Paths from which OpenSSL reads exactly these bytes, gone when the block ends.

    Anonymous in-memory files keep the key off the disk on Linux; elsewhere (or if memfd is
    refused) a private temporary directory holds the copies for the moment of loading.
    """
    descriptors = _memory_files(cert_pem, key_pem)
    if descriptors is not None:
        try:
            yield f"/proc/self/fd/{descriptors[0]}", f"/proc/self/fd/{descriptors[1]}"
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        return
    with tempfile.TemporaryDirectory(prefix="sidemesh-tls-") as directory:
        paths = (os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key"))
        for path, data in zip(paths, (cert_pem, key_pem), strict=True):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        yield paths


def _memory_files(*contents: bytes) -> list[int] | None:
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        return None
    descriptors: list[int] = []
    try:
        for data in contents:
            descriptor = os.memfd_create("sidemesh-tls", os.MFD_CLOEXEC)
            descriptors.append(descriptor)
            written = 0
            while written < len(data):
                written += os.write(descriptor, data[written:])
    except OSError:
        for descriptor in descriptors:
            os.close(descriptor)
        return None
    return descriptors


def _describe(exc: OSError) -> str:
    # SSLError texts are OpenSSL reason codes; OSError texts name the file. Neither holds
    # certificate or key contents.
    return str(exc) or exc.__class__.__name__
