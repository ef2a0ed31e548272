"""Getting a workload certificate, as the long-running agent sees it (no crypto, no gRPC here).

The key, the CSR and the call to the CA need `cryptography` and `grpcio`, which would stay in
the agent's memory for the life of the pod although a certificate is asked for once a day. So
each request runs in a short-lived child, `python -m sidemesh.agent.request_certificate`: it
gets what to ask for on stdin (JSON), generates the key, sends the CSR, checks the answer
(`certs.assemble`) and prints the certificate with its key on stdout, then exits. The key only
travels over that pipe; nothing is written to disk unless OUTPUT_CERTS asks for it.

The first request is on the way to ready, so it starts warm: `sidemesh agent proxy` starts the
child before it even resolves the settings (its imports overlap theirs), sends it the request,
and hands the pipe to the agent (`launch`), which reads the answer (`PendingAnswer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from sidemesh.agent.issuing_protocol import (
    CA_TIMEOUT,
    CHILD_MODULE,
    CaError,
    CertificateError,
    WorkloadCertificate,
    parse_answer,
    request_json,
    start_child,
)

__all__ = ["CaError", "CertificateError", "Issuer", "IssuerProcess", "PendingAnswer",
           "WorkloadCertificate", "parse_answer", "request_json", "start_child"]  # fmt: skip

_STARTUP_ALLOWANCE: Final = 30.0  # seconds for the child's interpreter and imports


class Issuer(Protocol):
    async def issue(
        self, *, spiffe_id: str, ttl_seconds: int, root_pem: bytes
    ) -> WorkloadCertificate:
        """A new key and its certificate for `spiffe_id`; CaError or CertificateError."""


@dataclass
class PendingAnswer:
    """A child started before this process (and handed over to it): its pid and stdout."""

    pid: int
    stdout_fd: int

    async def read(self, timeout: float) -> WorkloadCertificate:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(self.stdout_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            async with asyncio.timeout(timeout):
                stdout = await reader.read()
                code = await self._reap()
        except TimeoutError:
            raise CaError("the certificate request did not finish") from None
        finally:
            transport.close()
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                    os.kill(self.pid, 9)
                    os.waitpid(self.pid, 0)
        return parse_answer(stdout, b"", code)

    async def _reap(self) -> int | None:
        """Its exit code (it exits right after closing stdout; not ours to await otherwise)."""
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                return os.waitstatus_to_exitcode(status)
            await asyncio.sleep(0.005)


@dataclass
class IssuerProcess:
    """An `Issuer` that asks the CA from a short-lived child process (see the module doc)."""

    address: str
    server_name: str
    token_path: Path
    cluster_id: str
    timeout: float = CA_TIMEOUT
    pending: PendingAnswer | None = None  # the warm first request, answered by `issue` once
    workload: Mapping[str, str] | None = None  # what the certificate's subject names

    async def issue(
        self, *, spiffe_id: str, ttl_seconds: int, root_pem: bytes
    ) -> WorkloadCertificate:
        if self.pending is not None:  # asked with these same settings before the handover
            pending, self.pending = self.pending, None
            return await pending.read(self.timeout + _STARTUP_ALLOWANCE)
        request = request_json(
            address=self.address,
            server_name=self.server_name,
            token_path=self.token_path,
            cluster_id=self.cluster_id,
            timeout=self.timeout,
            spiffe_id=spiffe_id,
            ttl_seconds=ttl_seconds,
            root_pem=root_pem,
            workload=self.workload,
        )
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout + _STARTUP_ALLOWANCE):
                stdout, stderr = await child.communicate(request)
        except TimeoutError:
            raise CaError(f"CA at {self.address}: the certificate request did not finish") from None
        finally:
            if child.returncode is None:  # cancelled or timed out: leave nothing behind
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                with contextlib.suppress(Exception):
                    await child.wait()
        return parse_answer(stdout, stderr, child.returncode)
