"""Certificates asked for from a short-lived child process (`issuing`), including the warm first
request handed over from `sidemesh agent proxy` (`launch`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_control_plane import FakeControlPlane

from sidemesh.agent.issuing import (
    CaError,
    CertificateError,
    IssuerProcess,
    PendingAnswer,
    WorkloadCertificate,
    parse_answer,
    request_json,
    start_child,
)

SPIFFE_ID = "spiffe://cluster.local/ns/shop/sa/web"


def _issuer(plane: FakeControlPlane, tmp_path: Path, token: str | None = None) -> IssuerProcess:
    token_path = tmp_path / "token"
    token_path.write_text(plane.token if token is None else token)
    return IssuerProcess(
        address=plane.address, server_name="127.0.0.1", token_path=token_path,
        cluster_id="Kubernetes", timeout=5,
    )  # fmt: skip


async def test_a_child_process_gets_the_certificate(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    root = control_plane.pki.root_pem
    certificate = await _issuer(control_plane, tmp_path).issue(
        spiffe_id=SPIFFE_ID, ttl_seconds=120, root_pem=root
    )
    assert certificate.uris == (SPIFFE_ID,)
    assert b"PRIVATE KEY" in certificate.key_pem
    assert certificate.root_pem == root
    assert control_plane.requested_lifetimes == [120]
    assert WorkloadCertificate.from_json(json.loads(json.dumps(certificate.to_json()))) == (
        certificate
    )


async def test_the_cas_refusal_comes_back_as_a_ca_error(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    issuer = _issuer(control_plane, tmp_path, token="not-the-token")
    with pytest.raises(CaError, match="UNAUTHENTICATED"):
        await issuer.issue(spiffe_id=SPIFFE_ID, ttl_seconds=60, root_pem=control_plane.pki.root_pem)
    assert control_plane.issued == []


async def test_a_warm_child_started_earlier_answers_the_first_request(
    control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    issuer = _issuer(control_plane, tmp_path)
    child = start_child()
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(
        request_json(
            address=issuer.address,
            server_name=issuer.server_name,
            token_path=issuer.token_path,
            cluster_id=issuer.cluster_id,
            timeout=5,
            spiffe_id=SPIFFE_ID,
            ttl_seconds=90,
            root_pem=control_plane.pki.root_pem,
        )
    )
    child.stdin.close()
    issuer.pending = PendingAnswer(pid=child.pid, stdout_fd=os.dup(child.stdout.fileno()))
    child.stdout.close()
    first = await issuer.issue(spiffe_id=SPIFFE_ID, ttl_seconds=90, root_pem=b"")
    assert first.uris == (SPIFFE_ID,)
    assert issuer.pending is None
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped: no zombie left
    # Later requests start their own child.
    second = await issuer.issue(
        spiffe_id=SPIFFE_ID, ttl_seconds=90, root_pem=control_plane.pki.root_pem
    )
    assert second.serial != first.serial
    assert control_plane.requested_lifetimes == [90, 90]


def test_answers_are_parsed_or_explained() -> None:
    with pytest.raises(CertificateError, match="different key"):
        parse_answer(b'{"error": "signed for a different key", "kind": "certificate"}', b"", 1)
    with pytest.raises(CaError, match="refused"):
        parse_answer(b'{"error": "refused", "kind": "ca"}', b"", 1)
    with pytest.raises(CaError, match=r"exit 1\): ImportError: no grpc"):
        parse_answer(b"", b"Traceback\nImportError: no grpc\n", 1)
