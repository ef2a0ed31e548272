"""Asking the (fake) CA for certificates, and keeping one valid: retries, renewal, file output."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from cryptography import x509
from fake_control_plane import CONTROL_PLANE_DNS, FakeControlPlane

from sidemesh.agent.ca_client import CaClient, CaError, channel_options
from sidemesh.agent.certs import WorkloadCertificate, build_csr, generate_key
from sidemesh.agent.metrics import AgentMetrics
from sidemesh.agent.rotation import CertificateManager

SPIFFE_ID = "spiffe://cluster.local/ns/shop/sa/web"


def _client(
    plane: FakeControlPlane,
    tmp_path: Path,
    *,
    token: str | None = None,
    server_name: str = "127.0.0.1",
) -> CaClient:
    token_path = tmp_path / "token"
    token_path.write_text(plane.token if token is None else token)
    return CaClient(
        address=plane.address,
        server_name=server_name,
        token_path=token_path,
        cluster_id="Kubernetes",
        timeout=5,
    )


def _manager(
    plane: FakeControlPlane, tmp_path: Path, *, ttl: float = 60, **options: object
) -> tuple[CertificateManager, AgentMetrics]:
    metrics = AgentMetrics()
    manager = CertificateManager(
        client=_client(plane, tmp_path),
        spiffe_id=SPIFFE_ID,
        root_cert=plane.write_root(tmp_path / "root-cert.pem"),
        ttl=ttl,
        renew_fraction=0.5,
        metrics=metrics,
        initial_backoff=0.05,
        max_backoff=0.2,
        **options,  # type: ignore[arg-type]
    )
    return manager, metrics


async def test_the_ca_signs_our_csr(control_plane: FakeControlPlane, tmp_path: Path) -> None:
    key = generate_key()
    chain = await _client(control_plane, tmp_path).sign(
        build_csr(key, SPIFFE_ID), ttl_seconds=120, root_pem=control_plane.pki.root_pem
    )
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_ID]
    assert control_plane.requested_lifetimes == [120]


async def test_the_control_plane_may_be_verified_by_dns_name(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    client = _client(control_plane, tmp_path, server_name=CONTROL_PLANE_DNS)
    assert channel_options(client.address, CONTROL_PLANE_DNS) == [
        ("grpc.ssl_target_name_override", CONTROL_PLANE_DNS)
    ]
    await client.sign(
        build_csr(generate_key(), SPIFFE_ID), ttl_seconds=60, root_pem=control_plane.pki.root_pem
    )


@pytest.mark.parametrize(
    ("token", "server_name", "message"),
    [("wrong", "127.0.0.1", "UNAUTHENTICATED"), (None, "impostor.example", "UNAVAILABLE")],
)
async def test_refusals(
    control_plane: FakeControlPlane,
    tmp_path: Path,
    token: str | None,
    server_name: str,
    message: str,
) -> None:
    client = _client(control_plane, tmp_path, token=token, server_name=server_name)
    with pytest.raises(CaError, match=message):
        await client.sign(
            build_csr(generate_key(), SPIFFE_ID),
            ttl_seconds=60,
            root_pem=control_plane.pki.root_pem,
        )
    assert control_plane.issued == []


async def test_missing_token_is_an_error(control_plane: FakeControlPlane, tmp_path: Path) -> None:
    client = _client(control_plane, tmp_path)
    client.token_path.unlink()
    with pytest.raises(CaError, match="does not exist"):
        await client.sign(b"", ttl_seconds=60, root_pem=control_plane.pki.root_pem)


async def test_failures_are_retried_with_backoff(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    control_plane.fail_next_signings = 2
    manager, metrics = _manager(control_plane, tmp_path)
    assert await asyncio.wait_for(manager.obtain(asyncio.Event()), timeout=10)
    assert (metrics.cert_renewal_failures, metrics.cert_renewals) == (2, 1)
    assert manager.current is not None and manager.current.uris == (SPIFFE_ID,)


async def test_stop_ends_retrying(control_plane: FakeControlPlane, tmp_path: Path) -> None:
    control_plane.fail_next_signings = 1000
    manager, metrics = _manager(control_plane, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.obtain(stop))
    for _ in range(600):  # stop it while it is retrying: after a refused signing
        if metrics.cert_renewal_failures:
            break
        await asyncio.sleep(0.05)
    assert metrics.cert_renewal_failures >= 1
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) is False
    assert manager.current is None


async def test_renewal_keeps_the_old_certificate_until_the_new_one(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    manager, metrics = _manager(control_plane, tmp_path, ttl=2)
    received: list[WorkloadCertificate] = []
    manager.subscribe(received.append)
    stop = asyncio.Event()
    assert await manager.obtain(stop)
    first = manager.current
    control_plane.fail_next_signings = 1  # the first renewal attempt fails
    task = asyncio.create_task(manager.keep_renewed(stop))
    try:
        for _ in range(100):
            if len(received) >= 2:
                break
            assert manager.current is not None  # never without a certificate meanwhile
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert len(received) >= 2
    assert received[0] is first
    assert received[1].serial != first.serial  # type: ignore[union-attr]
    assert metrics.cert_renewal_failures == 1


async def test_certificates_written_only_when_asked(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    manager, _ = _manager(control_plane, tmp_path, output_dir=tmp_path / "out")
    assert await manager.obtain(asyncio.Event())
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["cert-chain.pem", "key.pem", "root-cert.pem"]
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    quiet_dir = tmp_path / "quiet"
    quiet_dir.mkdir()
    quiet, _ = _manager(control_plane, quiet_dir)
    assert await quiet.obtain(asyncio.Event())
    assert sorted(path.name for path in quiet_dir.iterdir()) == ["root-cert.pem", "token"]
