"""Keeps a valid workload certificate: first one at startup, then renewal at a fraction of its
lifetime, with retry and capped exponential backoff. The old certificate stays in service until
a new one arrives; subscribers (the SDS server) are told about each new one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from sidemesh.agent.issuing import CaError, CertificateError, Issuer, WorkloadCertificate
from sidemesh.agent.metrics import AgentMetrics
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.agent.certificates")

Subscriber = Callable[[WorkloadCertificate], None]


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`; True when `stop` was set meanwhile (or already)."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return False
    return True


def write_certificate_files(directory: Path, certificate: WorkloadCertificate) -> None:
    """Istio's OUTPUT_CERTS layout: cert-chain.pem, key.pem (0600), root-cert.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "cert-chain.pem", certificate.chain_pem, 0o644)
    write_atomically(directory / "key.pem", certificate.key_pem, 0o600)
    write_atomically(directory / "root-cert.pem", certificate.root_pem, 0o644)


class CertificateManager:
    def __init__(
        self,
        *,
        client: Issuer,
        spiffe_id: str,
        root_cert: Path,
        ttl: float,
        renew_fraction: float,
        metrics: AgentMetrics,
        output_dir: Path | None = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._spiffe_id = spiffe_id
        self._root_cert = root_cert
        self._ttl = ttl
        self._renew_fraction = renew_fraction
        self._metrics = metrics
        self._output_dir = output_dir
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._subscribers: list[Subscriber] = []
        self.current: WorkloadCertificate | None = None
        self._received_at: float | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _read_root(self) -> bytes:
        try:
            root = self._root_cert.read_bytes()
        except OSError as exc:
            raise CaError(f"cannot read the mesh root {self._root_cert}: {exc.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in root:
            raise CaError(f"the mesh root {self._root_cert} holds no PEM certificate")
        return root

    async def _request(self) -> WorkloadCertificate:
        root = self._read_root()  # re-read each time: the root may rotate
        certificate = await self._client.issue(
            spiffe_id=self._spiffe_id, ttl_seconds=max(1, math.ceil(self._ttl)), root_pem=root
        )
        if certificate.not_after <= self._clock():
            raise CertificateError("the CA returned an already expired certificate")
        if self._spiffe_id not in certificate.uris:
            log.warning(
                "the CA's certificate names %s, not %s", list(certificate.uris), self._spiffe_id
            )
        return certificate

    def _install(self, certificate: WorkloadCertificate) -> None:
        self.current = certificate
        self._received_at = self._clock()
        self._metrics.cert_renewals += 1
        self._metrics.cert_expiry_timestamp = certificate.not_after
        if self._output_dir is not None:
            try:
                write_certificate_files(self._output_dir, certificate)
            except OSError as exc:
                log.error("cannot write certificates to %s: %s", self._output_dir, exc)
        log.info(
            "workload certificate for %s: serial %x, valid for %.0fs",
            self._spiffe_id,
            certificate.serial,
            certificate.not_after - self._clock(),
        )
        for subscriber in self._subscribers:
            subscriber(certificate)

    def _retry_delay(self, backoff: float) -> float:
        """The backoff, shortened while the certificate in service is about to expire."""
        if self.current is None:
            return backoff
        remaining = self.current.not_after - self._clock()
        return max(0.1, min(backoff, remaining / 4))

    async def obtain(self, stop: asyncio.Event) -> bool:
        """Get a new certificate, retrying until one arrives (True) or `stop` is set (False)."""
        backoff = self._initial_backoff
        while not stop.is_set():
            try:
                certificate = await self._request()
            except (CaError, CertificateError) as exc:
                self._metrics.cert_renewal_failures += 1
                delay = self._retry_delay(backoff)
                log.warning("certificate request failed, retrying in %.1fs: %s", delay, exc)
                if await sleep_unless(stop, delay):
                    return False
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self._install(certificate)
            return True
        return False

    async def keep_renewed(self, stop: asyncio.Event) -> None:
        """Renew the current certificate at `renew_fraction` of its lifetime, until `stop`."""
        while not stop.is_set():
            current = self.current
            if current is not None:
                renew_at = current.renew_at(self._renew_fraction, received_at=self._received_at)
                delay = renew_at - self._clock()
                if await sleep_unless(stop, delay):
                    return
            if not await self.obtain(stop):
                return
