"""The root rotator against its stores: it renews the control plane's own root once it is due,
exactly one replica writes (resourceVersion / file digest as the precondition), the others
follow, and a plugged-in CA is never touched."""

from __future__ import annotations

import base64
import dataclasses
import datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cryptography import x509
from security_testkit import NOW, FakeClock, api_server, kube_client

from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.root_rotation import renew_self_signed_root
from sidemesh.security.rotator import RootRotator
from sidemesh.security.store import (
    CA_KEY,
    SELF_SIGNED_MARKER,
    CaMaterial,
    CaStore,
    DirectoryCaStore,
    KubernetesSecretStore,
)

DAY = datetime.timedelta(days=1)
SECRETS = "v1/secrets"
DUE = NOW + 9 * DAY  # a ten-day root is due from day 8


def short_lived_ca() -> CertificateAuthority:
    return CertificateAuthority.self_signed(trust_domain="td", now=NOW, validity=10 * DAY)


def rotator_for(
    store: CaStore, ca: CertificateAuthority, clock: FakeClock
) -> tuple[RootRotator, list[CertificateAuthority]]:
    """A rotator, and the CAs it switched to (its `on_change` calls)."""
    changes: list[CertificateAuthority] = []
    return RootRotator(store, ca=ca, on_change=changes.append, clock=clock), changes


def secret_roots(api: Any, name: str = "istio-ca-secret") -> list[x509.Certificate]:
    stored = api.stored(SECRETS, "istio-system", name)
    return x509.load_pem_x509_certificates(base64.b64decode(stored["data"]["root-cert.pem"]))


