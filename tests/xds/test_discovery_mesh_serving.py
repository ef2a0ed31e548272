"""`sidemesh discovery` serving the whole single-host control plane: webhook, xDS, CA and
monitoring from one process, started from files, stopped by SIGTERM."""

from __future__ import annotations

import datetime
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from xds_testkit import csr_for, free_port

from sidemesh.security import protocol
from sidemesh.security.authn import issue_local_token

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready")


def test_discovery_serves_webhook_xds_and_ca_from_files(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    registry = tmp_path / "registry.yaml"
    registry.write_text(SERVICE)
    tokens = tmp_path / "tokens.yaml"
    token = issue_local_token(tokens, namespace="demo", service_account="web")
    ports = {name: free_port() for name in ("webhook", "xds", "tls", "monitoring")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sidemesh.cli.main", "discovery",
         "--host", "127.0.0.1", "--port", str(ports["webhook"]),
         "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
         "--registry-file", str(registry), "--ca-dir", str(tmp_path / "ca"),
         "--token-file", str(tokens), "--xds-port", str(ports["xds"]),
         "--xds-tls-port", str(ports["tls"]), "--monitoring-port", str(ports["monitoring"])],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_ready(f"http://127.0.0.1:{ports['monitoring']}/ready", process)
        root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
        # The CA answers a CSR for the caller's own identity over TLS, verified by the root.
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        with grpc.secure_channel(
            f"127.0.0.1:{ports['tls']}",
            credentials,
            options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")],
        ) as channel:
            call = channel.unary_unary(
                protocol.METHOD,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=protocol.CertificateResponse.FromString,
            )
            response = call(
                protocol.CertificateRequest(
                    csr=csr_for("spiffe://cluster.local/ns/demo/sa/web"), validity_duration=3600
                ),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
        leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            "spiffe://cluster.local/ns/demo/sa/web"
        ]
        # The monitoring port counts the certificate it just issued.
        status, metrics = _get(f"http://127.0.0.1:{ports['monitoring']}/metrics")
        assert status == 200 and "citadel_server_success_cert_issuance_count 1" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_discovery_refuses_to_start_without_a_token_file(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "sidemesh.cli.main", "discovery",
         "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
         "--port", str(free_port()), "--registry-file", str(tmp_path),
         "--ca-dir", str(tmp_path / "ca"), "--xds-port", "0", "--xds-tls-port", "0",
         "--monitoring-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--token-file" in result.stderr
