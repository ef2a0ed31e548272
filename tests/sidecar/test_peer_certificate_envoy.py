"""The server side of an mTLS TCP connection reads its client's workload from the client's
certificate subject, in a real Envoy: `xds/telemetry.peer_certificate_filter()` (a
`set_filter_state` network filter running CEL after the handshake) in front of a TCP proxy, on
loopback, with a file access log printing the six filter state values it sets.

What the CA writes (`sign_csr(workload=...)`) comes back exactly; a certificate without the
unit, with another subject, or with a unit of the wrong shape gives `unknown` everywhere."""

from __future__ import annotations

import asyncio
import datetime
import importlib.resources
import json
import ssl
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from async_waits import eventually
from sidemesh.api.telemetry.peer import UNKNOWN, WorkloadMetadata
from sidemesh.api.telemetry.peer_certificate import (
    FIELDS,
    filter_state_key,
    parse_subject_unit,
    subject_unit,
)
from sidemesh.security import certificates
from sidemesh.security.ca import CLOCK_SKEW, WORKLOAD_PROFILE, CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.envoy_json import socket_address, tcp_proxy, typed
from sidemesh.xds.telemetry import peer_certificate_filter

ENVOY = Path(str(importlib.resources.files("envoy") / "_bin" / "envoy"))
TRUST_DOMAIN = "cluster.local"
SERVER_NAME = "peer-certificate.test"
TIMEOUT = 30.0  # a loaded machine: Envoy's start, a handshake, a log flush (every 100 ms here)

pytestmark = [
    pytest.mark.skipif(not ENVOY.exists(), reason=f"no Envoy binary at {ENVOY}"),
    pytest.mark.asyncio(loop_scope="module"),
]

# Values with every character a label may hold besides letters and digits.
WORKLOAD = WorkloadMetadata(
    workload="web-v1.2_a", namespace="demo-1", app="my_app.web", version="1.0-rc.1",
    canonical_service="web_svc-x.y", canonical_revision="rev-1_2.3",
)  # fmt: skip
ALL_UNKNOWN = dict.fromkeys(FIELDS, UNKNOWN)


@dataclass
class Loopback:
    """An Envoy terminating mTLS in front of an echo server, and the files a client needs."""

    directory: Path
    ca: CertificateAuthority
    now: datetime.datetime
    port: int
    access_log: Path

    def client_files(self, name: str, leaf: Callable[[certificates.SigningKey], str]) -> Path:
        """A client certificate (`leaf(key)`, PEM) and its key, one file, for `ssl`."""
        key = certificates.generate_key()
        path = self.directory / f"client-{name}.pem"
        path.write_bytes(leaf(key).encode() + certificates.key_to_pem(key))
        return path

    def identity(self, name: str) -> SpiffeId:
        """Each client has its own service account: its access log line names it."""
        return SpiffeId(TRUST_DOMAIN, WORKLOAD.namespace, name)


def _bootstrap(directory: Path, echo_port: int, access_log: Path) -> dict[str, Any]:
    values = {name: f"%FILTER_STATE({filter_state_key(name)}:PLAIN)%" for name in FIELDS}
    logged = {**values, "peer": "%DOWNSTREAM_PEER_URI_SAN%", "subject": "%DOWNSTREAM_PEER_SUBJECT%"}
    proxy = tcp_proxy("echo")
    proxy["typed_config"]["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": typed("envoy.extensions.access_loggers.file.v3.FileAccessLog",
                              path=str(access_log), log_format={"json_format": logged}),
    }]  # fmt: skip
    tls = typed(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        require_client_certificate=True,
        common_tls_context={
            "tls_certificates": [{
                "certificate_chain": {"filename": str(directory / "server-chain.pem")},
                "private_key": {"filename": str(directory / "server-key.pem")},
            }],
            "validation_context": {"trusted_ca": {"filename": str(directory / "root.pem")}},
        },
    )  # fmt: skip
    listener = {
        "name": "peer_certificate",
        "address": socket_address("127.0.0.1", 0),
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
            "filters": [peer_certificate_filter(), proxy],
        }],
    }  # fmt: skip
    echo = {
        "name": "echo", "type": "STATIC", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address("127.0.0.1", echo_port)}}]}]},
    }  # fmt: skip
    return {
        "admin": {"address": socket_address("127.0.0.1", 0)},
        "static_resources": {"listeners": [listener], "clusters": [echo]},
    }


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()


