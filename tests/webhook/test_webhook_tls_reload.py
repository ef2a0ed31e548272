"""CertificateReloader: rotation reaches new handshakes; a bad pair never breaks the context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

import pytest
from webhook_testkit import Authority, replace_file, serial_of

from sidemesh.webhook import tls
from sidemesh.webhook.tls import CertificateReloader, build_server_context


def served_serial(server: ssl.SSLContext, authority: Authority) -> int:
    """Handshake in memory against `server`; the serial of the certificate it presents."""
    client = ssl.create_default_context(cadata=authority.pem().decode())
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    server_end = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for end in (client_end, server_end):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    der = client_end.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


@pytest.fixture
def authority() -> Authority:
    return Authority.create()


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "tls.crt", tmp_path / "tls.key"


def test_context_is_tls12_or_newer(authority: Authority, pair: tuple[Path, Path]) -> None:
    authority.issue(*pair)
    context = build_server_context(*pair)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_unchanged_files_are_not_reloaded(authority: Authority, pair: tuple[Path, Path]) -> None:
    serial = authority.issue(*pair)
    context = build_server_context(*pair)
    reloader = CertificateReloader(context, *pair)
    assert reloader.check() is False
    assert served_serial(context, authority) == serial


def test_rotation_reaches_new_handshakes(authority: Authority, pair: tuple[Path, Path]) -> None:
    authority.issue(*pair)
    context = build_server_context(*pair)
    reloader = CertificateReloader(context, *pair)
    rotated = authority.issue(*pair)
    assert reloader.check() is True
    assert served_serial(context, authority) == rotated
    assert reloader.check() is False


def test_half_written_certificate_keeps_the_old_pair(
    authority: Authority, pair: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert_file, _ = pair
    original = authority.issue(*pair)
    context = build_server_context(*pair)
    reloader = CertificateReloader(context, *pair)
    good_cert = cert_file.read_bytes()
    replace_file(cert_file, good_cert[: len(good_cert) // 2])
    with caplog.at_level(logging.WARNING, logger="sidemesh.webhook.tls"):
        assert reloader.check() is False
        assert reloader.check() is False  # retried, but reported once
    assert served_serial(context, authority) == original
    assert len(caplog.records) == 1
    assert str(cert_file) in caplog.text
    assert "PRIVATE KEY" not in caplog.text and "CERTIFICATE-----" not in caplog.text


def test_mismatched_pair_does_not_break_the_live_context(
    authority: Authority, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    # OpenSSL would keep the new certificate with the old key if loaded straight into the
    # live context; every later handshake would then fail.
    cert_file, key_file = pair
    original = authority.issue(*pair)
    context = build_server_context(*pair)
    reloader = CertificateReloader(context, *pair)
    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    authority.issue(other_cert, other_key)
    replace_file(cert_file, other_cert.read_bytes())  # new certificate, old key
    assert reloader.check() is False
    assert served_serial(context, authority) == original
    replace_file(key_file, other_key.read_bytes())  # the key arrives: now it loads
    assert reloader.check() is True
    assert served_serial(context, authority) == serial_of_file(other_cert)


def test_missing_files_are_waited_for(authority: Authority, pair: tuple[Path, Path]) -> None:
    cert_file, _ = pair
    original = authority.issue(*pair)
    context = build_server_context(*pair)
    reloader = CertificateReloader(context, *pair)
    cert_file.unlink()
    assert reloader.check() is False
    assert served_serial(context, authority) == original
    rotated = authority.issue(*pair)
    assert reloader.check() is True
    assert served_serial(context, authority) == rotated


async def test_run_polls_until_cancelled(authority: Authority, pair: tuple[Path, Path]) -> None:
    authority.issue(*pair)
    context = build_server_context(*pair)
    task = asyncio.create_task(CertificateReloader(context, *pair, interval=0.01).run())
    rotated = authority.issue(*pair)
    try:
        async with asyncio.timeout(10):
            while served_serial(context, authority) != rotated:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_without_memfd_a_private_temporary_copy_is_used(
    authority: Authority, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "_memory_files", lambda *_contents: None)
    authority.issue(*pair)
    context = build_server_context(*pair)
    reloader = CertificateReloader(context, *pair)
    rotated = authority.issue(*pair)
    assert reloader.check() is True
    assert served_serial(context, authority) == rotated


def serial_of_file(cert_file: Path) -> int:
    return serial_of(ssl.PEM_cert_to_DER_cert(cert_file.read_text()))
