"""`sidemesh discovery` over real HTTPS: serves reviews, rotates its certificate without dropping
established connections, and exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from webhook_testkit import Authority, make_review, replace_file, serial_of

STARTUP_TIMEOUT = 30.0
ROTATION_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def new_connection_serial(port: int, client: ssl.SSLContext) -> int:
    """The serial of the certificate a brand-new TLS connection is given."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket,
    ):
        der = tls_socket.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


def connection_serial(response: httpx.Response) -> int:
    """The serial of the certificate on the connection that carried `response`."""
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return serial_of(ssl_object.getpeercert(True))  # the raw _ssl object: positional only


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Authority, Path]]:
    authority = Authority.create()
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    authority.issue(cert_file, key_file)
    port = free_port()
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-c", "from sidemesh.cli.main import main; main()", "discovery",
                "--host", "127.0.0.1", "--port", str(port),
                "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process, port, authority, tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def wait_ready(process: subprocess.Popen[bytes], client: httpx.Client) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during startup"
        try:
            if client.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("server not ready in time")


def wait_for_log(log_file: Path, text: str) -> None:
    deadline = time.monotonic() + ROTATION_TIMEOUT
    while text not in log_file.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.1)


def test_serves_rotates_and_stops_cleanly(
    server: tuple[subprocess.Popen[bytes], int, Authority, Path],
) -> None:
    process, port, authority, directory = server
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    trust = ssl.create_default_context(cadata=authority.pem().decode())
    body = orjson.dumps(make_review(uid="https-uid"))
    headers = {"content-type": "application/json"}

    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
        wait_ready(process, client)
        first = client.post("/inject", content=body, headers=headers)
        assert first.status_code == 200
        answer = first.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["response"]["uid"] == "https-uid"
        assert isinstance(answer["response"]["allowed"], bool)
        original = connection_serial(first)

        # A half-written certificate is ignored: the server keeps serving the old one. Wait
        # for the reloader to have looked at it (its warning), not for a guessed time.
        replace_file(cert_file, cert_file.read_bytes()[:100])
        wait_for_log(directory / "server.log", "not reloading TLS certificate")
        assert new_connection_serial(port, trust) == original
        assert client.get("/ready").status_code == 200

        rotated = authority.issue(cert_file, key_file)
        deadline = time.monotonic() + ROTATION_TIMEOUT
        while new_connection_serial(port, trust) != rotated:
            assert time.monotonic() < deadline, "rotated certificate never served"
            # meanwhile the established keep-alive connection keeps working, on the old pair
            kept = client.post("/inject", content=body, headers=headers)
            assert kept.status_code == 200
            assert connection_serial(kept) == original
            time.sleep(0.2)
        kept = client.post("/inject", content=body, headers=headers)
        assert kept.status_code == 200 and connection_serial(kept) == original

        metrics = client.get("/metrics").text
        assert "sidecar_injection_requests_total" in metrics

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    log = (directory / "server.log").read_text()
    assert f"revision=default port={port}" in log
    assert "reloaded TLS certificate" in log
    assert "PRIVATE KEY" not in log
