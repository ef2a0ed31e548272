"""When and how the control plane renews its self-signed root, as istiod does. Pure: callers
pass `now`.

The root is due once less than `grace` (a fraction, 20% by default) of its lifetime is left.
It is renewed by re-issuing it with the same key and subject (a new serial number and
validity): every certificate the old root signed names the same issuer and verifies under the
same key, so it verifies under the new root, and what the new root signs verifies under the old
one. No period of signing with both is needed. The published trust bundle holds both roots
until the old one expires, so every workload trusts the new root before the old one stops
verifying anything, and a verifier that matches the root exactly finds either.

Only the control plane's own root is renewed: a plugged-in CA (`cacerts`) is the operator's
(the store says which it is), and a CA that signs with an intermediate has no root to renew
here.
"""

from __future__ import annotations

import dataclasses
import datetime

from sidemesh.security import certificates
from sidemesh.security.ca import CLOCK_SKEW, CertificateAuthority

DEFAULT_CHECK_INTERVAL = datetime.timedelta(hours=1)  # istiod's default check interval
DEFAULT_GRACE = 0.2  # istiod's default grace period: the last 20% of the root's lifetime


@dataclasses.dataclass(frozen=True)
class RotationPolicy:
    check_interval: datetime.timedelta = DEFAULT_CHECK_INTERVAL
    grace: float = DEFAULT_GRACE
    # How long a renewed root is valid; None: as long as the root it replaces.
    validity: datetime.timedelta | None = None

    def __post_init__(self) -> None:
        if not 0 < self.grace < 1:
            raise ValueError(f"the grace fraction must be between 0 and 1, got {self.grace}")
        if self.check_interval <= datetime.timedelta(0):
            raise ValueError(f"the check interval must be positive, got {self.check_interval}")
        if self.validity is not None and self.validity <= datetime.timedelta(0):
            raise ValueError(f"the root validity must be positive, got {self.validity}")


def is_self_signed_root(ca: CertificateAuthority) -> bool:
    """The CA signs with its root itself (not with an intermediate)."""
    root = ca.signing_cert
    return ca.chain == (root,) and root.subject == root.issuer


def rotation_due(
    ca: CertificateAuthority, *, now: datetime.datetime, grace: float = DEFAULT_GRACE
) -> str | None:
    """Why the CA's self-signed root should be renewed now, or None while it need not be."""
    if not is_self_signed_root(ca):
        return None
    root = ca.signing_cert
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    remaining = root.not_valid_after_utc - now
    if remaining >= lifetime * grace:
        return None
    if remaining <= datetime.timedelta(0):
        return f"the root expired at {_moment(root.not_valid_after_utc)}"
    return (
        f"the root expires at {_moment(root.not_valid_after_utc)}, within the last "
        f"{grace:.0%} of its lifetime"
    )


def renew_self_signed_root(
    ca: CertificateAuthority,
    *,
    now: datetime.datetime,
    validity: datetime.timedelta | None = None,
) -> CertificateAuthority:
    """The same CA with its root re-issued (same key and subject) for `validity` (default: the
    old root's lifetime) from `now`; it signs with the new root and trusts both."""
    if not is_self_signed_root(ca):
        raise ValueError(f"{ca!r} does not sign with a self-signed root; nothing to renew")
    old = ca.signing_cert
    if validity is None:  # the old root was backdated by CLOCK_SKEW too
        span = old.not_valid_after_utc - old.not_valid_before_utc
        validity = span - CLOCK_SKEW if span > 2 * CLOCK_SKEW else span
    new = certificates.reissued_self_signed(
        old, ca.signing_key, now=now, backdate=CLOCK_SKEW, lifetime=validity
    )
    return dataclasses.replace(
        ca, signing_cert=new, chain=(new,), bundle=ca.bundle.without_expired(now).with_root(new)
    )


def without_expired_roots(
    ca: CertificateAuthority, *, now: datetime.datetime
) -> CertificateAuthority:
    """The CA trusting only roots still valid at `now` (and always its own)."""
    bundle = ca.bundle.without_expired(now).with_root(ca.root)
    return ca if bundle == ca.bundle else dataclasses.replace(ca, bundle=bundle)


def same_trust(a: CertificateAuthority, b: CertificateAuthority) -> bool:
    """Both sign with the same certificate and trust the same roots."""
    return a.signing_cert == b.signing_cert and a.bundle == b.bundle


def _moment(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
