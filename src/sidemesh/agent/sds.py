"""The SDS server Envoy reads its certificates from, on a Unix socket (gRPC, State-of-the-World).

Two secrets, named as Istio names them: `default` (the workload certificate chain and key,
inline) and `ROOTCA` (the mesh root as the validation context). Every stream gets the secrets
it asks for; when the certificate rotates, every open stream gets a new version at once, so
Envoy swaps certificates without a restart. ACKs are noted, NACKs logged with Envoy's
error_detail; a NACKed version is not re-sent until something changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any, Final

import grpc  # type: ignore[import-untyped, unused-ignore]
from envoy.extensions.transport_sockets.tls.v3 import (  # type: ignore[import-untyped, unused-ignore]
    secret_pb2,
)
from envoy.service.discovery.v3 import (  # type: ignore[import-untyped, unused-ignore]
    discovery_pb2,
)
from envoy.service.secret.v3 import sds_pb2_grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import any_pb2

from sidemesh.agent.bootstrap import ROOT_SECRET, WORKLOAD_SECRET
from sidemesh.agent.certs import WorkloadCertificate

log = logging.getLogger("sidemesh.agent.sds")

SECRET_TYPE: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_PUSH: Final = object()  # queue marker: the certificate changed
_CLOSED: Final = object()  # queue marker: Envoy closed its side


def build_secret(name: str, certificate: WorkloadCertificate) -> Any:
    """The Secret resource `name`, or None for a name this server does not serve."""
    secret = secret_pb2.Secret(name=name)
    if name == WORKLOAD_SECRET:
        secret.tls_certificate.certificate_chain.inline_bytes = certificate.chain_pem
        secret.tls_certificate.private_key.inline_bytes = certificate.key_pem
    elif name == ROOT_SECRET:
        secret.validation_context.trusted_ca.inline_bytes = certificate.root_pem
    else:
        return None
    return secret


def _names_to_answer(request: Any, *, names: list[str], last_nonce: str) -> list[str] | None:
    """The secrets to send in reply to `request`, or None when it needs no reply.

    A first request (no nonce) or a changed subscription gets a response; an ACK of the latest
    response and anything answering an older response do not. A NACK is logged with Envoy's
    reason, even when it answers an older response, and is not answered with the same version.
    """
    if request.HasField("error_detail"):
        log.error(
            "Envoy rejected secrets %s version %s: %s",
            list(request.resource_names),
            request.version_info or "(none accepted yet)",
            request.error_detail.message,
        )
        return None
    if request.response_nonce and request.response_nonce != last_nonce:
        return None
    requested = list(request.resource_names)
    if request.response_nonce and requested == names:
        log.debug("Envoy acknowledged secrets %s version %s", names, request.version_info)
        return None
    return requested


class SecretDiscovery(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc, unused-ignore]
    def __init__(self, certificate: WorkloadCertificate) -> None:
        self._certificate = certificate
        self._version = 1
        self._streams: set[asyncio.Queue[Any]] = set()

    def publish(self, certificate: WorkloadCertificate) -> None:
        """A new certificate: bump the version and push it to every connected Envoy."""
        self._certificate = certificate
        self._version += 1
        for queue in self._streams:
            queue.put_nowait(_PUSH)

    def _response(self, names: list[str]) -> Any:
        resources = []
        for name in names:
            secret = build_secret(name, self._certificate)
            if secret is None:
                log.warning("Envoy asked for secret %r, which the agent does not serve", name)
                continue
            packed = any_pb2.Any()
            packed.Pack(secret)
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=str(self._version),
            resources=resources,
            type_url=SECRET_TYPE,
            nonce=uuid.uuid4().hex,
        )

    async def StreamSecrets(self, request_iterator: Any, context: Any) -> None:
        del request_iterator  # requests are read with context.read(), concurrently with pushes
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams.add(queue)
        reader = asyncio.create_task(self._read_requests(context, queue))
        names: list[str] = []
        last_nonce = ""
        try:
            while True:
                event = await queue.get()
                if event is _CLOSED:
                    return
                if event is _PUSH:
                    if not names:
                        continue
                else:
                    wanted = _names_to_answer(event, names=names, last_nonce=last_nonce)
                    if wanted is None:
                        continue
                    names = wanted
                response = self._response(names)
                last_nonce = response.nonce
                await context.write(response)
        finally:
            self._streams.discard(queue)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    @staticmethod
    async def _read_requests(context: Any, queue: asyncio.Queue[Any]) -> None:
        try:
            while True:
                request = await context.read()
                if request is grpc.aio.EOF:
                    break
                queue.put_nowait(request)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the stream ended under us: same as EOF
        except Exception:
            log.exception("reading an SDS request failed")
        finally:
            queue.put_nowait(_CLOSED)

    async def FetchSecrets(self, request: Any, context: Any) -> Any:
        return self._response(list(request.resource_names))

    async def DeltaSecrets(self, request_iterator: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "only State-of-the-World SDS")


class SdsServer:
    """The gRPC server around SecretDiscovery, bound to a Unix socket path."""

    def __init__(self, socket_path: Path, certificate: WorkloadCertificate) -> None:
        self.socket_path = socket_path
        self.discovery = SecretDiscovery(certificate)
        self._server: Any = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left over from a previous run of the agent
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self.discovery, server)
        try:
            bound = server.add_insecure_port(f"unix:{self.socket_path}")
        except RuntimeError as exc:  # grpcio raises where older versions returned 0
            raise OSError(f"cannot listen on the SDS socket {self.socket_path}: {exc}") from None
        if not bound:
            raise OSError(f"cannot listen on the SDS socket {self.socket_path}")
        await server.start()
        self._server = server
        log.info("SDS listening on unix:%s", self.socket_path)

    def publish(self, certificate: WorkloadCertificate) -> None:
        self.discovery.publish(certificate)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