def _admin_get(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
        return json.loads(response.read())


def _listener_port(address_file: Path) -> int | None:
    """The bound port of the listener, once Envoy's admin answers and the listener is up."""
    address = address_file.read_text().strip() if address_file.exists() else ""
    if not address:
        return None
    try:
        statuses = _admin_get(address, "/listeners?format=json")["listener_statuses"]
    except OSError:
        return None
    ports = [s["local_address"]["socket_address"].get("port_value", 0) for s in statuses]
    return ports[0] if ports and ports[0] else None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loopback(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loopback]:
    directory = tmp_path_factory.mktemp("peer-certificate-envoy")
    now = datetime.datetime.now(datetime.UTC)  # Envoy checks validity against the real clock
    ca = CertificateAuthority.self_signed(trust_domain=TRUST_DOMAIN, now=now)
    chain, key = ca.issue_serving_certificate(
        dns_names=[SERVER_NAME], identity=SpiffeId(TRUST_DOMAIN, "demo", "server"), now=now,
        ttl=datetime.timedelta(hours=1),
    )  # fmt: skip
    (directory / "server-chain.pem").write_text(chain)
    (directory / "server-key.pem").write_bytes(key)
    (directory / "root.pem").write_text(ca.root_pem())
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    access_log = directory / "access.log"
    bootstrap = _bootstrap(directory, echo.sockets[0].getsockname()[1], access_log)
    (directory / "envoy.json").write_text(json.dumps(bootstrap))
    address_file = directory / "admin-address"
    with open(directory / "envoy.log", "wb") as output:
        envoy = subprocess.Popen(
            [ENVOY, "-c", str(directory / "envoy.json"), "--disable-hot-restart",
             "--concurrency", "1", "-l", "warning", "--admin-address-path", str(address_file),
             "--file-flush-interval-msec", "100"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        async def listening() -> int | None:
            if envoy.poll() is not None:
                log = (directory / "envoy.log").read_text(errors="replace")
                raise AssertionError(f"Envoy exited ({envoy.returncode}):\n{log[-3000:]}")
            return await asyncio.to_thread(_listener_port, address_file)

        port = await eventually(listening, timeout=TIMEOUT, every=0.1)
        yield Loopback(directory, ca, now, port, access_log)
    finally:
        envoy.terminate()
        try:
            envoy.wait(10)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
        echo.close()
        await echo.wait_closed()


async def _connect_and_read_log(loopback: Loopback, name: str, client_file: Path) -> Any:
    """One mTLS connection with `client_file`'s certificate, a round trip through the echo
    server, and the access log line Envoy writes for it (found by the client's URI SAN)."""
    context = ssl.create_default_context(cadata=loopback.ca.root_pem())
    context.load_cert_chain(client_file)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", loopback.port, ssl=context, server_hostname=SERVER_NAME
    )
    writer.write(b"ping")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"ping"
    writer.close()
    await writer.wait_closed()
    peer = loopback.identity(name).uri

    def logged() -> list[dict[str, str]]:
        text = loopback.access_log.read_text() if loopback.access_log.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line]
        return [line for line in lines if line.get("peer") == peer]

    [line] = await eventually(logged, timeout=TIMEOUT, every=0.1)
    return line


def _csr(key: certificates.SigningKey, identity: SpiffeId) -> bytes:
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    csr = builder.add_extension(san, critical=True).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _signed(loopback: Loopback, name: str, workload: WorkloadMetadata | None) -> Path:
    """A client certificate as the mesh CA signs it, with or without a workload."""

    def leaf(key: certificates.SigningKey) -> str:
        csr = _csr(key, loopback.identity(name))
        return loopback.ca.sign_csr(csr, identity=loopback.identity(name), now=loopback.now,
                                    workload=workload)[0]  # fmt: skip

    return loopback.client_files(name, leaf)


def _with_subject(loopback: Loopback, name: str, subject: x509.Name) -> Path:
    """A client certificate the mesh CA's key signs with `subject` (not what `sign_csr` does)."""

    def leaf(key: certificates.SigningKey) -> str:
        cert = certificates.signed_leaf(
            key.public_key(), subject=subject,
            names=[x509.UniformResourceIdentifier(loopback.identity(name).uri)],
            profile=WORKLOAD_PROFILE, issuer=loopback.ca.signing_cert,
            issuer_key=loopback.ca.signing_key, now=loopback.now, backdate=CLOCK_SKEW,
            lifetime=datetime.timedelta(hours=1),
        )  # fmt: skip
        return certificates.certificate_to_pem(cert).decode()

    return loopback.client_files(name, leaf)


def _values(line: dict[str, str]) -> dict[str, str]:
    return {name: line[name] for name in FIELDS}


async def test_the_workload_the_ca_wrote_is_read_back_exactly(loopback: Loopback) -> None:
    line = await _connect_and_read_log(loopback, "signed", _signed(loopback, "signed", WORKLOAD))
    expected = parse_subject_unit(subject_unit(WORKLOAD))
    assert expected == WORKLOAD
    assert _values(line) == {name: getattr(expected, name) for name in FIELDS}
    assert line["subject"] == f"OU={subject_unit(WORKLOAD)}"


async def test_a_certificate_without_a_workload_reads_unknown(loopback: Loopback) -> None:
    line = await _connect_and_read_log(loopback, "bare", _signed(loopback, "bare", None))
    assert _values(line) == ALL_UNKNOWN


def _unit(value: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, value)


OTHER_SUBJECTS = {
    "other": [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "other")],
    "too-few": [_unit("sidemesh.peer/a/b")],
    "too-many": [_unit("sidemesh.peer/a/b/c/d/e/f/g")],
    "other-prefix": [_unit("other.peer/a/b/c/d/e/f")],
    # RFC 2253 prints the last attribute first: here the unit is not at the start.
    "unit-then-o": [_unit(subject_unit(WORKLOAD)),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "other")],
}  # fmt: skip


@pytest.mark.parametrize("name", list(OTHER_SUBJECTS))
async def test_another_subject_reads_unknown(loopback: Loopback, name: str) -> None:
    client = _with_subject(loopback, name, x509.Name(OTHER_SUBJECTS[name]))
    line = await _connect_and_read_log(loopback, name, client)
    assert _values(line) == ALL_UNKNOWN


async def test_a_unit_with_another_attribute_after_it_reads_unknown(loopback: Loopback) -> None:
    """A further attribute is printed after the unit (RFC 2253 prints the last first): it must
    not land in the last value."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "other"), _unit(subject_unit(WORKLOAD))]
    )
    line = await _connect_and_read_log(loopback, "unit-last", _with_subject(
        loopback, "unit-last", subject))  # fmt: skip
    assert _values(line) == ALL_UNKNOWN
