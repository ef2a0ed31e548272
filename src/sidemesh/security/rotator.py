"""The control plane's root rotation task: at start and then every `check_interval`, read the
CA material from its store and

* follow it if another replica renewed the root (or the store holds other roots to trust);
* renew the root when it is due (`root_rotation.py`) and store that with the version read as a
  precondition, so of several replicas exactly one writes; the others' writes are refused and
  they follow the winner's material instead;
* leave a plugged-in CA (`cacerts`) alone: only its operator changes it.

Every replica runs it; whenever the CA in use changes (a new root, a different set of trusted
roots, such as an expired old root dropped) it calls `on_change` with the new CA. The clock and
the sleep are injected, so tests drive hours of checks instantly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from sidemesh.security.ca import CertificateAuthority, fingerprint
from sidemesh.security.root_rotation import (
    RotationPolicy,
    renew_self_signed_root,
    rotation_due,
    same_trust,
    without_expired_roots,
)
from sidemesh.security.store import CaMaterial, CaStore

log = logging.getLogger("sidemesh.security.rotator")

Clock = Callable[[], datetime.datetime]
Sleep = Callable[[float], Awaitable[None]]
Outcome = Literal["rotated", "reloaded", "current", "plugged-in", "missing"]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class RootRotator:
    def __init__(
        self,
        store: CaStore,
        *,
        ca: CertificateAuthority,
        on_change: Callable[[CertificateAuthority], None],
        policy: RotationPolicy | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.ca = ca  # the CA in use
        self.on_change = on_change
        self.policy = policy or RotationPolicy()
        self.clock = clock
        self.sleep = sleep
        self.rotations = 0  # renewals this replica wrote

    async def run(self) -> None:
        """Check now and every `check_interval`, until cancelled; a failed check is retried at
        the next one."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("root certificate check failed: %s: %s", type(exc).__name__, exc)
            await self.sleep(self.policy.check_interval.total_seconds())

    async def check(self) -> Outcome:
        """One check. "rotated": this replica renewed the root; "reloaded": the CA in use
        changed to what the store holds (another replica's renewal, an expired root dropped);
        "current": nothing to do; "plugged-in", "missing": nothing this task may do."""
        stored = await self.store.load()
        if stored is None:
            log.warning("the CA material is gone from its store; still using %r", self.ca)
            return "missing"
        if not stored.managed:
            log.debug("the CA is plugged in (cacerts): its root is never renewed here")
            return "plugged-in"
        now = self.clock()
        current = self._from(stored, now)
        reason = rotation_due(current, now=now, grace=self.policy.grace)
        if reason is None:
            return "reloaded" if self._use(current) else "current"
        log.info("renewing the self-signed root (same key and subject): %s", reason)
        renewed = renew_self_signed_root(current, now=now, validity=self.policy.validity)
        written = await self.store.replace(CaMaterial.from_ca(renewed), previous=stored)
        if written is None:  # another replica renewed it first: follow theirs
            winner = await self.store.load()
            if winner is None or not winner.managed:
                return "missing" if winner is None else "plugged-in"
            self._use(self._from(winner, now))
            return "reloaded"
        self.rotations += 1
        log.info("renewed the root: %s, valid until %s; trusting %d roots",
                 fingerprint(renewed.root), renewed.root.not_valid_after_utc,
                 len(renewed.bundle.roots))  # fmt: skip
        self._use(renewed)
        return "rotated"

    def _from(self, material: CaMaterial, now: datetime.datetime) -> CertificateAuthority:
        ca = material.to_ca(self.ca.trust_domain)
        ca = dataclasses.replace(ca, max_ttl=self.ca.max_ttl, default_ttl=self.ca.default_ttl)
        return without_expired_roots(ca, now=now)

    def _use(self, ca: CertificateAuthority) -> bool:
        """Switch to `ca` if it differs from the CA in use; whether it did."""
        if same_trust(ca, self.ca):
            return False
        if ca.signing_cert != self.ca.signing_cert:
            log.info("now signing with root %s", fingerprint(ca.root))
        self.ca = ca
        self.on_change(ca)
        return True
