"""The control plane's gRPC and monitoring servers: ADS + CA on :15012 (TLS), ADS on :15010
(plaintext), metrics and proxy status on :15014.

`sidemesh discovery` wires it as:

    server = ControlPlaneServer(config=ControlPlaneConfig(...), snapshot=initial,
                                ca=ca, authenticator=authenticator, registry=registry)
    await server.start()  ...  await server.stop()

with `ca` from `security.store.load_or_create_ca`, `authenticator` a
`security.authn.TokenReviewAuthenticator` (Kubernetes) or `LocalTokenAuthenticator` (single
host), and `registry` a `registry_kube.KubeRegistry` or `registry_files.FileRegistry`.
The serving certificate for :15012 is issued by the same CA for `istiod[-REV].istio-system.svc`
(and the other names Istio uses) plus `spiffe://<td>/ns/istio-system/sa/istiod`, and renewed at
half its lifetime.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc import aio

from sidemesh.api import names
from sidemesh.security.authn import Authenticator
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.security.server import CaMetrics, CertificateService
from sidemesh.xds.ads import AdsServer
from sidemesh.xds.metrics import XdsMetrics
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.monitoring import MonitoringServer

log = logging.getLogger("sidemesh.xds.server")

SERVING_CERT_TTL = datetime.timedelta(hours=24)
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


class Registry(Protocol):
    async def run(self, publish: Any) -> None:
        """Publish snapshots (`publish(snapshot)`) until cancelled."""


@dataclass(frozen=True)
class ControlPlaneConfig:
    host: str = "0.0.0.0"
    plaintext_port: int | None = names.PORT_XDS_PLAINTEXT  # None: not served
    tls_port: int | None = names.PORT_XDS_TLS  # needs a CA
    monitoring_port: int | None = names.PORT_MONITORING
    revision: str = "default"
    instance_id: str = field(default_factory=socket.gethostname)
    extra_dns_names: tuple[str, ...] = ()

    def dns_names(self) -> list[str]:
        service = names.service_name(self.revision)
        namespace = names.CONTROL_PLANE_NAMESPACE
        return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                f"{service}.{namespace}.svc.cluster.local", *self.extra_dns_names]  # fmt: skip


class ControlPlaneServer:
    def __init__(
        self,
        *,
        config: ControlPlaneConfig,
        snapshot: MeshSnapshot | None = None,
        ca: CertificateAuthority | None = None,
        authenticator: Authenticator | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self.xds_metrics = XdsMetrics()
        self.ca_metrics = CaMetrics()
        self.ads = AdsServer(snapshot or MeshSnapshot(version=0), instance_id=config.instance_id,
                             metrics=self.xds_metrics)  # fmt: skip
        self.ca = ca
        self.certificates = (
            CertificateService(ca=ca, authenticator=authenticator, metrics=self.ca_metrics)
            if ca is not None and authenticator is not None
            else None
        )
        self.registry = registry
        self.monitoring = MonitoringServer(metrics=self.render_metrics, syncz=self.ads.status)
        self._servers: list[aio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.ports: dict[str, int] = {}
        self._serving: tuple[bytes, bytes] | None = None
        self._serving_renew_at: datetime.datetime | None = None

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self.ads.set_snapshot(snapshot)

    def render_metrics(self) -> str:
        return "\n".join([*self.xds_metrics.render(), *self.ca_metrics.render(), ""])

    async def start(self) -> None:
        host = self.config.host
        if self.config.plaintext_port is not None:
            server = aio.server(options=GRPC_OPTIONS)
            server.add_generic_rpc_handlers((self.ads.handler(),))
            self.ports["xds"] = server.add_insecure_port(f"{host}:{self.config.plaintext_port}")
            self._servers.append(server)
        if self.config.tls_port is not None and self.ca is not None:
            server = aio.server(options=GRPC_OPTIONS)
            handlers = [self.ads.handler()]
            if self.certificates is not None:
                handlers.append(self.certificates.handler())
            server.add_generic_rpc_handlers(tuple(handlers))
            self.ports["xds-tls"] = server.add_secure_port(
                f"{host}:{self.config.tls_port}", self._tls_credentials()
            )
            self._servers.append(server)
        for server in self._servers:
            await server.start()
        if self.config.monitoring_port is not None:
            await self.monitoring.start(host, self.config.monitoring_port)
            self.ports["monitoring"] = self.monitoring.port
        if self.registry is not None:
            self._tasks.append(asyncio.create_task(self.registry.run(self.set_snapshot)))
        log.info("control plane %s serving: %s", self.config.instance_id, self.ports)

    async def stop(self, grace: float | None = 1.0) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        self._servers.clear()
        await self.monitoring.stop()

    # --- the serving certificate -----------------------------------------------------------

    def _issue_serving_certificate(self) -> tuple[bytes, bytes]:
        assert self.ca is not None
        now = datetime.datetime.now(datetime.UTC)
        identity = SpiffeId(self.ca.trust_domain, names.CONTROL_PLANE_NAMESPACE, "istiod")
        chain, key = self.ca.issue_serving_certificate(
            dns_names=self.config.dns_names(), identity=identity, now=now, ttl=SERVING_CERT_TTL
        )
        self._serving_renew_at = now + SERVING_CERT_TTL / 2
        return chain.encode(), key

    def _certificate_configuration(self) -> Any:
        assert self.ca is not None
        chain, key = self._issue_serving_certificate()
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=self.ca.root_pem().encode()
        )

    def _tls_credentials(self) -> grpc.ServerCredentials:
        def fetch() -> Any:
            renew_at = self._serving_renew_at
            if renew_at is not None and datetime.datetime.now(datetime.UTC) < renew_at:
                return None  # keep the current one
            return self._certificate_configuration()

        # Client certificates are optional: CSR callers authenticate with tokens.
        return grpc.dynamic_ssl_server_credentials(
            self._certificate_configuration(), fetch, require_client_authentication=False
        )
