"""Shared helpers for the webhook tests: a fake admitter, an in-memory ASGI client, request
builders and certificate issuing. (A plain module, not fixtures, so hypothesis tests can use it.)
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidemesh.inject.outcome import Outcome
from sidemesh.webhook.app import WebhookApp

PATCH = [{"op": "add", "path": "/spec/containers/-", "value": {"name": "istio-proxy"}}]


@dataclass
class FakeAdmitter:
    """Returns `outcome` (or raises `error`) and records every call."""

    outcome: Outcome = field(default_factory=lambda: injected())
    error: Exception | None = None
    revision: str = "default"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def admit(
        self, pod: dict[str, Any], namespace: str, *, cluster_id: str | None, network: str | None
    ) -> Outcome:
        self.calls.append(
            {"pod": pod, "namespace": namespace, "cluster_id": cluster_id, "network": network}
        )
        if self.error is not None:
            raise self.error
        return self.outcome


def injected() -> Outcome:
    return Outcome(
        kind="injected", code="injected", reason="injected", revision="default",
        patch=orjson.dumps(PATCH),
    )  # fmt: skip


def skipped(code: str = "policy-disabled") -> Outcome:
    return Outcome(kind="skipped", code=code, reason="injection is disabled", revision="default")


def denied(reason: str = "invalid annotation", code: str = "invalid-annotation") -> Outcome:
    return Outcome(kind="denied", code=code, reason=reason, revision="default")


def make_pod(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "demo", **metadata},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }


def make_review(
    *,
    api_version: str = "admission.k8s.io/v1",
    uid: str = "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
    pod: Any = None,
    namespace: Any = "demo",
    **request: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": namespace,
        "object": make_pod() if pod is None else pod,
        **request,
    }
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": body}


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    chunks_left: int  # request chunks the app never asked for

    def json(self) -> Any:
        return orjson.loads(self.body)

    def patch(self) -> Any:
        return orjson.loads(base64.b64decode(self.json()["response"]["patch"]))


async def call(
    app: WebhookApp,
    *,
    method: str = "POST",
    path: str = "/inject",
    body: bytes | Iterable[bytes] = b"",
    headers: Iterable[tuple[bytes, bytes]] | None = None,
    content_type: bytes | None = b"application/json",
    disconnect: bool = False,
) -> Response | None:
    """One request through the ASGI app, no sockets. None if the app sent nothing."""
    chunks = [body] if isinstance(body, bytes) else list(body)
    header_list = list(headers) if headers is not None else []
    if content_type is not None:
        header_list.append((b"content-type", content_type))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": header_list,
    }  # fmt: skip
    pending = list(chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        if disconnect and not pending:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    if not sent:
        return None
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    start, end = sent
    response = Response(start["status"], dict(start["headers"]), end["body"], len(pending))
    assert int(response.headers[b"content-length"]) == len(response.body)
    return response


async def post_review(app: WebhookApp, review: Any, path: str = "/inject") -> Response:
    response = await call(app, path=path, body=orjson.dumps(review))
    assert response is not None
    return response


# --- certificates --------------------------------------------------------------------------------


@dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sidemesh test CA")])
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cert_file: Path, key_file: Path) -> int:
        """Write a fresh localhost serving pair; returns its serial number."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        replace_file(key_file, key_pem(key))
        replace_file(cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return cert.serial_number


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a new inode, as a Secret volume update gives)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def serial_of(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number
