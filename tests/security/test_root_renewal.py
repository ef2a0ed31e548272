"""Renewing the self-signed root, pure: when it is due, and that the renewed root (same key and
subject) and the old one each verify what the other signed."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from security_testkit import NOW, make_csr

from sidemesh.security.ca import CLOCK_SKEW, CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.security.root_rotation import (
    RotationPolicy,
    renew_self_signed_root,
    rotation_due,
    without_expired_roots,
)
from sidemesh.security.store import CaMaterial

DAY = datetime.timedelta(days=1)
IDENTITY = SpiffeId("td", "demo", "web")


def short_lived_ca() -> CertificateAuthority:
    """A root valid for ten days from NOW: due for renewal from day 8 (the last 20%)."""
    return CertificateAuthority.self_signed(trust_domain="td", now=NOW, validity=10 * DAY)


def leaf_of(ca: CertificateAuthority, at: datetime.datetime) -> x509.Certificate:
    chain = ca.sign_csr(make_csr(IDENTITY.uri), identity=IDENTITY, now=at)
    return x509.load_pem_x509_certificate(chain[0].encode())


def verified_chain(
    leaf: x509.Certificate, root: x509.Certificate, at: datetime.datetime
) -> list[x509.Certificate]:
    verifier = PolicyBuilder().store(Store([root])).time(at).build_client_verifier()
    return verifier.verify(leaf, []).chain


@pytest.mark.parametrize(
    ("moment", "due"),
    [
        (NOW, False),
        (NOW + 7 * DAY, False),
        (NOW + 8 * DAY - datetime.timedelta(minutes=5), False),  # just before the grace point
        (NOW + 8 * DAY + datetime.timedelta(minutes=5), True),  # just after it
        (NOW + 9 * DAY, True),
        (NOW + 11 * DAY, True),  # already expired: renewing still helps
    ],
)
def test_due_only_within_the_grace_fraction_of_the_lifetime(
    moment: datetime.datetime, due: bool
) -> None:
    reason = rotation_due(short_lived_ca(), now=moment, grace=0.2)
    assert (reason is not None) == due
    if due:
        assert reason is not None and "2026-01-11 00:00 UTC" in reason


def test_the_grace_fraction_moves_the_point() -> None:
    ca = short_lived_ca()
    assert rotation_due(ca, now=NOW + 6 * DAY, grace=0.5) is not None
    assert rotation_due(ca, now=NOW + 6 * DAY, grace=0.2) is None


def test_renewed_root_keeps_key_subject_and_extensions() -> None:
    old = short_lived_ca()
    at = NOW + 9 * DAY
    new = renew_self_signed_root(old, now=at)
    assert new.root.subject == old.root.subject == new.root.issuer
    assert new.root.public_key() == old.root.public_key()
    assert new.signing_key is old.signing_key
    assert list(new.root.extensions) == list(old.root.extensions)
    assert new.root.serial_number != old.root.serial_number
    assert new.root.not_valid_before_utc == at - CLOCK_SKEW
    assert new.root.not_valid_after_utc == at + 10 * DAY  # as long as the old one by default
    assert new.chain == (new.root,) and new.signing_cert == new.root
    assert rotation_due(new, now=at, grace=0.2) is None
    explicit = renew_self_signed_root(old, now=at, validity=30 * DAY)
    assert explicit.root.not_valid_after_utc == at + 30 * DAY


def test_leaf_signed_before_renewal_verifies_under_the_new_root() -> None:
    old = short_lived_ca()
    at = NOW + 9 * DAY
    leaf = leaf_of(old, at - datetime.timedelta(hours=1))
    new = renew_self_signed_root(old, now=at)
    assert verified_chain(leaf, new.root, at) == [leaf, new.root]
    # The check can fail: a root with the same subject but another key does not verify it.
    stranger = short_lived_ca()
    with pytest.raises(VerificationError):
        verified_chain(leaf, stranger.root, at)


def test_leaf_signed_after_renewal_verifies_under_the_old_root() -> None:
    old = short_lived_ca()
    at = NOW + 9 * DAY
    new = renew_self_signed_root(old, now=at)
    chain = new.sign_csr(make_csr(IDENTITY.uri), identity=IDENTITY, now=at)
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert x509.load_pem_x509_certificate(chain[-1].encode()) == new.root  # ends in the new root
    assert verified_chain(leaf, old.root, at) == [leaf, old.root]
    assert verified_chain(leaf, new.root, at) == [leaf, new.root]


def test_bundle_holds_both_roots_then_drops_the_expired_one() -> None:
    old = short_lived_ca()
    new = renew_self_signed_root(old, now=NOW + 9 * DAY)
    assert new.bundle.roots == (old.root, new.root)
    assert new.root_pem() == old.root_pem() + new.root_pem()[len(old.root_pem()) :]
    assert without_expired_roots(new, now=NOW + 9 * DAY) is new
    later = without_expired_roots(new, now=NOW + 10 * DAY + datetime.timedelta(minutes=1))
    assert later.bundle.roots == (new.root,)
    assert later.signing_cert == new.root


def test_renewing_again_drops_a_root_that_has_expired() -> None:
    first = renew_self_signed_root(short_lived_ca(), now=NOW + 9 * DAY)
    second = renew_self_signed_root(first, now=NOW + 17 * DAY)
    assert second.bundle.roots == (first.root, second.root)


def test_renewed_material_round_trips_through_the_store_layout() -> None:
    new = renew_self_signed_root(short_lived_ca(), now=NOW + 9 * DAY)
    loaded = CaMaterial.from_ca(new).to_ca("td")
    assert loaded.root == new.root
    assert loaded.bundle == new.bundle


def test_a_ca_signing_with_an_intermediate_is_never_due_nor_renewed() -> None:
    root = short_lived_ca()
    intermediate = CertificateAuthority(
        "td", root.signing_key, root.signing_cert, (root.signing_cert, root.signing_cert),
        root.bundle,
    )  # fmt: skip
    assert rotation_due(intermediate, now=NOW + 9 * DAY, grace=0.2) is None
    with pytest.raises(ValueError, match="self-signed root"):
        renew_self_signed_root(intermediate, now=NOW + 9 * DAY)


@pytest.mark.parametrize(
    "settings",
    [{"grace": 0.0}, {"grace": 1.0}, {"check_interval": datetime.timedelta(0)},
     {"validity": -DAY}],
)  # fmt: skip
def test_policy_refuses_nonsense(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RotationPolicy(**settings)  # type: ignore[arg-type]
