"""CA persistence: Kubernetes Secret (created once, reloaded, never overwritten) and a directory."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from security_testkit import NOW, kube_client

from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.store import (
    CaMaterial,
    DirectoryCaStore,
    KubernetesSecretStore,
    load_or_create_ca,
)

SECRETS = ("", "v1", "secrets")


async def test_secret_is_created_once_and_reloaded(kmock: Any) -> None:
    client = kube_client(kmock)
    first = await load_or_create_ca(KubernetesSecretStore(client), trust_domain="td", now=NOW)
    second = await load_or_create_ca(KubernetesSecretStore(client), trust_domain="td", now=NOW)
    assert first.root == second.root
    creates = [r for r in kmock if r.method == "POST" and r.resource == kmock.resource(*SECRETS)]
    assert len(creates) == 1
    stored = kmock.objects[kmock.resource(*SECRETS), "istio-system", "istio-ca-secret"]
    assert set(stored["data"]) == {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"}


async def test_losing_the_create_race_loads_the_winner(kmock: Any) -> None:
    client = kube_client(kmock)
    winner = CertificateAuthority.self_signed(trust_domain="td", now=NOW)
    store = KubernetesSecretStore(client)
    await store.create(CaMaterial.from_ca(winner))
    loser = CertificateAuthority.self_signed(trust_domain="td", now=NOW)
    kept = await store.create(CaMaterial.from_ca(loser))
    assert kept.to_ca("td").root == winner.root


async def test_plugged_in_cacerts_secret_wins(kmock: Any) -> None:
    plugged = CaMaterial.from_ca(CertificateAuthority.self_signed(trust_domain="td", now=NOW))
    kmock.objects[kmock.resource(*SECRETS), "istio-system", "cacerts"] = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "data": {k: base64.b64encode(v).decode() for k, v in plugged.as_files().items()},
    }  # fmt: skip
    ca = await load_or_create_ca(KubernetesSecretStore(kube_client(kmock)), trust_domain="td",
                                 now=NOW)  # fmt: skip
    assert ca.root == plugged.to_ca("td").root
    assert not [r for r in kmock if r.method == "POST"]


async def test_directory_store_creates_then_loads(tmp_path: Path) -> None:
    store = DirectoryCaStore(tmp_path / "ca")
    first = await load_or_create_ca(store, trust_domain="td", now=NOW)
    assert (tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o077 == 0
    second = await load_or_create_ca(DirectoryCaStore(tmp_path / "ca"), trust_domain="td", now=NOW)
    assert first.root == second.root
    other = CaMaterial.from_ca(CertificateAuthority.self_signed(trust_domain="td", now=NOW))
    kept = await store.create(other)  # never overwrites
    assert kept.to_ca("td").root == first.root


def test_material_repr_hides_the_key() -> None:
    material = CaMaterial.from_ca(CertificateAuthority.self_signed(trust_domain="td", now=NOW))
    assert "PRIVATE" not in repr(material)