async def test_due_root_is_renewed_in_the_secret_once() -> None:
    async with api_server() as api:
        store = KubernetesSecretStore(kube_client(api))
        old = short_lived_ca()
        created = await store.create(CaMaterial.from_ca(old))
        version = api.stored(SECRETS, "istio-system", "istio-ca-secret")["metadata"]
        rotator, changes = rotator_for(store, old, FakeClock(NOW + 7 * DAY))
        assert await rotator.check() == "current"
        assert not [r for r in api.writes() if r.method == "PATCH"]

        rotator.clock = FakeClock(DUE)  # the same replica, two days on
        assert await rotator.check() == "rotated"
        new = rotator.ca
        assert [c.root for c in changes] == [new.root]
        assert new.root != old.root and new.root.public_key() == old.root.public_key()
        stored = api.stored(SECRETS, "istio-system", "istio-ca-secret")
        assert stored["metadata"]["resourceVersion"] != version["resourceVersion"]
        assert base64.b64decode(stored["data"][CA_KEY]) == created.ca_key  # the same key
        assert secret_roots(api) == [old.root, new.root]
        assert stored["type"] == "istio.io/ca-root"
        for kube_version in ("1.28", kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(stored, kube_version, strict=True)

        assert await rotator.check() == "current"  # renewed: not due again
        assert len([r for r in api.writes() if r.method == "PATCH"]) == 1


async def test_a_stale_replace_loses_and_the_loser_follows_the_winner() -> None:
    async with api_server() as api:
        store_a = KubernetesSecretStore(kube_client(api))
        store_b = KubernetesSecretStore(kube_client(api))
        old = short_lived_ca()
        await store_a.create(CaMaterial.from_ca(old))
        read_by_b = await store_b.load()
        assert read_by_b is not None

        replica_a, _ = rotator_for(store_a, old, FakeClock(DUE))
        assert await replica_a.check() == "rotated"
        winner = replica_a.ca.root

        # B renews from what it read before A wrote: the API server refuses it (409).
        mine = renew_self_signed_root(read_by_b.to_ca("td"), now=DUE)
        assert await store_b.replace(CaMaterial.from_ca(mine), previous=read_by_b) is None
        assert secret_roots(api) == [old.root, winner]

        # B's own check finds A's root and follows it, without writing.
        replica_b, b_changes = rotator_for(store_b, old, FakeClock(DUE))
        patches = len([r for r in api.writes() if r.method == "PATCH"])
        assert await replica_b.check() == "reloaded"
        assert replica_b.ca.root == winner and replica_b.ca.bundle == replica_a.ca.bundle
        assert [c.root for c in b_changes] == [winner]
        assert len([r for r in api.writes() if r.method == "PATCH"]) == patches


class StaleOnce:
    """A store whose first load returns what it held before another replica's write."""

    def __init__(self, store: CaStore, stale: CaMaterial) -> None:
        self.store, self.stale = store, stale

    async def load(self) -> CaMaterial | None:
        stale, self.stale = self.stale, None  # type: ignore[assignment]
        return stale if stale is not None else await self.store.load()

    async def create(self, material: CaMaterial) -> CaMaterial:
        return await self.store.create(material)

    async def replace(self, material: CaMaterial, *, previous: CaMaterial) -> CaMaterial | None:
        return await self.store.replace(material, previous=previous)


async def test_replicas_renewing_at_once_write_one_root() -> None:
    async with api_server() as api:
        old = short_lived_ca()
        store_a = KubernetesSecretStore(kube_client(api))
        await store_a.create(CaMaterial.from_ca(old))
        before = await store_a.load()
        assert before is not None
        replica_a, _ = rotator_for(store_a, old, FakeClock(DUE))
        replica_b, b_changes = rotator_for(
            StaleOnce(KubernetesSecretStore(kube_client(api)), before), old, FakeClock(DUE)
        )
        assert await replica_a.check() == "rotated"
        assert await replica_b.check() == "reloaded"  # its write got 409: it read again
        refused = [r for r in api.writes() if r.method == "PATCH"]
        assert len(refused) == 2  # A's, and B's that was refused
        assert replica_b.ca.root == replica_a.ca.root
        assert [c.root for c in b_changes] == [replica_a.ca.root]
        assert secret_roots(api) == [old.root, replica_a.ca.root]
        assert replica_a.rotations == 1 and replica_b.rotations == 0


async def test_plugged_in_cacerts_is_never_renewed() -> None:
    async with api_server() as api:
        plugged = short_lived_ca()
        api.objects[api.resource("", "v1", "secrets"), "istio-system", "cacerts"] = {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": "istio-system"},
            "data": {k: base64.b64encode(v).decode()
                     for k, v in CaMaterial.from_ca(plugged).as_files().items()},
        }  # fmt: skip
        store = KubernetesSecretStore(kube_client(api))
        loaded = await store.load()
        assert loaded is not None and not loaded.managed
        almost_expired = FakeClock(NOW + 10 * DAY - DAY / 24)
        rotator, changes = rotator_for(store, plugged, almost_expired)
        assert await rotator.check() == "plugged-in"
        assert api.writes() == []
        assert rotator.ca is plugged and changes == []
        with pytest.raises(ValueError, match="only a loaded Secret"):
            await store.replace(CaMaterial.from_ca(plugged), previous=loaded)


async def test_an_expired_old_root_leaves_the_bundle() -> None:
    async with api_server() as api:
        store = KubernetesSecretStore(kube_client(api))
        old = short_lived_ca()
        await store.create(CaMaterial.from_ca(old))
        clock = FakeClock(DUE)
        rotator, changes = rotator_for(store, old, clock)
        assert await rotator.check() == "rotated"
        assert len(rotator.ca.bundle.roots) == 2
        clock.now = NOW + 10 * DAY + DAY / 24  # the old root has expired
        assert await rotator.check() == "reloaded"
        assert rotator.ca.bundle.roots == (rotator.ca.root,)
        assert len(changes) == 2


# --- a CA directory (single-host discovery, --ca-dir) ----------------------------------------


async def test_directory_created_by_discovery_is_renewed_in_place(tmp_path: Path) -> None:
    store = DirectoryCaStore(tmp_path / "ca")
    old = short_lived_ca()
    created = await store.create(CaMaterial.from_ca(old))
    assert (tmp_path / "ca" / SELF_SIGNED_MARKER).exists()
    rotator, changes = rotator_for(store, old, FakeClock(DUE))
    assert await rotator.check() == "rotated"
    assert changes == [rotator.ca]
    key_file = tmp_path / "ca" / CA_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_bytes() == created.ca_key
    reloaded = await DirectoryCaStore(tmp_path / "ca").load()
    assert reloaded is not None and reloaded.managed
    ca = reloaded.to_ca("td")
    assert ca.root == rotator.ca.root != old.root
    assert ca.bundle.roots == (old.root, rotator.ca.root)
    left = {p.name for p in (tmp_path / "ca").iterdir()}
    assert left == {*CaMaterial.from_ca(old).as_files(), SELF_SIGNED_MARKER}  # no temporaries


async def test_directory_replace_with_a_stale_version_loses(tmp_path: Path) -> None:
    store = DirectoryCaStore(tmp_path / "ca")
    old = short_lived_ca()
    first = await store.create(CaMaterial.from_ca(old))
    renewed = renew_self_signed_root(old, now=DUE)
    written = await store.replace(CaMaterial.from_ca(renewed), previous=first)
    assert written is not None and written.version != first.version
    again = renew_self_signed_root(old, now=DUE + DAY)
    assert await store.replace(CaMaterial.from_ca(again), previous=first) is None
    loaded = await store.load()
    assert loaded is not None and loaded.to_ca("td").root == renewed.root


async def test_directory_without_the_marker_is_plugged_in(tmp_path: Path) -> None:
    """Like the local runtime's read-only /etc/cacerts: written by someone else."""
    directory = tmp_path / "cacerts"
    directory.mkdir()
    plugged = short_lived_ca()
    for name, data in CaMaterial.from_ca(plugged).as_files().items():
        (directory / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    rotator, changes = rotator_for(DirectoryCaStore(directory), plugged, FakeClock(DUE))
    assert await rotator.check() == "plugged-in"
    assert changes == []
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # not even a lock file
    loaded = await DirectoryCaStore(directory).load()
    assert loaded is not None
    with pytest.raises(ValueError, match="never replaced"):
        await DirectoryCaStore(directory).replace(
            dataclasses.replace(loaded, managed=True), previous=loaded
        )
