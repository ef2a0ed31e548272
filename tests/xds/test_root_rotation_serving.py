"""The control plane follows a renewed root: the rotator (on a fake clock) renews it once, and
the server then signs CSRs with it, serves :15012 with a certificate it issued, and trusts the
old and the new root."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc import aio
from xds_testkit import csr_for

from sidemesh.security import protocol
from sidemesh.security.authn import LocalTokenAuthenticator, issue_local_token
from sidemesh.security.ca import CLOCK_SKEW, CertificateAuthority
from sidemesh.security.root_rotation import RotationPolicy, renew_self_signed_root
from sidemesh.security.rootcert import PublishedRoot
from sidemesh.security.rotator import RootRotator
from sidemesh.security.store import CaMaterial, DirectoryCaStore
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

DAY = datetime.timedelta(days=1)
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SERVICE_NAME = "istiod.istio-system.svc"


class Stop(Exception):
    """Ends the rotator's loop once the fake clock has run far enough."""


def control_plane(ca: CertificateAuthority, tmp_path: Path, **ports: int | None) -> tuple[
    ControlPlaneServer, str
]:  # fmt: skip
    """A control plane using `ca`, and a service-account token it accepts."""
    tokens = tmp_path / "tokens.json"
    token = issue_local_token(tokens, namespace="demo", service_account="web")
    config = ControlPlaneConfig(host="127.0.0.1", plaintext_port=None, instance_id="cp-rotate",
                                **{"tls_port": None, "monitoring_port": None, **ports})  # fmt: skip
    server = ControlPlaneServer(config=config, ca=ca, authenticator=LocalTokenAuthenticator(tokens))
    return server, token


async def test_rotator_renews_once_and_the_server_and_published_roots_follow(
    tmp_path: Path,
) -> None:
    old = CertificateAuthority.self_signed(trust_domain="cluster.local", now=START,
                                           validity=10 * DAY)  # fmt: skip
    store = DirectoryCaStore(tmp_path / "ca")
    await store.create(CaMaterial.from_ca(old))
    server, _ = control_plane(old, tmp_path)
    published = PublishedRoot(old.root_pem())
    seen: list[CertificateAuthority] = []

    def follow(ca: CertificateAuthority) -> None:
        seen.append(ca)
        server.use_ca(ca)
        published.update(ca.root_pem())

    now = [START]

    async def sleep(seconds: float) -> None:
        now[0] += datetime.timedelta(seconds=seconds)
        if now[0] > START + 14 * DAY:
            raise Stop

    every_six_hours = RotationPolicy(check_interval=datetime.timedelta(hours=6))
    rotator = RootRotator(store, ca=old, on_change=follow, clock=lambda: now[0], sleep=sleep,
                          policy=every_six_hours)  # fmt: skip
    with pytest.raises(Stop):
        await rotator.run()

    assert rotator.rotations == 1  # at day 8, and not again: the new root is due at day 16
    renewed, expired_dropped = seen  # the renewal, then the old root leaving at day 10
    assert renewed.bundle.roots == (old.root, renewed.root)
    assert renewed.root.serial_number != old.root.serial_number
    # Renewed at the first check past the grace point (day 8), backdated a minute.
    assert renewed.root.not_valid_before_utc == START + 8 * DAY - CLOCK_SKEW
    assert expired_dropped.bundle.roots == (renewed.root,)
    assert server.ca is expired_dropped and server.certificates is not None
    assert server.certificates.ca is expired_dropped
    assert published.pem == renewed.root_pem().removeprefix(old.root_pem())
    expiry = int(renewed.root.not_valid_after_utc.timestamp())
    assert f"citadel_server_root_cert_expiry_timestamp {expiry}" in server.render_metrics()


async def serving_certificate(port: int, trusted: x509.Certificate) -> x509.Certificate:
    """The certificate :15012 presents to a client that trusts only `trusted`."""
    context = ssl.create_default_context(
        cadata=trusted.public_bytes(serialization.Encoding.PEM).decode()
    )
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=SERVICE_NAME
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_running_server_signs_and_serves_from_the_renewed_root(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    # Issued nine and a half days ago for ten: half a day left, well inside the grace period.
    old = CertificateAuthority.self_signed(trust_domain="cluster.local",
                                           now=now - 9.5 * DAY, validity=10 * DAY)  # fmt: skip
    server, token = control_plane(old, tmp_path, tls_port=0)
    await server.start()
    port = server.ports["xds-tls"]
    try:
        before = await serving_certificate(port, old.root)
        assert before.not_valid_after_utc == old.root.not_valid_after_utc  # capped by the root

        new = renew_self_signed_root(old, now=now)
        server.use_ca(new)
        # The next connection gets a fresh serving certificate, issued by the new root (it
        # outlives the old root), which clients trusting either root accept.
        after = await serving_certificate(port, new.root)
        assert after.serial_number != before.serial_number
        assert after.not_valid_after_utc > old.root.not_valid_after_utc
        assert (await serving_certificate(port, old.root)).serial_number == after.serial_number
        trusted = server._tls_context().get_ca_certs(binary_form=True)
        assert [x509.load_der_x509_certificate(d) for d in trusted] == [old.root, new.root]

        chain = await create_certificate(port, new.root, token)
        assert x509.load_pem_x509_certificate(chain[-1].encode()) == new.root
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        leaf.verify_directly_issued_by(old.root)  # same key: the old root verifies it too
        assert leaf.not_valid_after_utc > old.root.not_valid_after_utc
    finally:
        await server.stop()


async def create_certificate(port: int, trusted: x509.Certificate, token: str) -> list[str]:
    """A workload's CSR over :15012, as the agent sends it; the chain returned."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trusted.public_bytes(serialization.Encoding.PEM)
    )
    options = [("grpc.ssl_target_name_override", SERVICE_NAME)]
    async with aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        create = channel.unary_unary(
            protocol.METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protocol.CertificateResponse.FromString,
        )
        request = protocol.CertificateRequest(csr=csr_for("spiffe://cluster.local/ns/demo/sa/web"))
        response = await create(request, metadata=[("authorization", f"Bearer {token}")])
    return list(response.cert_chain)
