"""The CSR service (`istio.v1.auth.IstioCertificateService/CreateCertificate`) over grpc.aio.

Served by the control plane on :15012 next to xDS. The caller proves who it is with its
service-account token; the CSR's only identity must be that caller's SPIFFE id.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from grpc import aio

from sidemesh.api.prometheus_text import Family, Sample, labelled, render_lines
from sidemesh.api.telemetry.peer import WorkloadMetadata
from sidemesh.api.telemetry.peer_certificate import claimed_workload
from sidemesh.security import protocol
from sidemesh.security.authn import AuthenticationError, Authenticator
from sidemesh.security.ca import CertificateAuthority, CsrError
from sidemesh.security.identity import SpiffeId

log = logging.getLogger("sidemesh.security.server")


@dataclass
class CaMetrics:
    """Istio's citadel_server_* metrics: counters (refusals by reason code) and when the root
    in use expires."""

    csr_requests: int = 0
    signed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    root_expiry: datetime.datetime | None = None  # of the root in use

    def refuse(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1

    def families(self) -> list[Family]:
        # Istio's citadel metrics have always been served here without HELP lines.
        families = [
            Family("citadel_server_csr_count", "counter", None, [Sample(self.csr_requests)]),
            Family(
                "citadel_server_success_cert_issuance_count", "counter", None, [Sample(self.signed)]
            ),
            Family(
                "citadel_server_csr_refused_count",
                "counter",
                None,
                labelled("reason", self.refused),
            ),
        ]
        if self.root_expiry is not None:
            expiry = Sample(self.root_expiry.timestamp())
            families.append(
                Family(
                    "citadel_server_root_cert_expiry_timestamp",
                    "gauge",
                    None,
                    [expiry],
                    number_format=".0f",
                )
            )
        return families

    def render(self) -> list[str]:
        return render_lines(self.families())


class CertificateService:
    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        authenticator: Authenticator,
        metrics: CaMetrics | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.metrics = metrics or CaMetrics()
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.create_certificate,
            request_deserializer=protocol.CertificateRequest.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
        return grpc.method_handlers_generic_handler(protocol.SERVICE, {"CreateCertificate": method})

    async def create_certificate(self, request: Any, context: aio.ServicerContext) -> Any:
        self.metrics.csr_requests += 1
        token = protocol.bearer_token(context.invocation_metadata() or ())
        if token is None:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "no_token",
                               "no 'authorization: Bearer <token>' metadata")  # fmt: skip
        try:
            caller = await self.authenticator.authenticate(token or "")
        except AuthenticationError as exc:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "authentication",
                               f"authentication failed: {exc}")  # fmt: skip
            raise  # unreachable: abort raises
        identity = SpiffeId(self.ca.trust_domain, caller.namespace, caller.service_account)
        # The requested validity is the caller's number (an int64): capped at the CA's maximum
        # before it becomes a timedelta, which overflows long before 2**63 seconds.
        max_seconds = int(self.ca.max_ttl.total_seconds())
        requested = request.validity_duration
        ttl = datetime.timedelta(seconds=min(requested, max_seconds)) if requested > 0 else None
        workload = self._claimed_workload(request, caller.namespace)
        try:
            chain = self.ca.sign_csr(request.csr, identity=identity, now=self.clock(), ttl=ttl,
                                     workload=workload)  # fmt: skip
        except CsrError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "csr_invalid",
                               f"invalid CSR: {exc}")  # fmt: skip
            raise
        except PermissionError as exc:
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, "identity", str(exc))
            raise
        self.metrics.signed += 1
        log.info("signed a certificate for %s", identity.uri)
        return protocol.CertificateResponse(cert_chain=chain)

    @staticmethod
    def _claimed_workload(request: Any, namespace: str) -> WorkloadMetadata | None:
        """The workload the request names for its certificate's subject (telemetry only: a
        claim that does not hold is left out, never a reason to refuse)."""
        if not request.HasField("metadata"):
            return None
        return claimed_workload(json_format.MessageToDict(request.metadata), namespace=namespace)

    async def _refuse(
        self, context: aio.ServicerContext, code: grpc.StatusCode, reason: str, message: str
    ) -> None:
        self.metrics.refuse(reason)
        log.warning("CSR refused (%s): %s", reason, message)
        await context.abort(code, message)
