"""What the agent and its certificate-request child exchange (see `issuing`): the certificate
value, the errors, the request on the child's stdin and the answer on its stdout.

No asyncio, gRPC or crypto here: `sidemesh agent proxy` starts the first child with this before
it hands over to the agent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

CHILD_MODULE: Final = "sidemesh.agent.request_certificate"
CA_TIMEOUT: Final = 10.0  # seconds for the CA to answer one request


class CaError(Exception):
    """The CA could not be asked, or refused; the message says which and why."""


class CertificateError(ValueError):
    """The CA's answer cannot be used as this workload's certificate."""


@dataclass(frozen=True)
class WorkloadCertificate:
    """A certificate chain with its key and the mesh root it chains to."""

    chain_pem: bytes  # leaf first, then intermediates
    key_pem: bytes = field(repr=False)
    root_pem: bytes
    serial: int
    not_before: float  # POSIX timestamps
    not_after: float
    uris: tuple[str, ...] = ()

    def renew_at(self, fraction: float, *, received_at: float | None = None) -> float:
        """When to ask for the next certificate: `fraction` of the way through the lifetime.

        The lifetime counts from when the certificate arrived (`received_at`) if that is later
        than notBefore: CAs backdate notBefore for clock skew (ours by a minute, Istio's too),
        and counting from there would renew a short-lived certificate at once, in a loop.
        """
        start = self.not_before if received_at is None else max(self.not_before, received_at)
        return start + fraction * (self.not_after - start)

    def to_json(self) -> dict[str, Any]:
        fields = asdict(self)
        for name in ("chain_pem", "key_pem", "root_pem"):
            fields[name] = fields[name].decode("ascii")
        fields["uris"] = list(self.uris)
        return fields

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> WorkloadCertificate:
        return cls(
            chain_pem=str(fields["chain_pem"]).encode("ascii"),
            key_pem=str(fields["key_pem"]).encode("ascii"),
            root_pem=str(fields["root_pem"]).encode("ascii"),
            serial=int(fields["serial"]),
            not_before=float(fields["not_before"]),
            not_after=float(fields["not_after"]),
            uris=tuple(str(uri) for uri in fields.get("uris") or ()),
        )


def request_json(
    *,
    address: str,
    server_name: str,
    token_path: Path,
    cluster_id: str,
    timeout: float,
    spiffe_id: str,
    ttl_seconds: int,
    root_pem: bytes,
    workload: Mapping[str, str] | None = None,
) -> bytes:
    """What the child reads on stdin. `workload`: what the certificate's subject should name
    (`peer_certificate.claim`)."""
    request = {
        "address": address,
        "server_name": server_name,
        "token_path": str(token_path),
        "cluster_id": cluster_id,
        "timeout": timeout,
        "spiffe_id": spiffe_id,
        "ttl_seconds": ttl_seconds,
        "root_pem": root_pem.decode("ascii", errors="replace"),
        "workload": dict(workload) if workload is not None else None,
    }
    return json.dumps(request).encode()


def start_child() -> subprocess.Popen[bytes]:
    """The child, started now; it imports what it needs, then waits for its request."""
    return subprocess.Popen(
        [sys.executable, "-m", CHILD_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def parse_answer(stdout: bytes, stderr: bytes, returncode: int | None) -> WorkloadCertificate:
    """The child's answer: the certificate, or the CaError/CertificateError it reported."""
    try:
        answer = json.loads(stdout)
    except ValueError:
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CaError(
            f"the certificate request process failed (exit {returncode}): {detail[0]}"
        ) from None
    if "error" in answer:
        kind = CertificateError if answer.get("kind") == "certificate" else CaError
        raise kind(str(answer["error"]))
    return WorkloadCertificate.from_json(answer)
